"""The quickstart notebook runs from top to bottom and ends with verdicts.

Executed with nbclient in a fresh ``python3`` kernel, working directory a temporary folder. jupyter_client
starts a kernelspec whose command is ``python`` with the interpreter running the tests, so the kernel sees
the same environment (the notebook's last, test-only cell checks that). Nothing is fetched: the notebook
generates its data from the bundled artwork.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
VERDICTS = ("authentic", "suspicious", "counterfeit", "unknown")


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return str(output.get("text", ""))
    if output.get("output_type") in ("execute_result", "display_data"):
        return str(output.get("data", {}).get("text/plain", ""))
    if output.get("output_type") == "error":
        return f"{output.get('ename')}: {output.get('evalue')}"
    return ""


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook with outputs cleared"
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('KERNEL_PREFIX=' + sys.prefix)"))

    # a headless, single-threaded-enough kernel: no display, same thread budget as the rest of the tests
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's temporary folder lands under tmp_path
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", allow_errors=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "\n".join(_text(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert f"KERNEL_PREFIX={sys.prefix}" in text, "the kernel ran in another Python environment than the tests"
    verdict_lines = [line for line in text.splitlines() if line.strip().startswith("verdict ")]
    assert len(verdict_lines) == 3, text
    assert all(line.split()[-1] in VERDICTS for line in verdict_lines), verdict_lines
    # the figure with the heatmaps was drawn
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


FINETUNE = NOTEBOOK.parent / "finetune.ipynb"


@pytest.mark.slow
def test_finetune_notebook_runs_a_tiny_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(FINETUNE, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook with outputs cleared"
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("BRANDGUARD_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "\n".join(_text(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "guard accepted the model:" in text
    table = [ln for ln in text.splitlines() if ln.startswith(("auroc", "tpr_at_1pct_fpr", "brand_top1"))]
    assert len(table) >= 3 and all(len(ln.split()) == 3 for ln in table), text  # before and after, side by side
    assert "channels:" in text and "'learned'" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
