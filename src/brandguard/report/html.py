"""The HTML evidence report: a sortable, filterable table of every scored photo and an evidence card per
flagged photo, written as ``report.html`` plus a ``report_files/`` folder beside it.

A takedown is decided by a person looking at the evidence, so each card shows what the decision rests on:

* the listing photo as uploaded, with the outline of the product found in it;
* the photo warped into the product's canonical frame beside the closest authentic reference warped into
  the same frame at the same size (what was actually compared), with the mismatch heat overlaid on an
  absolute scale (standard deviations of authentic variation, log scale) and a legend that marks where the
  channel that fired would flag the photo;
* the channel that fired (structure, colour, wordmark text, learned), every channel's value, its value on
  the raw score's scale and the review/takedown thresholds in its own units; the OCR text read against the
  text the references read, where the text check ran;
* the calibrated score with enough digits to rank, the raw score with its unit and thresholds;
* warnings a reviewer needs: a low similarity (perhaps another product), a doubtful alignment, thin
  evidence from few references, a tiny product, and the pipeline's own notes (``Prediction.notes``).

It scales: the table holds every row (from the results CSV when given, so the header's counts are the
CSV's), the cards of the ``max_items`` highest-ranked flagged photos are split into files of
:data:`CARDS_PER_FILE` that the page loads only for the rows it shows, and the images are files in
``report_files/img/``. The page loads nothing from the network: its script and styles ship with the package.
Files follow the umask (readable by others where the umask allows); the folder is swapped in whole and the
page written last, atomically.

Example:
    >>> import brandguard as bg
    >>> from brandguard.report import write_html_report
    >>> det = bg.load("idx/")                                                  # doctest: +SKIP
    >>> preds = det.predict_batch(["a.jpg", "b.jpg"])                          # doctest: +SKIP
    >>> write_html_report(preds, "report.html", index=det.index)               # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import cv2
import numpy as np

from brandguard.errors import ImageLoadError
from brandguard.images import load_image, load_photo
from brandguard.mismatch import CHANNELS
from brandguard.storage import atomic_write_text, display_text

if TYPE_CHECKING:  # pragma: no cover - importing the detector pulls in torch
    from brandguard.detector import Prediction
    from brandguard.index import ReferenceIndex

__all__ = ["CARDS_PER_FILE", "HEAT_MAX", "compact_prediction", "heat_colours", "overlay_heatmap",
           "write_html_report"]

#: cards per ``cards-NNNN.js`` file: the page loads the files of the rows it shows, never all of them
CARDS_PER_FILE = 50
#: heat (standard deviations above authentic variation) at which the colour map saturates; the scale is
#: logarithmic (``log1p``) from 0 to this, the same for every card and every report
HEAT_MAX = 100.0
_HEAT_TICKS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)
_MAX_ALPHA = 0.8
_HEAT_LEVELS = 32
"""Steps of the heat images' palette."""
_FLAGGED_RANK = {"counterfeit": 0, "suspicious": 1}
_VERDICT_ORDER = ("counterfeit", "suspicious", "authentic", "unknown", "error")
_UNREADABLE = (ImageLoadError, OSError, ValueError, TypeError, cv2.error)
"""What re-reading a photo may raise; the card shows a placeholder instead."""
_JPEG_QUALITY = 78
_CROP_SIDE = 256
"""Side (pixels) of the aligned crops shown: photo and reference at the same size."""
_HEAT_GRID = 64
"""Side of the canonical-frame heat image (the browser scales it up smoothly over the crop)."""
_DEFAULT_DECODE_SIDE = 640
"""Decode size of photos when no index is given (``Config().localization.max_side``)."""
_LOW_SIMILARITY = 0.6
"""Similarity below which a card warns when the index has no calibrated weak-match similarity."""
_THIN_REFERENCES = 3
_TINY_AREA = 0.015
_TINY_SIDE = 64
_MIN_INSIDE = 0.9
_TEXT_STEPS = np.linspace(0.0, 1.0, 201)


# ---------------------------------------------------------------------------------------- heat colours
def _heat_norm(heat: np.ndarray) -> np.ndarray:
    """Heat (standard deviations; NaN and negatives are none) -> 0..1 on the report's absolute log scale."""
    h = np.maximum(np.nan_to_num(np.asarray(heat, np.float32), nan=0.0, posinf=HEAT_MAX, neginf=0.0), 0.0)
    return np.clip(np.log1p(h) / math.log1p(HEAT_MAX), 0.0, 1.0)


def _pos(value: float) -> float:
    """Where ``value`` standard deviations sit on the legend, in percent."""
    return round(100.0 * float(_heat_norm(np.array([value]))[0]), 2)


def heat_colours(heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colours and opacities of a heatmap on the report's absolute scale.

    The heat is mapped with ``log1p(heat) / log1p(HEAT_MAX)`` onto the turbo colour map, the same for every
    photo (a photo's colours can be compared with any other's), with an opacity growing with the heat.

    Args:
        heat: ``(h, w)`` standard deviations above authentic variation; NaN and negative values are no heat.

    Returns:
        ``(rgb, alpha)``: ``(h, w, 3)`` uint8 colours and ``(h, w)`` float32 opacities in ``[0, 0.8]``
        (0 where there is no heat).

    Example:
        >>> import numpy as np
        >>> rgb, alpha = heat_colours(np.array([[0.0, 3.0, 1000.0]]))
        >>> rgb.shape, float(alpha[0, 0]), float(alpha[0, 2])
        ((1, 3, 3), 0.0, 0.8)
    """
    norm = _heat_norm(heat)
    lut = np.round(norm * 255).astype(np.uint8)
    rgb = cv2.applyColorMap(lut.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(*norm.shape, 3)[..., ::-1]
    return np.ascontiguousarray(rgb), (norm * _MAX_ALPHA).astype(np.float32)


def _gradient_css() -> str:
    stops = np.linspace(0.0, 1.0, 11)
    lut = cv2.applyColorMap(np.round(stops * 255).astype(np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)
    return "linear-gradient(to right," + ",".join(
        f"rgb({int(c[2])},{int(c[1])},{int(c[0])}) {round(100 * s)}%" for c, s in zip(lut, stops)) + ")"


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, quad: np.ndarray | None = None) -> np.ndarray:
    """Overlay a mismatch heatmap on a photo on the report's absolute scale, with the product's outline.

    Colours and opacity come from :func:`heat_colours` (log scale saturating at :data:`HEAT_MAX` standard
    deviations, the same for every photo), so pixels with no heat (typical, or outside the product) keep
    their colour. The heatmap is resized to the image when their shapes differ, and the quad with it.

    Args:
        image: ``(H, W, 3)`` RGB ``uint8`` photo (not modified).
        heatmap: ``(h, w)`` heat in standard deviations; NaN and negative values count as no heat.
        quad: optional ``(4, 2)`` product corners ``(x, y)`` in heatmap pixels, drawn as a green polygon.

    Returns:
        A new ``(H, W, 3)`` RGB ``uint8`` array.

    Raises:
        ValueError: If ``image`` is not ``HxWx3`` uint8, ``heatmap`` is not 2-D or ``quad`` is not ``(4, 2)``.

    Example:
        >>> import numpy as np
        >>> img = np.full((48, 64, 3), 128, np.uint8)
        >>> heat = np.zeros((48, 64), np.float32); heat[10:20, 10:20] = 8.0
        >>> out = overlay_heatmap(img, heat)
        >>> out.shape, bool((out[0, 0] == img[0, 0]).all()), bool((out[15, 15] != img[15, 15]).any())
        ((48, 64, 3), True, True)
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected an HxWx3 uint8 RGB array, got shape {image.shape} dtype {image.dtype}")
    raw = np.asarray(heatmap, dtype=np.float32)
    if raw.ndim != 2 or raw.size == 0:
        raise ValueError(f"heatmap: expected a non-empty 2-D array, got shape {raw.shape}")
    h, w = image.shape[:2]
    sx, sy = w / raw.shape[1], h / raw.shape[0]
    clean: np.ndarray = np.nan_to_num(raw, nan=0.0, posinf=HEAT_MAX, neginf=0.0)
    if clean.shape != (h, w):
        clean = cv2.resize(clean, (w, h), interpolation=cv2.INTER_LINEAR)
    colours, alpha = heat_colours(clean)
    a = alpha[..., None]
    out = np.clip(np.round(image.astype(np.float32) * (1.0 - a) + colours.astype(np.float32) * a), 0, 255)
    out = out.astype(np.uint8)
    if quad is not None:
        q = np.asarray(quad, dtype=np.float64)
        if q.shape != (4, 2):
            raise ValueError(f"quad: expected a (4, 2) array of corners, got shape {q.shape}")
        if np.isfinite(q).all():
            pts = np.round(q * np.array([sx, sy])).astype(np.int32).reshape(-1, 1, 2)
            thickness = max(1, round(max(h, w) / 320))
            cv2.polylines(out, [pts], isClosed=True, color=(0, 255, 0), thickness=thickness, lineType=cv2.LINE_AA)
    return out


def compact_prediction(p: Prediction, max_side: int = 160) -> Prediction:
    """The same prediction with its heatmap shrunk to at most ``max_side`` pixels (and ``quad`` with it).

    A report keeps hundreds or thousands of flagged predictions until the end of a run; full-resolution
    heatmaps (``640 x 480`` float32, 1.2 MB each) would make that gigabytes. The report's heat is drawn at
    :data:`_HEAT_GRID` pixels in the canonical frame, so a heatmap of this size loses nothing it shows.

    Args:
        p: a prediction (not modified).
        max_side: longest side of the kept heatmap, pixels (>= 16).

    Returns:
        ``p`` itself when its heatmap is already that small or missing, else a copy.

    Raises:
        ValueError: If ``max_side`` is below 16.
    """
    if max_side < 16:
        raise ValueError(f"max_side: expected >= 16 pixels, got {max_side!r}")
    heat = p.heatmap
    if heat is None or heat.ndim != 2 or max(heat.shape) <= max_side:
        return p
    h, w = heat.shape
    s = max_side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(np.nan_to_num(heat.astype(np.float32), nan=0.0), (nw, nh), interpolation=cv2.INTER_AREA)
    quad = None if p.quad is None else np.asarray(p.quad, np.float64) * np.array([nw / w, nh / h])
    return replace(p, heatmap=small, quad=quad)


# ---------------------------------------------------------------------------------------- numbers
def _num(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _score_text(score: float) -> str:
    """Enough digits to rank: six decimals, and ``1 - x`` where six decimals would print 1.000000."""
    if not np.isfinite(score):
        return ""
    gap = 1.0 - score
    if 0.0 < gap < 5e-7:
        return f"1 \u2212 {gap:.1e}"
    return f"{score:.6f}"


def _share_text(score: float) -> str:
    pct = 100.0 * score
    return f"{pct:.4f}%" if pct < 99.9999 else "all but a vanishing share"


class _Scales:
    """Per-brand thresholds and per-channel standardisation, read from an index (None: none known)."""

    def __init__(self, index: ReferenceIndex | None) -> None:
        self.index = index
        self._raw: dict[str, tuple[float, float] | None] = {}
        self._text: dict[float, float | None] = {}

    def raw_thresholds(self, brand: str) -> tuple[float, float] | None:
        """``(review, takedown)`` on the raw score's scale for this brand, or None."""
        if self.index is None:
            return None
        if brand not in self._raw:
            cal = self.index.calibrator_for(brand)
            t = self.index.thresholds
            self._raw[brand] = None if cal is None else (float(cal.raw_at(t.review)), float(cal.raw_at(t.takedown)))
        return self._raw[brand]

    def standardised(self, channels: np.ndarray) -> np.ndarray:
        """``(n, C)`` channel values -> ``(n, C)`` each on the raw score's scale (NaN: not measured)."""
        x = np.atleast_2d(np.asarray(channels, np.float64))
        out = np.full(x.shape, np.nan)
        if self.index is None:
            return out
        fusion = self.index.fusion
        for j in range(min(x.shape[1], len(CHANNELS))):
            one = np.full(x.shape, np.nan)
            one[:, j] = x[:, j]
            z = np.asarray(fusion.fuse(one), np.float64).reshape(-1)
            out[:, j] = np.where(np.isfinite(x[:, j]), z, np.nan)
        return out

    def channel_value_at(self, j: int, raw: float) -> float | None:
        """The value of channel ``j`` alone that gives raw score ``raw`` (None when no value does)."""
        if self.index is None or not np.isfinite(raw):
            return None
        fusion = self.index.fusion
        if j in fusion.TAIL_CHANNELS:
            key = round(raw, 6)
            if key not in self._text:
                grid = np.full((len(_TEXT_STEPS), len(CHANNELS)), np.nan)
                grid[:, j] = _TEXT_STEPS
                z = np.asarray(fusion.fuse(grid))
                hit = np.nonzero((z >= raw) & (_TEXT_STEPS > 0))[0]
                self._text[key] = float(_TEXT_STEPS[hit[0]]) if hit.size else None
            return self._text[key]
        if j >= len(fusion.loc):
            return None
        return float(np.expm1(fusion.loc[j] + fusion.scale[j] * raw))


def _fired(z: np.ndarray) -> int | None:
    finite = np.where(np.isfinite(z), z, -np.inf)
    return int(np.argmax(finite)) if np.isfinite(finite).any() else None


# ---------------------------------------------------------------------------------------- images
def _thumbnail(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 BGR array
        raise ValueError("could not encode the image")
    return buf.tobytes()


def _heat_png(heat: np.ndarray) -> bytes:
    """A palette PNG of the heat on the report's scale, in :data:`_HEAT_LEVELS` steps (a few KB)."""
    from PIL import Image

    levels = np.round(_heat_norm(heat) * _HEAT_LEVELS).astype(np.uint8)
    steps = np.arange(_HEAT_LEVELS + 1, dtype=np.float64) / _HEAT_LEVELS
    lut = cv2.applyColorMap(np.round(steps * 255).astype(np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)
    im = Image.fromarray(levels, "P")
    im.putpalette(lut[:, ::-1].astype(np.uint8).reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True,
            transparency=bytes(round(v * _MAX_ALPHA * 255) for v in steps))
    return buf.getvalue()


def _square(size: int) -> np.ndarray:
    return np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _Folder:
    """``report_files/`` built under a temporary name beside the page, swapped in whole at the end.

    Plain file and folder creation, so every file follows the umask like any other tool's output.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        (self.tmp / "img").mkdir(parents=True)

    def write(self, rel: str, data: bytes) -> str:
        (self.tmp / rel).write_bytes(data)
        return rel

    def commit(self) -> None:
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.old"
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        elif old is not None:
            old.unlink()

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------- one card
class _CardMaker:
    def __init__(self, index: ReferenceIndex | None, scales: _Scales, folder: _Folder, url: str,
                 max_side: int) -> None:
        self.index, self.scales, self.folder, self.url, self.max_side = index, scales, folder, url, max_side
        cfg = index.config if index is not None else None
        self.decode_side = cfg.localization.max_side if cfg is not None else _DEFAULT_DECODE_SIDE
        self.full_side = cfg.localization.full_side if cfg is not None else _DEFAULT_DECODE_SIDE
        self.S = cfg.localization.canonical_size if cfg is not None else None
        self.products: dict[tuple[str, str], list[Any]] = {}  # a product's views (see ProductModel.view)
        for m in index.products if index is not None else []:
            self.products.setdefault((m.brand, m.product), []).append(m)

    def model(self, brand: str, product: str, path: str) -> Any:
        """The view of a product that holds reference ``path`` (else its first view; None: not in the index)."""
        views = self.products.get((brand, product), [])
        return next((m for m in views if any(r.path == path for r in m.refs)), views[0] if views else None)

    def src(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    # reference crops are shared by every card that matched the same reference: made once, up front
    def reference(self, key: tuple[str, str, str], k: int) -> dict[str, Any]:
        brand, product, path = key
        m = self.model(brand, product, path)
        rec = next((r for r in m.refs if r.path == path), None) if m is not None else None
        try:
            img = load_image(path, max_side=self.decode_side)
        except _UNREADABLE as exc:
            return {"missing": _reason(exc), "path": display_text(path)}
        if rec is not None and rec.H is not None and self.S is not None:
            crop, _ = _warp(img, np.asarray(rec.H, np.float64), self.S)
            crop = cv2.resize(crop, (_CROP_SIDE, _CROP_SIDE), interpolation=cv2.INTER_AREA)
            aligned = True
        else:
            crop, aligned = _thumbnail(img, _CROP_SIDE), False
        rel = self.folder.write(f"img/ref-{k:04d}.jpg", _jpeg(crop))
        return {"src": self.src(rel), "w": int(crop.shape[1]), "h": int(crop.shape[0]), "aligned": aligned,
                "path": display_text(path)}

    def make(self, n: int, p: Prediction, row_path: str) -> dict[str, Any]:
        idx, scales = self.index, self.scales
        th = idx.thresholds if idx is not None else None
        m = self.model(p.brand, p.product, p.reference)
        channels = np.array(list(p.channels) + [np.nan] * (len(CHANNELS) - len(p.channels)), np.float64)[:len(CHANNELS)]
        z = scales.standardised(channels[None, :])[0]
        fired = _fired(z)
        raws = scales.raw_thresholds(p.brand)
        warnings: list[str] = []
        card: dict[str, Any] = {
            "n": n, "path": display_text(row_path), "verdict": p.verdict, "score": round(float(p.score), 9),
            "score_text": _score_text(float(p.score)), "authentic_share": _share_text(float(p.score)),
            "brand": display_text(p.brand), "product": display_text(p.product),
            "similarity": round(float(p.similarity), 4), "reference": display_text(p.reference),
            "others": [f"{display_text(x.reference)} ({x.similarity:.3f})" for x in p.matches[1:]],
            "notes": [display_text(s) for s in p.notes],
            "fired": CHANNELS[fired] if fired is not None else "",
            "thresholds": None if th is None else {"review": f"{th.review:g}", "takedown": f"{th.takedown:g}"},
        }
        unit = ("fused: the largest channel on a common standard-deviation scale")
        if raws is not None:
            card["raw_text"] = (f"{p.raw_score:.3f} ({unit}; for {p.brand}: review at \u2265 {raws[0]:.3f}, "
                                f"takedown at \u2265 {raws[1]:.3f})")
        else:
            card["raw_text"] = f"{p.raw_score:.3f} ({unit})"
        rows = []
        for j, name in enumerate(CHANNELS):
            v = channels[j]
            is_text = j == CHANNELS.index("text")
            fmt = (lambda x: f"{x:.3f}") if is_text else (lambda x: f"{x:.2f} \u03c3")
            at = [scales.channel_value_at(j, r) for r in raws] if raws is not None and np.isfinite(v) else []
            limits = ["\u2265 " + fmt(x) if x is not None else "not reachable by this channel alone" for x in at]
            rows.append({"name": name, "fired": fired == j,
                         "value": fmt(v) if np.isfinite(v) else "not measured",
                         "z": f"{z[j]:.2f}" if np.isfinite(z[j]) else "",
                         "review": limits[0] if limits else "", "takedown": limits[1] if limits else ""})
        card["channels"] = rows
        if fired is not None:
            r = rows[fired]
            card["fired_text"] = f"{r['name']}: {r['value']} (standardised {r['z']}, the raw score)"
        else:
            card["fired_text"] = "no channel measured" if not np.isfinite(channels).any() else \
                "unknown without an index (channels are on different scales)"
        # where the fired heat channel (structure when text fired) would flag the photo, on the legend
        mark_j = fired if fired is not None and fired != CHANNELS.index("text") else 0
        marks = []
        if raws is not None:
            for label, level in (("review", raws[0]), ("takedown", raws[1])):
                mark = scales.channel_value_at(mark_j, level)
                if mark is not None and np.isfinite(mark):
                    marks.append({"pos": _pos(mark), "label": f"{CHANNELS[mark_j]} {label}: worst cells average "
                                                              f"\u2265 {mark:.1f} \u03c3"})
        card["marks"] = marks
        # text evidence
        card["text"] = [{"expected": display_text(str(d.get("expected", ""))), "read": display_text(str(d.get("read", ""))),
                         "confidence": f"{_num(d.get('confidence')):.2f}",
                         "distance": ("not read: too few changed strokes for a misread to count" if d.get("skipped")
                                      else f"{_num(d.get('distance')):.3f}" if np.isfinite(_num(d.get("distance")))
                                      else "not read confidently"),
                         "counted": (f"{_num(d.get('counted')):.3f}" if np.isfinite(_num(d.get("counted"))) else "")}
                        for d in p.text]
        if not p.text:
            card["text_status"] = (
                "wordmark text check: the references of this product agree on no text line, so none was checked"
                if m is not None and not m.text_lines else
                "wordmark text check: did not run for this photo (off for this index, or the ocr extra is missing)")
        # warnings a reviewer needs
        typical = th.weak_similarity if th is not None and th.weak_similarity is not None else None
        floor = min(_LOW_SIMILARITY, typical) if typical is not None else _LOW_SIMILARITY
        if p.similarity < floor:
            warnings.append(f"low similarity {p.similarity:.3f} (< {floor:.2f}): this may be another product than "
                            f"{p.brand}/{p.product} taken for it, not a counterfeit of it. Check that the outline sits "
                            "on the package and that the aligned crops show the same product.")
        card["similarity_text"] = f"{p.similarity:.3f} (global cosine to the closest reference, 0..1" + (
            f"; 95% of authentic calibration photos reach \u2265 {typical:.3f})" if typical is not None else ")")
        if th is not None and 0 < p.inliers < th.min_inliers:
            warnings.append(f"weak keypoint match: {p.inliers} verified matches (the rule asks \u2265 "
                            f"{th.min_inliers}); accepted because the aligned photo looks like the product")
        if m is not None and len(m.bank) < _THIN_REFERENCES:
            warnings.append(f"thin evidence: only {len(m.bank)} aligned reference(s) of {p.brand}/{p.product} to "
                            "compare with; authentic variation is poorly known")
        card.update(self._images(n, p, warnings))
        card["warnings"] = warnings
        return card

    def _images(self, n: int, p: Prediction, warnings: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"alignment_text": f"{p.inliers} verified keypoint matches"}
        try:  # the working copy the outline is in, and the full resolution the crop is cut from (as scored)
            photo_px = load_photo(p.source, max_side=self.decode_side, full_side=max(self.full_side, self.decode_side))
            img = photo_px.image
        except _UNREADABLE as exc:  # an unreadable photo becomes a placeholder; the card still renders
            reason = _reason(exc)
            out["photo"] = {"missing": reason}
            out["crop"] = {"missing": reason}
            return out
        H, W = img.shape[:2]
        thumb = _thumbnail(img, self.max_side)
        t = thumb.shape[1] / W
        photo: dict[str, Any] = {"src": self.src(self.folder.write(f"img/c{n:05d}-photo.jpg", _jpeg(thumb))),
                                 "w": int(thumb.shape[1]), "h": int(thumb.shape[0]), "quad": None}
        out["photo"] = photo
        heat = p.heatmap if p.heatmap is not None and p.heatmap.ndim == 2 else None
        quad = None if p.quad is None else np.asarray(p.quad, np.float64)
        if quad is None or quad.shape != (4, 2) or not np.isfinite(quad).all():
            warnings.append("doubtful alignment: no product outline is known for this photo")
            out["crop"] = {"missing": "no alignment"}
            return out
        hh, hw = heat.shape if heat is not None else (H, W)
        qp = quad * np.array([W / hw, H / hh])  # outline in decoded-photo pixels
        photo["quad"] = [[round(float(x * t), 1), round(float(y * t), 1)] for x, y in qp]
        q32 = qp.astype(np.float32)
        quad_area = abs(float(cv2.contourArea(q32)))
        area = quad_area / float(H * W)
        sides = np.linalg.norm(np.roll(qp, -1, axis=0) - qp, axis=1)
        convex = bool(cv2.isContourConvex(q32.reshape(-1, 1, 2)))
        inside = 0.0
        if convex and quad_area > 0:
            frame = np.array([[0, 0], [W, 0], [W, H], [0, H]], np.float32)
            inside = float(cv2.intersectConvexConvex(q32, frame)[0]) / quad_area
        out["alignment_text"] += (f"; the outline covers {100 * area:.1f}% of the photo; {100 * inside:.0f}% of it "
                                  "lies inside the photo")
        if not convex:
            warnings.append("doubtful alignment: the product outline is not convex (folded or twisted frame)")
        elif inside < _MIN_INSIDE:
            warnings.append(f"doubtful alignment: {100 * (1 - inside):.0f}% of the product's outline lies outside "
                            "the photo; the aligned crop is partly made up (mirrored edges)")
        if area < _TINY_AREA or sides.min() < _TINY_SIDE:
            warnings.append(f"tiny product: the outline covers {100 * area:.1f}% of the photo (shortest side "
                            f"{sides.min():.0f} px): fine print and small edits cannot be compared reliably")
        if self.S is None:
            out["crop"] = {"missing": "no index given: the canonical frame is unknown"}
            return out
        S = self.S
        Hp = cv2.getPerspectiveTransform(_square(S), q32).astype(np.float64)
        from brandguard.localization import crop_canonical

        crop, _ = crop_canonical(img, photo_px.full, Hp, S)
        crop = cv2.resize(crop, (_CROP_SIDE, _CROP_SIDE), interpolation=cv2.INTER_AREA)
        c: dict[str, Any] = {"src": self.src(self.folder.write(f"img/c{n:05d}-crop.jpg", _jpeg(crop))),
                             "w": _CROP_SIDE, "h": _CROP_SIDE, "heat": None}
        if heat is not None:
            Hh = cv2.getPerspectiveTransform(_square(_HEAT_GRID), quad.astype(np.float32)).astype(np.float64)
            hc = cv2.warpPerspective(np.nan_to_num(heat.astype(np.float32), nan=0.0), Hh, (_HEAT_GRID, _HEAT_GRID),
                                     flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                                     borderValue=0)
            c["heat"] = self.src(self.folder.write(f"img/c{n:05d}-heat.png", _heat_png(hc)))
        out["crop"] = c
        return out


def _warp(image: np.ndarray, H: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    from brandguard.localization import warp_to_canonical

    return warp_to_canonical(image, H, size)


# ---------------------------------------------------------------------------------------- the page
def _row_key(path: str) -> str:
    return os.path.normpath(path)


def _header(rows: Sequence[Mapping[str, str]], n_flagged: int, n_cards: int, max_items: int,
            index: ReferenceIndex | None, summary: Mapping[str, Any] | None, generated: str) -> str:
    def e(s: Any) -> str:
        return html.escape(display_text(str(s)))

    counts = Counter(r.get("verdict", "") for r in rows)
    verdicts = [v for v in _VERDICT_ORDER if v in counts] + sorted(v for v in counts if v not in _VERDICT_ORDER)
    body = "".join(f'<tr data-verdict="{e(v)}"><th><span class="badge b-{e(v)}">{e(v)}</span></th>'
                   f"<td>{counts[v]}</td></tr>" for v in verdicts)
    body += f'<tr data-verdict="total"><th>total</th><td>{len(rows)}</td></tr>'
    parts = [f'<p class="meta">generated {e(generated)}; every count below is a count of the results\' rows</p>',
             '<div class="header">',
             f'<table class="counts" id="counts"><caption>photos per verdict</caption>{body}</table>']
    cards = (f"{n_cards} evidence card(s): the {'highest-scored ' if n_cards < n_flagged else ''}"
             f"{n_cards} of {n_flagged} flagged photo(s)")
    if n_cards < n_flagged:
        cards += f" (the card limit is {max_items}: <code>brandguard score --report-max N</code> changes it)"
    facts = [("evidence cards", cards)]
    if index is not None:
        t = index.thresholds
        cal = index.calibrator
        facts.append(("verdict thresholds", e(f"suspicious at score \u2265 {t.review:g}, counterfeit at score \u2265 "
                                              f"{t.takedown:g} (a score of 0.99 is higher than 99% of authentic photos)")))
        if cal is not None:
            facts.append(("raw score", e(f"the largest comparison channel on a common standard-deviation scale; "
                                         f"review at \u2265 {cal.raw_at(t.review):.3f}, takedown at \u2265 "
                                         f"{cal.raw_at(t.takedown):.3f} (all brands; own calibration for "
                                         f"{', '.join(sorted(index.brand_calibrators)) or 'no brand'}); calibrated "
                                         f"on {cal.n} authentic photos ({cal.source})")))
        facts.append(("known product", e(f"\u2265 {t.min_inliers} verified keypoint matches"
                                         + (f", or \u2265 {t.weak_inliers} with similarity \u2265 {t.weak_similarity:.3f}"
                                            " and print that does not differ in large areas"
                                            if t.fewest_accepted < t.min_inliers else ""))))
        facts.append(("index", e(f"{len({m.brand for m in index.products})} brand(s), {len({m.key for m in index.products})} "
                                 f"product(s), {sum(len(m.refs) for m in index.products)} reference photo(s)")))
    facts.append(("heat", (f"departure from authentic variation in standard deviations, on one absolute log scale "
                           f"for every card (saturates at {HEAT_MAX:g})")))
    for k, v in (summary or {}).items():
        facts.append((e(k), e(_format_value(v))))
    parts.append('<table class="facts-table" id="run"><caption>this run</caption>' + "".join(
        f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts) + "</table></div>")
    return "\n".join(parts)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


def _json(payload: Any) -> str:
    """Compact ASCII JSON with ``<``, ``>`` and ``&`` escaped: safe in a script whatever the strings hold."""
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _js(name: str, payload: Any) -> bytes:
    return f"{name}{_json(payload)};\n".encode("ascii")


def _clean(value: float) -> float | None:
    return round(value, 9) if np.isfinite(value) else None


def write_html_report(
    predictions: Sequence[Prediction],
    out_path: str | os.PathLike[str],
    *,
    rows: Sequence[Mapping[str, str]] | None = None,
    photo_root: str | os.PathLike[str] | None = None,
    index: ReferenceIndex | None = None,
    title: str = "brandguard evidence report",
    max_items: int = 300,
    max_side: int = 400,
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write the evidence report: ``out_path`` (the page) and ``<stem>_files/`` beside it.

    The header counts the rows per verdict (the results CSV's rows when ``rows`` is given), states the
    thresholds and says how many cards there are. The table lists every row (path, verdict, score, brand,
    product, similarity, the channel that drives the raw score, note or error), sortable by any column and
    filterable by verdict, brand, channel and a search text, page by page. Each flagged prediction among the
    ``max_items`` highest-ranked (``counterfeit`` before ``suspicious``, then by score, ties by raw score)
    gets an evidence card (see the module docstring), shown under the table for the rows of the current
    page. A photo or reference that cannot be re-read shows as a placeholder; the card still renders.

    Args:
        predictions: from :meth:`brandguard.Detector.predict_batch`, in any order; only the flagged ones get
            cards (:func:`compact_prediction` keeps them small).
        out_path: the ``.html`` page to write; its folder is created if missing.
        rows: the results rows (:func:`brandguard.scoring.read_results`); None: one row per prediction.
        photo_root: the folder the rows' paths are relative to (their predictions' ``source`` is
            ``photo_root / path``).
        index: the index the predictions came from: thresholds, channel scales, aligned reference crops and
            warnings that need the product's references. Without it the cards show the whole reference photo.
        title: the report's title.
        max_items: the most cards (the highest-ranked flagged predictions); the table still lists every row.
        max_side: the longest side of the listing photo shown on a card, in pixels.
        summary: optional facts about the run for the header, e.g. ``{"listings": "shop/"}``.

    Returns:
        The page's path.

    Raises:
        ValueError: If ``max_items`` is negative or ``max_side`` is below 16.
        OSError: If the files cannot be written.

    Example:
        >>> import brandguard as bg
        >>> from brandguard.report import write_html_report
        >>> det = bg.load("idx/")                                                        # doctest: +SKIP
        >>> write_html_report(det.predict_batch(["listing.jpg"]), "out/report.html",
        ...                   index=det.index, max_items=1000)                          # doctest: +SKIP
        PosixPath('out/report.html')
    """
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
        raise ValueError(f"max_items: expected a non-negative integer, got {max_items!r}")
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 16:
        raise ValueError(f"max_side: expected an integer >= 16 pixels, got {max_side!r}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    preds = list(predictions)
    root = Path(photo_root) if photo_root is not None else None

    table = [dict(r) for r in rows] if rows is not None else [dict(p.to_row()) for p in preds]
    where: dict[str, int] = {}
    for i, r in enumerate(table):
        where.setdefault(_row_key(r.get("path", "")), i)
        if root is not None:
            where.setdefault(_row_key(str(root / r.get("path", ""))), i)
    ranked = sorted((p for p in preds if p.verdict in _FLAGGED_RANK),
                    key=lambda p: (_FLAGGED_RANK[p.verdict], -float(p.score), -float(p.raw_score)))
    shown: list[tuple[Prediction, int]] = []
    seen: set[int] = set()
    for p in ranked:
        if len(shown) >= max_items:
            break
        found = where.get(_row_key(p.source))
        if found is None:  # a prediction without a row still gets one
            table.append(dict(p.to_row()))
            found = len(table) - 1
            where[_row_key(p.source)] = found
        i = found
        if i in seen:
            continue
        seen.add(i)
        shown.append((p, i))
    card_of = {i: n for n, (_, i) in enumerate(shown)}

    scales = _Scales(index)
    files_name = f"{out.stem}_files"
    url = quote(files_name)
    folder = _Folder(out.parent / files_name)
    try:
        maker = _CardMaker(index, scales, folder, url, max_side)
        refs = list(dict.fromkeys((p.brand, p.product, p.reference) for p, _ in shown if p.reference))
        workers = max(1, min(4, os.cpu_count() or 1, len(shown) or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            ref_data = dict(zip(refs, pool.map(lambda kr: maker.reference(kr[1], kr[0]), enumerate(refs))))
            made = list(pool.map(lambda nt: maker.make(nt[0], nt[1][0], table[nt[1][1]].get("path", nt[1][0].source)),
                                 enumerate(shown)))
        for (p, _), c in zip(shown, made):
            c["ref"] = ref_data.get((p.brand, p.product, p.reference)) or {"missing": "no reference", "path": ""}
        for k in range(0, len(made), CARDS_PER_FILE):
            chunk = _json(made[k:k + CARDS_PER_FILE])
            folder.write(f"cards-{k // CARDS_PER_FILE:04d}.js",
                         f"window.BRANDGUARD_CARDS({k // CARDS_PER_FILE},{chunk});\n".encode("ascii"))

        # the table: every row, with the channel that drives its raw score
        ch = np.array([[_num(r.get(c, "")) for c in CHANNELS] for r in table], np.float64).reshape(-1, len(CHANNELS))
        fired = [_fired(z) for z in scales.standardised(ch)] if len(table) else []
        data_rows = []
        for i, r in enumerate(table):
            verdict = r.get("verdict", "")
            compared = verdict in ("authentic", "suspicious", "counterfeit")
            score, raw, sim = _num(r.get("score")), _num(r.get("raw_score")), _num(r.get("similarity"))
            f = fired[i] if compared and np.isfinite(ch[i]).any() else None
            data_rows.append([
                i + 1, display_text(r.get("path", "")), verdict, _clean(score) if compared else None,
                _score_text(score) if compared else "", _clean(raw) if compared else None,
                display_text(r.get("brand", "")), display_text(r.get("product", "")), _clean(sim),
                CHANNELS[f] if f is not None else "", display_text(r.get("note", "") or r.get("error", "")),
                card_of.get(i, -1)])
        counts = Counter(r.get("verdict", "") for r in table)
        n_flagged = counts.get("counterfeit", 0) + counts.get("suspicious", 0)
        meta = {
            "columns": ["row", "path", "verdict", "score", "score_text", "raw", "brand", "product", "similarity",
                        "channel", "note", "card"],
            "rows": data_rows, "chunk": CARDS_PER_FILE, "max_cards": max_items, "files": url,
            "verdicts": [v for v in _VERDICT_ORDER if v in counts] + sorted(v for v in counts if v not in _VERDICT_ORDER),
            "counts": dict(counts), "brands": sorted({str(r[6]) for r in data_rows if r[6]}),
            "channels": [c for c in CHANNELS if any(r[9] == c for r in data_rows)],
            "default_filter": "flagged" if n_flagged else "",
            "legend": {"gradient": _gradient_css(),
                       "ticks": [{"pos": _pos(v), "label": f"{v:g}" + ("+" if v == HEAT_MAX else "")} for v in _HEAT_TICKS]},
        }
        folder.write("rows.js", _js("window.BRANDGUARD_REPORT=", meta))
        folder.write("report.js", resources.files("brandguard.report").joinpath("report.js").read_bytes())
        generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
        page = resources.files("brandguard.report").joinpath("template.html").read_text(encoding="utf-8")
        page = (page.replace("<!--BG:TITLE-->", html.escape(display_text(title)))
                .replace("<!--BG:HEADER-->", _header(table, n_flagged, len(shown), max_items, index, summary, generated))
                .replace("<!--BG:FILES-->", html.escape(url)))
        folder.commit()
    except BaseException:
        folder.discard()
        raise
    atomic_write_text(out, page)
    return out
