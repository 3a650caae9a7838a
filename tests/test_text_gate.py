"""The wordmark check reads a photo's lines only where a misread could count, with the same verdict."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import brandguard.detector as detector_mod
from brandguard.comparison import SWAP_SUPPORT, line_support
from brandguard.localization import Alignment, warp_to_canonical
from brandguard.mismatch import CHANNELS
from brandguard.text import line_boxes, line_reads, unread_details


class _CountingReader:
    """Stands in for the OCR model: reads every line as ``read`` (a confident letter swap) and counts calls."""

    def __init__(self, read: str) -> None:
        self.read, self.calls = read, 0

    def recognise(self, crops):
        self.calls += 1
        return [(self.read, 0.99) for _ in crops]


def test_line_boxes_pair_each_line_with_its_own_place():
    lines = [{"text": "tiny", "box": [10, 10, 11, 11]}, {"text": "ACME", "box": [20, 30, 70, 60]}]
    assert line_boxes(lines, 96) == [(1, [16, 22, 73, 67])]  # the unreadable first line does not shift the second
    unread = unread_details(lines, 96)
    assert [(d["text"], d["read"], d["distance"], d["skipped"]) for d in unread] == [("ACME", "", 0.0, True)]
    assert line_reads([{**unread[0], "counted": 0.0}]) == []  # nothing read: no evidence either way


def test_a_photo_whose_lines_show_no_changed_strokes_is_not_read_and_scores_the_same(small_index, embedder):
    from brandguard.images import load_image

    pid = next(p for p, m in enumerate(small_index.products) if len(m.bank) >= 3)
    m = small_index.products[pid]
    S = small_index.config.localization.canonical_size
    lines = [{"text": "ACME", "box": [0.3 * S, 0.4 * S, 0.6 * S, 0.5 * S], "consistent": True}]
    copy = object.__new__(type(small_index))
    copy.__dict__.update(small_index.__dict__)
    copy.products = [dataclasses.replace(m, text_lines=lines) if p == pid else q
                     for p, q in enumerate(small_index.products)]
    reader = _CountingReader("ACNE")  # what a look-alike print reads
    copy.text_enabled, copy._text_reader = True, reader
    det = detector_mod.Detector(copy, embedder)

    ref = m.refs[m.bank_refs[0]]
    H = np.asarray(ref.H, np.float64)
    image = load_image(ref.path, max_side=small_index.config.localization.max_side)
    crop, valid = warp_to_canonical(image, H, S)
    edited = crop.copy()
    x0, y0, x1, y1 = (int(v) for v in lines[0]["box"])
    edited[y0:y1, x0:x1] = np.where((np.arange(x1 - x0) // 3 % 2)[None, :, None], 0, 255)  # new strokes
    g = embedder.embed_global([crop])[0]
    a = Alignment(pid, 100, H, 1.0, True)

    def score(photo: np.ndarray, every: bool):
        det.read_every_line, reader.calls = every, 0
        p = det._compare("photo", image, a, g, photo, valid)
        return p, reader.calls

    text = CHANNELS.index("text")
    for photo, changed in ((crop, False), (edited, True)):
        gated, gated_calls = score(photo, False)
        full, full_calls = score(photo, True)
        assert full_calls == 1
        assert gated_calls == int(changed)  # read only where the structure channel saw changed strokes
        assert (gated.verdict, gated.raw_score, gated.score) == (full.verdict, full.raw_score, full.score)
        assert gated.channels[:text] == full.channels[:text]
        if changed:  # the misread counts, and is read the same either way
            assert gated.text == full.text and gated.text[0]["counted"] > 0 and not gated.text[0]["skipped"]
        else:  # no stroke change under the line: any reading would count 0, so none is made
            assert gated.text[0]["skipped"] and gated.text[0]["counted"] == 0.0 == full.text[0]["counted"]
            assert full.text[0]["read"] == "ACNE" and gated.text[0]["read"] == ""
            assert gated.channels[text] == full.channels[text] == 0.0


def test_line_support_is_the_gate_compare_applies():
    z = np.zeros((16, 16), np.float32)
    z[5:8, 3:9] = SWAP_SUPPORT + 0.5
    assert line_support(z, [18, 30, 53, 47], 6) >= SWAP_SUPPORT
    assert line_support(z, [60, 60, 90, 90], 6) == pytest.approx(0.0)
