"""A self-contained HTML evidence report: one card per flagged listing photo.

Each card puts the listing photo, with the mismatch heatmap overlaid and the product's outline drawn, next
to the authentic reference it was matched to, and lists the facts behind the verdict. Images are embedded
as base64 JPEG data URIs, so the single file can be mailed or attached to a takedown request as is; it
loads no external CSS, script or font.

Example:
    >>> import brandguard as bg
    >>> from brandguard.report import write_html_report
    >>> preds = bg.load("idx/").predict_batch(["a.jpg", "b.jpg"])    # doctest: +SKIP
    >>> write_html_report(preds, "report.html")                     # doctest: +SKIP
    PosixPath('report.html')
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from brandguard.errors import ImageLoadError
from brandguard.images import load_image

if TYPE_CHECKING:  # pragma: no cover - importing the detector pulls in torch
    from brandguard.detector import Prediction

__all__ = ["overlay_heatmap", "write_html_report"]

_VERDICT_ORDER = ("counterfeit", "suspicious", "authentic", "unknown", "error")
_FLAGGED_RANK = {"counterfeit": 0, "suspicious": 1}
_BADGE_COLOURS = {
    "counterfeit": "#c0392b",
    "suspicious": "#d35400",
    "authentic": "#27ae60",
    "unknown": "#7f8c8d",
    "error": "#34495e",
}
_MAX_TABLE_ROWS = 30
_MIN_HEAT_SCALE = 6.0
"""Heat (standard deviations) that saturates the colour map at least; more when the 99th percentile is higher."""
_MAX_ALPHA = 0.75
"""Opacity of the colour map where the heat saturates."""
_QUAD_RGB = (0, 255, 0)
_UNREADABLE = (ImageLoadError, OSError, ValueError, TypeError)
"""What re-reading a photo may raise; the report shows a placeholder instead."""
_JPEG_QUALITY = 85

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.5em;
color:#222;background:#f6f7f9}
h1{margin:0 0 .2em}.meta{color:#666;margin:0 0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
vertical-align:top;font-size:.92em}th{background:#eef0f3}
.counts td{text-align:right}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0;display:flex;
flex-wrap:wrap;gap:1em}
.card figure{margin:0}.card figcaption{color:#666;font-size:.85em;margin-top:.2em}
.card img{display:block;max-width:100%;height:auto;border:1px solid #ccc}
.facts{flex:1 1 280px;min-width:260px}.facts td:first-child{color:#555;white-space:nowrap}
.path{word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
.badge{display:inline-block;color:#fff;border-radius:3px;padding:.1em .5em;font-weight:600;
text-transform:uppercase;font-size:.8em;letter-spacing:.03em}
.placeholder{display:flex;align-items:center;justify-content:center;text-align:center;background:#eee;
color:#777;border:1px dashed #aaa;width:320px;height:240px;padding:.5em;box-sizing:border-box;
font-size:.9em;word-break:break-word}
details{margin-top:1.5em}summary{cursor:pointer;font-weight:600}
"""


def _heat_scale(heat: np.ndarray) -> float:
    positive = heat[heat > 0]
    if positive.size == 0:
        return _MIN_HEAT_SCALE
    return max(_MIN_HEAT_SCALE, float(np.percentile(positive, 99)))


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, quad: np.ndarray | None = None) -> np.ndarray:
    """Overlay a mismatch heatmap on a photo, with the product's outline.

    The heat (standard deviations above authentic variation) is clipped to
    ``[0, max(6, 99th percentile of the positive heat)]``, coloured with the turbo colour map and blended with
    an opacity proportional to it, so pixels with no heat (typical, or outside the product) keep their
    colour. The heatmap is resized to the image when their shapes differ, and the quad is scaled with it.

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
    clean: np.ndarray = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
    if clean.shape != (h, w):
        clean = cv2.resize(clean, (w, h), interpolation=cv2.INTER_LINEAR)
    heat: np.ndarray = np.maximum(clean, 0.0).astype(np.float32, copy=False)

    out = image.copy()
    mask = heat > 0
    if mask.any():
        norm = np.clip(heat[mask] / _heat_scale(heat), 0.0, 1.0)
        lut_index = np.round(norm * 255).astype(np.uint8)
        colours = cv2.applyColorMap(lut_index.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)[:, ::-1]
        alpha = (norm * _MAX_ALPHA)[:, None]
        blended = image[mask].astype(np.float32) * (1.0 - alpha) + colours.astype(np.float32) * alpha
        out[mask] = np.clip(np.round(blended), 0, 255).astype(np.uint8)

    if quad is not None:
        q = np.asarray(quad, dtype=np.float64)
        if q.shape != (4, 2):
            raise ValueError(f"quad: expected a (4, 2) array of corners, got shape {q.shape}")
        if np.isfinite(q).all():
            pts = np.round(q * np.array([sx, sy])).astype(np.int32).reshape(-1, 1, 2)
            thickness = max(1, round(max(h, w) / 320))
            cv2.polylines(out, [pts], isClosed=True, color=_QUAD_RGB, thickness=thickness, lineType=cv2.LINE_AA)
    return out


def _thumbnail(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _img_tag(rgb: np.ndarray, alt: str, max_side: int) -> str:
    thumb = np.ascontiguousarray(_thumbnail(rgb, max_side)[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 BGR array
        return _placeholder(alt, "could not encode the image")
    data = base64.b64encode(buf.tobytes()).decode("ascii")
    h, w = thumb.shape[:2]
    return f'<img src="data:image/jpeg;base64,{data}" width="{w}" height="{h}" alt="{html.escape(alt)}">'


def _placeholder(what: str, reason: str) -> str:
    return f'<div class="placeholder">{html.escape(what)} unavailable<br>{html.escape(reason)}</div>'


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _photo_html(p: Prediction, max_side: int) -> str:
    heat = p.heatmap
    try:
        # Decode at the heatmap's resolution: the detector's own decode, so pixels line up.
        decode_side = max(max_side, max(heat.shape[:2])) if heat is not None and heat.ndim == 2 else max_side
        rgb = load_image(p.source, max_side=decode_side)
    except _UNREADABLE as exc:  # an unreadable photo becomes a placeholder; the card still renders
        return _placeholder("listing photo", _reason(exc))
    caption = "listing photo"
    if heat is not None:
        try:
            rgb = overlay_heatmap(rgb, heat, p.quad)
            caption = "listing photo, mismatch heatmap overlaid"
        except ValueError as exc:
            caption = f"listing photo (heatmap not shown: {_reason(exc)})"
    return f"<figure>{_img_tag(rgb, 'listing photo', max_side)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _reference_html(reference: str, max_side: int) -> str:
    if not reference:
        return _placeholder("reference photo", "no matched reference")
    try:
        rgb = load_image(reference, max_side=max_side)
    except _UNREADABLE as exc:
        return _placeholder("reference photo", _reason(exc))
    return (f"<figure>{_img_tag(rgb, 'authentic reference', max_side)}"
            "<figcaption>matched authentic reference</figcaption></figure>")


def _badge(verdict: str) -> str:
    colour = _BADGE_COLOURS.get(verdict, "#555")
    return f'<span class="badge" style="background:{colour}">{html.escape(verdict)}</span>'


def _brand_product(p: Prediction) -> str:
    if not p.brand and not p.product:
        return ""
    return f"{p.brand} / {p.product}"


def _card(p: Prediction, photo: str, reference: str) -> str:
    e = html.escape
    others = "".join(
        f"<li>{e(m.brand)} / {e(m.product)} &middot; {m.similarity:.3f} &middot; "
        f'<span class="path">{e(m.reference)}</span></li>'
        for m in p.matches[1:]
    )
    rows = [
        ("path", f'<span class="path">{e(p.source)}</span>'),
        ("verdict", _badge(p.verdict)),
        ("score", f"{p.score:.3f}"),
        ("raw score", f"{p.raw_score:.3f}"),
        ("brand / product", e(_brand_product(p))),
        ("similarity", f"{p.similarity:.3f}"),
        ("inliers", str(int(p.inliers))),
        ("reference", f'<span class="path">{e(p.reference)}</span>'),
        ("other matches", f"<ul>{others}</ul>" if others else "none"),
    ]
    facts = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows)
    return (f'<section class="card" data-verdict="{e(p.verdict)}" data-score="{p.score:.6f}" '
            f'data-source="{e(p.source)}">{photo}{reference}'
            f'<div class="facts"><table>{facts}</table></div></section>')


def _other_table(preds: Sequence[Prediction]) -> str:
    e = html.escape
    head = ("<tr><th>path</th><th>verdict</th><th>score</th><th>brand / product</th><th>similarity</th>"
            "<th>error</th></tr>")
    body = "".join(
        f'<tr class="row" data-verdict="{e(p.verdict)}"><td class="path">{e(p.source)}</td>'
        f"<td>{_badge(p.verdict)}</td><td>{p.score:.3f}</td><td>{e(_brand_product(p))}</td>"
        f"<td>{p.similarity:.3f}</td><td>{e(p.error)}</td></tr>"
        for p in preds
    )
    return f'<table class="others">{head}{body}</table>'


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


def _summary_table(summary: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_format_value(v))}</td></tr>"
        for k, v in summary.items()
    )
    return f'<h2>Summary</h2><table class="summary">{rows}</table>'


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_html_report(
    predictions: Sequence[Prediction],
    out_path: str | os.PathLike[str],
    *,
    title: str = "brandguard evidence report",
    max_items: int = 300,
    max_side: int = 640,
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-contained HTML evidence report of the flagged predictions.

    The header gives the title, the generation time (UTC), the count of each verdict and, when given, the
    ``summary`` as a small table. Then comes one card per flagged prediction, ``counterfeit`` before
    ``suspicious`` and by score, highest first: the listing photo with its heatmap and product outline, the
    matched authentic reference, and the facts (path, verdict, score, raw score, brand/product, similarity,
    inliers, other matches). Up to 30 ``unknown`` and 30 ``error`` predictions follow in a collapsed table.
    Photos that cannot be re-read show as a placeholder; the card still renders. Every string is
    HTML-escaped, and the file is written atomically (a temporary file in the same folder, then renamed).

    Args:
        predictions: from :meth:`brandguard.Detector.predict_batch`, in any order.
        out_path: the ``.html`` file to write; its folder is created if missing.
        title: the report's title.
        max_items: the most cards to render (the highest-ranked); the header says how many were left out.
        max_side: the longest side of the embedded images, in pixels.
        summary: optional figures to show in the header, e.g. ``{"AUROC": 0.97}``.

    Returns:
        The path written.

    Raises:
        ValueError: If ``max_items`` is negative or ``max_side`` is below 16.
        OSError: If the file cannot be written.

    Example:
        >>> import brandguard as bg
        >>> from brandguard.report import write_html_report
        >>> preds = bg.load("idx/").predict_batch(["listing.jpg"])             # doctest: +SKIP
        >>> write_html_report(preds, "out/report.html", summary={"AUROC": 0.97})  # doctest: +SKIP
        PosixPath('out/report.html')
    """
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
        raise ValueError(f"max_items: expected a non-negative integer, got {max_items!r}")
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 16:
        raise ValueError(f"max_side: expected an integer >= 16 pixels, got {max_side!r}")
    out = Path(out_path)
    preds = list(predictions)

    ranked = sorted(
        (p for p in preds if p.verdict in _FLAGGED_RANK),
        key=lambda p: (_FLAGGED_RANK[p.verdict], -float(p.score)),
    )
    shown = ranked[:max_items]

    # Render images in threads (cv2 and Pillow release the GIL); each reference photo once.
    references = list(dict.fromkeys(p.reference for p in shown))
    workers = max(1, min(8, os.cpu_count() or 1, len(shown)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ref_html = dict(zip(references, pool.map(lambda r: _reference_html(r, max_side), references)))
        photos = list(pool.map(lambda p: _photo_html(p, max_side), shown))
    cards = [_card(p, photo, ref_html[p.reference]) for p, photo in zip(shown, photos)]

    e = html.escape
    counts = Counter(p.verdict for p in preds)
    verdicts = list(_VERDICT_ORDER) + sorted(v for v in counts if v not in _VERDICT_ORDER)
    count_rows = "".join(f"<tr><th>{_badge(v)}</th><td>{counts.get(v, 0)}</td></tr>" for v in verdicts)
    count_rows += f"<tr><th>total</th><td>{len(preds)}</td></tr>"
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")

    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1><p class=\"meta\">generated {e(generated)}</p>",
        f'<table class="counts">{count_rows}</table>',
    ]
    if summary:
        parts.append(_summary_table(summary))
    parts.append(f"<h2>Flagged photos ({len(ranked)})</h2>")
    if len(ranked) > len(shown):
        parts.append(f'<p class="meta">showing the top {len(shown)}; {len(ranked) - len(shown)} more not shown</p>')
    if not ranked:
        parts.append('<p class="meta">no photo was flagged</p>')
    parts.extend(cards)

    unknown = [p for p in preds if p.verdict == "unknown"]
    errors = [p for p in preds if p.verdict == "error"]
    if unknown or errors:
        listed = unknown[:_MAX_TABLE_ROWS] + errors[:_MAX_TABLE_ROWS]
        parts.append(f"<details><summary>Unknown ({len(unknown)}) and unreadable ({len(errors)}) photos"
                     f"{' (first 30 of each)' if len(listed) < len(unknown) + len(errors) else ''}</summary>")
        parts.append(_other_table(listed))
        parts.append("</details>")
    parts.append("</body></html>\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, "\n".join(parts))
    return out
