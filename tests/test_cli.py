"""The command line an operator reads: every argument explained, `index info` as a readable summary."""

from __future__ import annotations

import argparse
import json

import pytest


def _actions(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("brandguard",)):
    """Every (command path, action) of a parser and its subcommands, recursively."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, (*path, name))
        else:
            yield path, action


def test_every_argument_of_every_command_has_a_help_text():
    from brandguard.cli import build_parser

    pairs = list(_actions(build_parser()))
    commands = {" ".join(path) for path, _ in pairs}
    # the walk reaches the nested commands (so the check below cannot pass on an empty list)
    assert {"brandguard score", "brandguard index build", "brandguard index info", "brandguard calibrate"} <= commands
    missing = [f"{' '.join(path)} {'/'.join(a.option_strings) or a.dest}" for path, a in pairs
               if not (a.help and a.help.strip()) and a.help != argparse.SUPPRESS]
    assert missing == []


@pytest.mark.parametrize("command", [["--help"], ["score", "--help"], ["index", "build", "--help"],
                                     ["index", "info", "--help"]])
def test_help_prints_and_exits_0(command, capsys):
    from brandguard.cli import main

    with pytest.raises(SystemExit) as exc:
        main(command)
    assert exc.value.code == 0
    assert "usage: brandguard" in capsys.readouterr().out


def _info(**over) -> dict:
    """An `index info` dict as ReferenceIndex.info() writes it, plus what the CLI adds."""
    info = {
        "brandguard_version": "0.1.0", "format": 3, "backbone": "efficientnet_lite0", "weights_digest": "ab" * 32,
        "weights_source": "package", "checkpoint": None, "brands": 2, "products": 3, "references": 7,
        "references_compared": 7, "skipped": 0, "duplicates_skipped": 1, "references_root": "/data/refs",
        "references_found": True, "thin_products": ["b/solo (1)"], "local_descriptors": 12345,
        "local_index": "flat", "global_dim": 1280, "canonical_size": 384,
        "thresholds": {"review": 0.95, "takedown": 0.99, "min_inliers": 36, "weak_inliers": 18,
                       "weak_similarity": 0.81, "notes": {}},
        "calibration_source": "cold-start (simulated listing photos from 7 references)",
        "calibration": {"source": "cold-start (simulated listing photos from 7 references)", "n": 140,
                        "per_brand": {}, "global_review_raw": 1.6, "global_takedown_raw": 2.3},
        "per_product": [{"brand": "a", "product": "x", "references": 3, "compared": 3, "keypoints": 900, "thin": False},
                        {"brand": "a", "product": "y", "references": 3, "compared": 3, "keypoints": 800, "thin": False},
                        {"brand": "b", "product": "solo", "references": 1, "compared": 1, "keypoints": 300,
                         "thin": True}],
        "text_check": True, "size_bytes": 4_200_000,
    }
    info.update(over)
    return info


def test_index_info_summary_says_what_an_operator_must_know(capsys):
    from brandguard.cli import _print_info

    _print_info(_info(), as_json=False)
    out = capsys.readouterr().out
    assert "text check (OCR of the wordmark): on" in out
    assert "calibration in force: cold start" in out and "brandguard calibrate" in out
    assert "fewer than 3 references (thin evidence): b/solo (1)" in out
    assert "4.2 MB on disk" in out
    assert "references: 7 of 3 products, 2 brands" in out
    assert "keypoint search: exact" in out and "12,345 reference keypoints" in out
    assert "b/solo: 1 references (1 compared), 300 keypoints  [thin evidence" in out
    assert "{" not in out  # no raw dict dumped

    cal = {"source": "calibration", "n": 81, "per_brand": {"a": {"n": 40}}}
    _print_info(_info(text_check=False, calibration=cal, local_index="ivfpq", thin_products=[]), as_json=False)
    out = capsys.readouterr().out
    assert "text check (OCR of the wordmark): off" in out
    assert "calibration in force: calibrated on 81 authentic photos" in out
    assert "brands with their own calibration: a (40 photos)" in out
    assert "two-stage" in out and "thin evidence): none" in out

    _print_info(_info(), as_json=True)  # --json keeps the raw dict
    assert json.loads(capsys.readouterr().out) == _info()


def test_index_info_of_a_saved_index(saved_index, capsys):
    from brandguard.cli import main

    assert main(["index", "info", str(saved_index)]) == 0
    out = capsys.readouterr().out
    assert "calibration in force: cold start" in out
    assert "text check (OCR of the wordmark): " in out
    assert " on disk" in out and "keypoint search: " in out
