"""Scoring on Ray (brandguard.distributed): the same rows as local scoring, resumable, Parquet, URIs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from brandguard.errors import BrandguardError, MissingExtraError


def test_a_missing_ray_extra_names_the_pip_extra(monkeypatch, tmp_path):
    from brandguard import distributed

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "brandguard\[ray\]"') as info:
        distributed.score_ray(tmp_path, tmp_path / "idx", tmp_path / "out.csv")
    assert isinstance(info.value, BrandguardError)


def test_the_cli_refuses_ray_without_the_extra_in_one_line(monkeypatch, tmp_path, capsys):
    from brandguard.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["score", str(tmp_path), "--index", str(tmp_path / "idx"), "-o", str(tmp_path / "o.csv"), "--ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and 'pip install "brandguard[ray]"' in err[0]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs (skips, saying why, when the ray extra is not installed)."""
    ray = pytest.importorskip("ray", reason='the Ray runner needs the ray extra: pip install "brandguard[ray]"')
    pytest.importorskip("ray.data", reason='the Ray runner needs Ray Data: pip install "brandguard[ray]"')
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def listings(small_dataset, tmp_path_factory) -> Path:
    """Twelve listing photos (several products, authentic and counterfeit, nested folders) and a bad file."""
    src = Path(small_dataset.listings_dir)
    photos = sorted(p for p in src.rglob("*.jpg"))[::4][:12]
    dst = tmp_path_factory.mktemp("ray-listings") / "listings"
    for p in photos:
        target = dst / p.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    (dst / "zz_broken.jpg").write_bytes(b"not a photo")
    (dst / "=cmd.jpg").write_bytes(photos[0].read_bytes())  # a name a spreadsheet would evaluate
    return dst


@pytest.fixture(scope="module")
def local_csv(listings, saved_index, tmp_path_factory) -> Path:
    from brandguard.detector import Detector
    from brandguard.scoring import score_folder

    out = tmp_path_factory.mktemp("local") / "local.csv"
    score_folder(listings, Detector.load(saved_index, batch_size=4), out)
    return out


@pytest.mark.slow
def test_ray_rows_equal_local_scoring_and_resume(local_ray, listings, saved_index, local_csv, tmp_path):
    from brandguard.distributed import score_ray
    from brandguard.scoring import read_results

    out = tmp_path / "ray.csv"
    summary = score_ray(listings, saved_index, out, batch_size=4, actors=2)
    local = local_csv.read_bytes()
    rows = read_results(local_csv)
    assert len(rows) == 14 and summary.total == 14 and summary.scored == 14
    assert {r["verdict"] for r in rows} >= {"error", "authentic"}  # real verdicts, not only errors
    assert read_results(out) == rows  # the same cells in the same order...
    assert out.read_bytes() == local  # ...byte for byte (same escaping, same line ends)

    # an interrupted run (five rows and half a line written) resumes to the very same file
    lines = local.split(b"\n")
    out.write_bytes(b"\n".join(lines[:6]) + b"\n" + lines[6][:10])
    resumed = score_ray(listings, saved_index, out, batch_size=4, actors=2, resume=True)
    assert (resumed.resumed, resumed.scored) == (5, 9)
    assert out.read_bytes() == local

    # Parquet parts hold the same cells
    import pyarrow.parquet as pq

    pout = tmp_path / "ray.parquet"
    score_ray(listings, saved_index, pout, batch_size=4, actors=2, rows_per_part=5)
    parts = sorted(pout.glob("part-*.parquet"))
    assert len(parts) == 3
    table = pq.read_table(pout)
    import csv
    import io

    raw = list(csv.DictReader(io.StringIO(local.decode("utf-8"))))
    assert table.to_pylist() == raw


@pytest.mark.slow
def test_ray_reads_uris_and_lists(local_ray, listings, saved_index, local_csv, tmp_path):
    from brandguard.distributed import score_ray
    from brandguard.scoring import read_results

    local = {r["path"]: r for r in read_results(local_csv)}
    names = [n for n in sorted(local) if not n.startswith("=")][:5]
    uris = [(listings / n).resolve().as_uri() for n in names] + [(tmp_path / "gone.jpg").as_uri()]
    out = tmp_path / "uris.csv"
    score_ray(uris, saved_index, out, batch_size=4, actors=1)
    rows = read_results(out)
    assert [r["path"] for r in rows] == uris
    for name, row in zip(names, rows):  # read through pyarrow's filesystem: the same verdicts and cells
        assert {k: v for k, v in row.items() if k != "path"} == {k: v for k, v in local[name].items() if k != "path"}
    assert rows[-1]["verdict"] == "error" and "gone.jpg" in rows[-1]["error"]
