"""Optional wordmark check: read the package's text with OCR and compare it with the references' text.

A misspelt wordmark ("Adibas") changes a few strokes, which pixel comparison sees only faintly; an OCR
model reads it outright. At indexing time the text lines of every aligned reference are read; lines read
the same way in most references of a product (the wordmark, the product line...) become its *reference
lines*, with their place in the canonical frame. At scoring time only those places of the aligned photo
are read again (recognition only, a few milliseconds per line) and compared with the reference text.

Needs the ``ocr`` extra (``pip install "brandguard[ocr]"``: rapidocr-onnxruntime, whose PP-OCR models
ship inside the package; nothing is downloaded).

Example:
    >>> from brandguard.text import text_distance
    >>> round(text_distance("Adidas", "Adibas"), 3)
    0.167
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "MIN_CONFIDENCE",
    "TextReader",
    "available",
    "normalise",
    "reference_lines",
    "text_distance",
    "text_mismatch",
]

#: recognitions less confident than this are treated as unreadable (blur, occlusion), not as a mismatch.
MIN_CONFIDENCE = 0.9


def available() -> bool:
    """Whether the OCR extra is installed."""
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class TextReader:
    """Thin, thread-safe wrapper of RapidOCR (PP-OCR in ONNX Runtime, models inside the package).

    Raises:
        ImportError: the ``ocr`` extra is not installed; the message names it.
    """

    def __init__(self) -> None:
        try:
            import os

            os.environ.setdefault("OMP_NUM_THREADS", "2")
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise ImportError('the wordmark check needs the ocr extra: pip install "brandguard[ocr]" '
                              "(or set compare.text_check: off)") from exc
        self._ocr = RapidOCR()
        self._lock = threading.Lock()

    def read_lines(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Detect and read the text lines of an RGB image: ``[{text, box: [x0, y0, x1, y1], confidence}]``."""
        with self._lock:
            result, _ = self._ocr(np.ascontiguousarray(image[..., ::-1]))
        lines = []
        for pts, text, conf in result or []:
            p = np.asarray(pts, np.float32)
            lines.append({"text": str(text), "box": [float(p[:, 0].min()), float(p[:, 1].min()),
                                                    float(p[:, 0].max()), float(p[:, 1].max())],
                          "confidence": float(conf)})
        return lines

    def recognise(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Read single-line RGB crops (no detection): ``[(text, confidence)]``."""
        if not crops:
            return []
        with self._lock:
            out, _ = self._ocr.text_rec([np.ascontiguousarray(c[..., ::-1]) for c in crops])
        return [(str(t), float(c)) for t, c in out]


@lru_cache(maxsize=1)
def shared_reader() -> TextReader:
    """One reader per process (loading the models takes a second)."""
    return TextReader()


def normalise(text: str) -> str:
    """Lower-case letters and digits only (OCR spacing and punctuation vary)."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def text_distance(a: str, b: str) -> float:
    """Levenshtein distance of the normalised texts divided by the longer length (0 = same, 1 = different)."""
    a, b = normalise(a), normalise(b)
    if not a and not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] / max(len(a), len(b))


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_lines(per_reference: Sequence[Sequence[dict[str, Any]]], *, agree: float = 0.6, max_lines: int = 2,
                    min_chars: int = 2, min_height: float = 20.0) -> list[dict[str, Any]]:
    """The text lines most references of a product agree on, largest first.

    Args:
        per_reference: the lines read in each aligned reference (canonical-frame boxes).
        agree: share of references that must read the same (normalised) text at the same place.
        max_lines: keep at most this many lines (the largest text: wordmark and product line).
        min_chars: ignore shorter texts.
        min_height: ignore lines lower than this (canonical pixels): small print is read unreliably.
    """
    n = len(per_reference)
    if n == 0:
        return []
    need = max(1, int(np.ceil(agree * n)))
    candidates = sorted((ln for lines in per_reference for ln in lines
                         if len(normalise(ln["text"])) >= min_chars and ln["box"][3] - ln["box"][1] >= min_height),
                        key=lambda ln: -(ln["box"][3] - ln["box"][1]))
    kept: list[dict[str, Any]] = []
    for cand in candidates:
        if any(_iou(cand["box"], k["box"]) > 0.3 for k in kept):
            continue
        group = [ln for lines in per_reference for ln in lines[:] if _iou(cand["box"], ln["box"]) > 0.3]
        votes = Counter(normalise(ln["text"]) for ln in group)
        text, count = votes.most_common(1)[0] if votes else ("", 0)
        if count < need or len(text) < min_chars:
            continue
        same = [ln for ln in group if normalise(ln["text"]) == text]
        box = np.median(np.array([ln["box"] for ln in same]), axis=0).tolist()
        kept.append({"text": same[0]["text"], "box": box, "agree": count / n})
        if len(kept) >= max_lines:
            break
    return kept


def text_mismatch(crop: np.ndarray, lines: Sequence[dict[str, Any]], reader: TextReader,
                  pad: float = 0.25) -> tuple[float, list[dict[str, Any]]]:
    """Read the reference lines' places in an aligned crop and compare with the reference text.

    Returns:
        ``(score, details)``: the largest text distance over confidently read lines (NaN when none could
        be read), and per line ``{text, read, confidence, distance, box}``.
    """
    S = crop.shape[0]
    crops, boxes = [], []
    for ln in lines:
        x0, y0, x1, y1 = ln["box"]
        ph, pw = pad * (y1 - y0), 0.5 * pad * (y1 - y0)
        xa, ya = int(max(0, x0 - pw)), int(max(0, y0 - ph))
        xb, yb = int(min(S, x1 + pw)), int(min(S, y1 + ph))
        if xb - xa < 4 or yb - ya < 4:
            continue
        crops.append(crop[ya:yb, xa:xb])
        boxes.append([xa, ya, xb, yb])
    details = []
    for ln, box, (read, conf) in zip(lines, boxes, reader.recognise(crops)):
        dist = text_distance(ln["text"], read) if conf >= MIN_CONFIDENCE else float("nan")
        details.append({"text": ln["text"], "read": read, "confidence": conf, "distance": dist, "box": box})
    dists = [d["distance"] for d in details if np.isfinite(d["distance"])]
    return (max(dists) if dists else float("nan")), details
