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

import queue
import re
import threading
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "MIN_CONFIDENCE",
    "MIN_READ_SHARE",
    "OTHER_NAME_RUN",
    "OTHER_NAME_SHARE",
    "SWAP_CONFIDENCE",
    "TextReader",
    "available",
    "brand_read_in_place",
    "confident_swap",
    "line_boxes",
    "line_reads",
    "misread_count",
    "misspelt_count",
    "misspelt_distance",
    "names_brand",
    "normalise",
    "other_brand_reading",
    "other_name_lines",
    "read_lines_many",
    "read_reference_text",
    "read_tall_lines",
    "reads_name",
    "reads_other_name",
    "reads_other_product",
    "reference_lines",
    "reference_reads",
    "set_reader_threads",
    "shared_letters",
    "text_distance",
    "text_mismatch",
    "unread_details",
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

    def __init__(self, threads: int | None = None) -> None:
        try:
            import os

            os.environ.setdefault("OMP_NUM_THREADS", "2")
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            from brandguard.errors import MissingExtraError

            raise MissingExtraError('the wordmark check needs the ocr extra: pip install "brandguard[ocr]" '
                                    "(or set compare.text_check: off)") from exc
        # threads: ONNX Runtime threads per model (None: its default, every core); several single-threaded
        # readers side by side use the cores better than one reader's threads on these small models
        self._ocr = RapidOCR(**({"intra_op_num_threads": int(threads), "inter_op_num_threads": 1} if threads else {}))
        self._lock = threading.Lock()

    def read_lines(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Detect and read the text lines of an RGB image: ``[{text, box: [x0, y0, x1, y1], confidence}]``.

        Text is detected at the image's own size (an aligned crop: the text that can become a reference line
        is at least ``reference_lines``' ``min_height`` pixels high), not enlarged to RapidOCR's default 736
        pixels on the short side, which cost three times as much; and lines are read as they stand, without
        the upside-down classifier, as :meth:`recognise` reads them at scoring time.
        """
        img = np.ascontiguousarray(image[..., ::-1])
        with self._lock:
            det = self._ocr.text_det
            saved = (det.limit_side_len, det.limit_type)
            det.limit_side_len, det.limit_type = max(img.shape[:2]), "max"
            try:
                result, _ = self._ocr(img, use_cls=False)
            finally:
                det.limit_side_len, det.limit_type = saved
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

    def detect(self, image: np.ndarray) -> list[tuple[list[float], np.ndarray]]:
        """Detect the text lines of an RGB image without reading them, as :meth:`read_lines` detects them.

        Returns:
            per line, in reading order, ``(box, crop)``: ``[x0, y0, x1, y1]`` in the image's pixels and the
            line's upright RGB crop (for :meth:`recognise_each`).
        """
        ocr = self._ocr
        img = np.ascontiguousarray(image[..., ::-1])
        raw_h, raw_w = img.shape[:2]
        with self._lock:
            det = ocr.text_det
            saved = (det.limit_side_len, det.limit_type)
            det.limit_side_len, det.limit_type = max(img.shape[:2]), "max"
            try:
                work, ratio_h, ratio_w = ocr.preprocess(img)
                work, record = ocr.maybe_add_letterbox(work, {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}})
                boxes, _ = ocr.auto_text_det(work)
            finally:
                det.limit_side_len, det.limit_type = saved
        if boxes is None:
            return []
        crops = ocr.get_crop_img_list(work, boxes)
        pts = ocr._get_origin_points(boxes, record, raw_h, raw_w)
        return [([float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())],
                 np.ascontiguousarray(c[..., ::-1])) for p, c in zip(pts, crops)]

    def recognise_each(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Read single-line RGB crops, each as if read alone (padded to its own width, never to a wider line's
        in the same batch, so a line reads the same whatever it is read with): ``[(text, confidence)]``.

        Lines that pad to the same width are still read in one batch (most lines pad to the recogniser's
        320-pixel minimum), so this costs no more than :meth:`recognise` and less when widths vary.
        """
        import math

        _, rec_h, rec_w = self._ocr.text_rec.rec_image_shape
        groups: dict[tuple[int, int], list[int]] = {}
        for i, c in enumerate(crops):
            ratio = c.shape[1] / float(c.shape[0])
            width = int(rec_h * max(rec_w / rec_h, ratio))  # the recogniser's padded width for this line alone
            groups.setdefault((width, min(width, math.ceil(rec_h * ratio))), []).append(i)
        out: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        for rows in groups.values():
            for i, res in zip(rows, self.recognise([crops[i] for i in rows])):
                out[i] = res
        return out


_READER_THREADS: int | None = None


def set_reader_threads(threads: int | None) -> None:
    """ONNX Runtime threads of :func:`shared_reader` from now on (None: ONNX Runtime's default, every core).

    For processes that share a machine, such as the actors of the Ray runner (``brandguard.distributed``).
    """
    global _READER_THREADS
    _READER_THREADS = None if threads is None else max(1, int(threads))
    shared_reader.cache_clear()


@lru_cache(maxsize=1)
def shared_reader() -> TextReader:
    """One reader per process (loading the models takes a second)."""
    return TextReader(threads=_READER_THREADS)


@lru_cache(maxsize=2)
def _reader_pool(workers: int) -> queue.SimpleQueue[TextReader]:
    pool: queue.SimpleQueue[TextReader] = queue.SimpleQueue()
    for _ in range(workers):
        pool.put(TextReader(threads=1))
    return pool


def read_lines_many(images: Sequence[np.ndarray], workers: int = 1) -> list[list[dict[str, Any]]]:
    """:meth:`TextReader.read_lines` of several RGB images, on ``workers`` cores, in input order.

    Each worker thread takes a single-threaded reader of its own (ONNX Runtime releases the GIL), so the
    images are read side by side; readers are kept for the next call (one set per process and ``workers``).

    Args:
        images: ``HxWx3`` uint8 RGB arrays (aligned crops).
        workers: threads, one reader each (>= 1).

    Returns:
        per image, its lines ``[{text, box: [x0, y0, x1, y1], confidence}]``.

    Raises:
        MissingExtraError: the ``ocr`` extra is not installed.
    """
    if not images:
        return []
    workers = max(1, int(workers))
    return _on_readers(_reader_pool(workers), workers, lambda r, im: r.read_lines(im), list(images))


def _on_readers(pool: queue.SimpleQueue[TextReader], workers: int, fn: Any, args: list[Any]) -> list[Any]:
    """``[fn(reader, a) for a in args]``, each call on a reader taken from ``pool``, on up to ``workers``
    threads side by side (ONNX Runtime releases the GIL); results in the order of ``args``."""

    def one(arg: Any) -> Any:
        reader = pool.get()
        try:
            return fn(reader, arg)
        finally:
            pool.put(reader)

    if workers == 1 or len(args) <= 1:
        return [one(a) for a in args]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(args))) as ex:
        return list(ex.map(one, args))


def normalise(text: str) -> str:
    """Lower-case letters and digits only (OCR spacing and punctuation vary)."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def misread_count(expected: str, read: str) -> tuple[int, int]:
    """``(wrong characters, length)`` of a reading: the Levenshtein distance of the normalised texts and
    the longer normalised length (so ``wrong / length`` is :func:`text_distance`).

    Example:
        >>> misread_count("Adidas", "Adibas"), misread_count("Adidas", "Aidbas")
        ((1, 6), (2, 6))
    """
    a, b = normalise(expected), normalise(read)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1], max(len(a), len(b))


def text_distance(a: str, b: str) -> float:
    """Levenshtein distance of the normalised texts divided by the longer length (0 = same, 1 = different)."""
    wrong, length = misread_count(a, b)
    return wrong / length if length else 0.0


#: a line whose reading covers less than this share of the expected characters is unread (mostly covered)
MIN_READ_SHARE = 0.5


def _edit_ops(a: str, b: str) -> list[tuple[str, str, str]]:
    """One optimal alignment of ``a`` (expected) to ``b`` (read), in order: ``(op, a_char, b_char)`` with op
    ``=`` (match), ``s`` (substitution), ``d`` (expected character not read) or ``i`` (read character not
    expected). An expected character not read costs two, so a deletion is chosen only where the reading
    is shorter (covered print), and swapped or shifted letters in a reading of full length are
    substitutions; ties prefer substitutions."""
    n, m = len(a), len(b)
    D = np.zeros((n + 1, m + 1), np.int32)
    D[:, 0], D[0, :] = 2 * np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            D[i, j] = min(D[i - 1, j] + 2, D[i, j - 1] + 1, D[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    ops: list[tuple[str, str, str]] = []
    i, j = n, m
    while i or j:
        if i and j and D[i, j] == D[i - 1, j - 1] + (a[i - 1] != b[j - 1]):
            ops.append(("=" if a[i - 1] == b[j - 1] else "s", a[i - 1], b[j - 1]))
            i, j = i - 1, j - 1
        elif i and D[i, j] == D[i - 1, j] + 2:
            ops.append(("d", a[i - 1], ""))
            i -= 1
        else:
            ops.append(("i", "", b[j - 1]))
            j -= 1
    return ops[::-1]


def misspelt_count(expected: str, read: str) -> tuple[int, int]:
    """``(misspelt characters, characters read)`` of a reading: the evidence of a misspelling, with what
    looks like an occluder (finger, price sticker, glare over part of the print) counted as unread.

    The normalised texts are aligned (:func:`_edit_ops`). Each run of consecutive differences is either

    * *unread*, when it drops expected characters (read shorter: covered print) or mixes letters and
      digits (a letter read as a digit or the other way round: a price sticker's figures, or the usual
      O/0, I/1, S/5 confusions of OCR); its expected characters count neither as wrong nor as read;
    * *misspelt*, when it only substitutes letters for letters (or digits for digits) or adds them: what
      a look-alike brand name does (``Adibas``, ``Garrnin``, swapped letters).

    A line read over less than :data:`MIN_READ_SHARE` of its characters is unread as a whole: ``(0, 0)``.

    Returns:
        ``(k, L)``: ``k`` misspelt characters among the ``L`` characters read (``k <= L``); ``(0, 0)`` when
        the line is unread.

    Example:
        >>> misspelt_count("Adidas", "Adibas"), misspelt_count("Reebok", "Reeb38"), misspelt_count("NIKON", "65.0N")
        ((1, 6), (0, 4), (0, 0))
    """
    a, b = normalise(expected), normalise(read)
    if not a or not b:
        return 0, 0
    wrong = unread = 0
    run: list[tuple[str, str, str]] = []
    for op in _edit_ops(a, b) + [("=", "", "")]:
        if op[0] != "=":
            run.append(op)
            continue
        if run:
            covered = any(o == "d" or (o == "s" and x.isdigit() != y.isdigit()) or (o == "i" and y.isdigit())
                          for o, x, y in run)
            if covered:
                unread += sum(o != "i" for o, _, _ in run)
            else:
                wrong += len(run)
            run = []
    seen = len(a) - unread
    if seen < MIN_READ_SHARE * len(a) or seen <= 0:
        return 0, 0
    return min(wrong, seen), seen


def misspelt_distance(expected: str, read: str) -> float:
    """The text channel's distance of a reading: misspelt characters per character read
    (:func:`misspelt_count`; 0 = read right, NaN = unread, mostly covered)."""
    wrong, seen = misspelt_count(expected, read)
    return wrong / seen if seen else float("nan")


#: a confident reading that shares (order ignored) fewer than this share of the expected text's characters and
#: at most this share of its own names something else (:func:`reads_other_name`); a misspelling keeps all but
#: one or two letters of the name it imitates
OTHER_NAME_SHARE = 0.5
#: a reading that keeps this many characters of the expected text in a row shows part of that text (a sticker
#: or a finger over the rest of it), not another name (:func:`reads_other_name`)
OTHER_NAME_RUN = 3


def shared_letters(a: str, b: str) -> int:
    """How many characters two texts have in common, order ignored (each character counted as often as it
    occurs in both), after :func:`normalise`.

    Example:
        >>> shared_letters("BMW", "MBVV"), shared_letters("BMW", "UBAR")
        (2, 1)
    """
    return sum((Counter(normalise(a)) & Counter(normalise(b))).values())


#: length ratios (other line / reading) within which a reading may have slid onto another reference line
_SLID_LENGTH = (0.6, 1.67)


def reads_other_name(detail: dict[str, Any], names: Sequence[str] = ()) -> bool:
    """Whether a line's reading is another name rather than a misspelling (or a partly covered reading) of
    the expected one: ``UBAR`` (the middle of ``SUBARU``) where the references read ``BMW``, ``VANILJ`` (a
    sibling flavour) where they read ``NATURELL``.

    A look-alike misspelling keeps all but one or two letters of the name it imitates, in whatever order
    (``Adibas`` / ``Adidas``, the demo generator's gross ``MBV`` / ``BMW``: two swapped letters and a replaced
    one), and a partly covered name keeps a run of its characters (``Burg QUALITY``: a sticker over ``Burger
    King``). Another name shares letters only by chance. So a reading is another name when it is

    * confident (at least :data:`MIN_CONFIDENCE`) and at least 3 characters long, of an expected text of at
      least 3 (a two-letter mark read as two other letters is too little to name anything);
    * and, against the expected text and each of ``names``: the two share (:func:`shared_letters`) fewer
      than :data:`OTHER_NAME_SHARE` of the other text's characters and at most that share of the reading's,
      and no :data:`OTHER_NAME_RUN` characters in a row.

    Order-free sharing, not edit distance, is what works for short names: ``MBV`` and ``UBAR`` are both
    three edits from ``BMW``, but the first keeps two of its three letters and the second one.

    Args:
        detail: one line of :func:`text_mismatch` details (``text``, ``read``, ``confidence``).
        names: other texts the reading may be of (the product's other reference lines: a reading that slid
            onto the next line reads that line, not another name); only those from 0.6 to 1.67 times as long
            as the reading count.

    Example:
        >>> reads_other_name({"text": "BMW", "read": "UBAR", "confidence": 0.98})
        True
        >>> reads_other_name({"text": "BMW", "read": "MBV", "confidence": 0.98})
        False
    """
    import difflib

    read = normalise(str(detail.get("read", "")))
    expected = normalise(str(detail.get("text", "")))
    if float(detail.get("confidence", 0.0)) < MIN_CONFIDENCE or len(expected) < 3 or len(read) < 3:
        return False
    # another line counts only when the reading could be of it (a reading that slid onto it is about as long):
    # a long sibling's product line shares most letters of a short wordmark by chance (``Nike``)
    lines = {n for n in (normalise(str(n)) for n in names) if n and _SLID_LENGTH[0] <= len(n) / len(read) <= _SLID_LENGTH[1]}
    for other in {expected, *lines}:
        shared = shared_letters(other, read)
        run = difflib.SequenceMatcher(None, other, read, autojunk=False).find_longest_match(
            0, len(other), 0, len(read)).size
        if shared >= OTHER_NAME_SHARE * len(other) or shared > OTHER_NAME_SHARE * len(read) or run >= OTHER_NAME_RUN:
            return False
    return True


def _reads_right(d: dict[str, Any]) -> bool:
    """A line read confidently as the references read it (misspelt distance 0, :func:`misspelt_distance`)."""
    dist = float(d.get("distance", float("nan")))
    return not d.get("skipped", False) and float(d.get("confidence", 0.0)) >= MIN_CONFIDENCE and dist == 0


def other_name_lines(details: Sequence[dict[str, Any]]) -> list[bool]:
    """Per reference line of a photo, whether its reading is another name (:func:`reads_other_name`, against
    every line of the product) and so no evidence of a misspelling: a sibling's flavour, another brand's name.

    A reading counts only when it is a misread (distance above 0) and no other line the references read the
    same way reads right: ``HOT`` where they read ``KFC``, on a package that reads ``KFC`` right where they
    read ``KFC`` too, is something printed over this product's name (a badge, a sticker), not another name.

    Args:
        details: the OCR details of the reference lines placed in the photo, as :func:`text_mismatch` returns
            them (``text``, ``read``, ``confidence``, ``distance``), before any structure gate.

    Returns:
        one bool per line of ``details``.
    """
    names = [str(d.get("text", "")) for d in details]
    right = {normalise(str(d.get("text", ""))) for d in details if _reads_right(d)}
    out = []
    for d in details:
        dist = float(d.get("distance", float("nan")))
        out.append(bool(np.isfinite(dist) and dist > 0 and normalise(str(d.get("text", ""))) not in right
                        and reads_other_name(d, names)))
    return out


def reads_other_product(details: Sequence[dict[str, Any]]) -> bool:
    """Whether a photo's readings of a product's reference lines name another product: at least one line
    reads another name (:func:`other_name_lines`), and no line reads what the references read: every line
    placed was read confidently (not skipped, not mostly covered) and none reads right (misspelt distance 0).

    ``UBAR`` / ``Flow Scale Model`` where the references read ``BMW`` / ``Elite Scale Model`` is another brand's
    product that shares the layout, and ``VANILJ`` where the one line reads ``NATURELL`` a sibling flavour:
    products the index does not hold. ``THE`` / ``NOBES`` where they read ``THE`` / ``NORTH`` (a sticker over
    the name) is not: a line reads right; nor is a photo with a line left unread or read unsurely, which
    confirms nothing either way.

    Args:
        details: the OCR details of every reference line placed in the photo, as :func:`text_mismatch` returns
            them (``skipped`` lines were not read), before any structure gate.

    Example:
        >>> lines = [{"text": "BMW", "read": "UBAR", "confidence": 0.98, "distance": 1.0},
        ...          {"text": "Elite Scale Model", "read": "Flow Scale Model", "confidence": 0.95, "distance": 0.07}]
        >>> reads_other_product(lines), reads_other_product(lines[:1] + [{**lines[1], "confidence": 0.6}])
        (True, False)
    """
    if not details:
        return False
    for d in details:
        if d.get("skipped", False) or float(d.get("confidence", 0.0)) < MIN_CONFIDENCE:
            return False  # a line not read surely confirms nothing either way
        if not np.isfinite(float(d.get("distance", float("nan")))) or _reads_right(d):
            return False  # mostly covered, or read right: this product
    return any(other_name_lines(details))


#: a line of the photo is as prominent as the brand's name from this share of the height of the tallest
#: reference line that names the brand (:func:`other_brand_reading`)
OTHER_BRAND_HEIGHT = 0.7
#: lines of the photo at least this share of the lowest brand line's height are searched for the brand's name
#: (low: a brand whose logo reads as text has a brand line much taller than its printed name)
FOUND_HEIGHT = 0.25
#: OCR confidence from which a line of the photo that reads none of the product's texts names something else
#: (:func:`other_brand_reading`); lower than :data:`MIN_CONFIDENCE`: a whole line read by detection, not a
#: reference line's place, and it can only turn a verdict into ``unknown``
OTHER_BRAND_CONFIDENCE = 0.8


def reads_name(expected: str, read: str) -> bool:
    """Whether ``read`` is ``expected``, a misspelling of it or a part of it: it keeps
    :data:`OTHER_NAME_RUN` characters of it in a row (all of it when shorter, all but one of a short reading's),
    or it is about as long
    (0.6 to 1.67 times) and shares (:func:`shared_letters`) at least :data:`OTHER_NAME_SHARE` of its characters.

    Example:
        >>> reads_name("Reebok", "Rebeok"), reads_name("AMD", "Model CF-2041"), reads_name("Red Bull", "Reu")
        (True, False, True)
    """
    import difflib

    e, r = normalise(expected), normalise(read)
    if not e or not r:
        return False
    run = difflib.SequenceMatcher(None, e, r, autojunk=False).find_longest_match(0, len(e), 0, len(r)).size
    if run >= min(OTHER_NAME_RUN, len(e), max(2, len(r) - 1)):  # ``Reu``: what a sticker left of ``Red Bull``
        return True
    return _SLID_LENGTH[0] <= len(r) / len(e) <= _SLID_LENGTH[1] and shared_letters(e, r) >= OTHER_NAME_SHARE * len(e)


def names_brand(text: str, brand: str) -> bool:
    """Whether a reference line names the brand ``brand`` (its folder name, e.g. ``the-north-face``): one
    contains the other after :func:`normalise` (``AMDL``, the AMD logo read as text, names ``amd``), at least
    two characters of it."""
    t, b = normalise(text), normalise(brand)
    return min(len(t), len(b)) >= 2 and (b in t or t in b)


def brand_read_in_place(placed: Sequence[dict[str, Any]], brand: str) -> bool:
    """Whether a reference line that names ``brand`` (:func:`names_brand`) reads it at its place in the photo:
    read as it is, misspelt or in part (:func:`reads_name`, at any confidence), or left unread because the
    structure channel sees the references' strokes there (``skipped``, :func:`unread_details`).

    Args:
        placed: the reference lines as read at their places (:func:`text_mismatch` or
            :func:`unread_details` details: ``text``, ``read``, ``skipped``).
        brand: the product's brand (folder name).
    """
    return any(names_brand(str(d.get("text", "")), brand)
               and (bool(d.get("skipped", False)) or reads_name(str(d["text"]), str(d.get("read", ""))))
               for d in placed)


def other_brand_reading(photo_lines: Sequence[dict[str, Any]], lines: Sequence[dict[str, Any]],
                        known: Sequence[str], brand: str, placed: Sequence[dict[str, Any]] = ()) -> str | None:
    """What a photo reads in place of its product's brand name, when it reads another brand's name: the
    product of another brand that shares this one's packaging template (``FILA`` where the references read
    ``Reebok``, ``Roku`` where they read ``AMD``), which the index does not hold. None when it reads this
    brand, or nothing that names another.

    It is another brand's name when (a) some reference lines name the brand (:func:`names_brand`); (b) no line
    of the photo at least :data:`FOUND_HEIGHT` times as tall as the lowest of them, nor any of them read at its
    own place (``placed``; one left unread there because its strokes are the references' counts as read,
    :func:`brand_read_in_place`), reads any of them (:func:`reads_name`, at any confidence: a counterfeit's misspelt
    ``Rebeok`` or partly erased ``Ree`` is this brand, and so is a package that reads ``LG`` where LG's name
    is printed and ``FILA`` in its logo's place); and (c) a line of the photo as prominent as the brand's name (at least
    :data:`OTHER_BRAND_HEIGHT` times as tall as the tallest of them), read at least
    :data:`OTHER_BRAND_CONFIDENCE` confident, with at least three letters, reads none of the product's texts
    (its reference lines and ``known``: whatever its references read, its name). Another brand's name stands
    where a brand's name does on the template, as large (not necessarily in the same place: its layout may
    differ); a badge or sticker a counterfeiter puts over the brand name (``ORIGINAL QUALITY``) is a line
    marked ``on_label`` (:func:`brandguard.stickers.on_a_label`), and digits (``100%``) name nothing.

    Args:
        photo_lines: the lines read in the aligned crop, ``{text, box: [x0, y0, x1, y1], confidence}``
            (canonical pixels), e.g. :func:`read_tall_lines`, and optionally ``on_label`` (True: printed on a
            label or badge of its own) and ``unchanged`` (True: the structure channel sees the references'
            strokes under it, so it is print the references show, small print included): never another
            brand's name.
        lines: the product's reference lines (:func:`reference_lines`), boxes in the same frame.
        known: every other text of the product (what its references read, its name).
        brand: the product's brand (folder name).
        placed: the reference lines read at their places in the crop (:func:`text_mismatch` details, ``text``
            and ``read``), which detection can miss (a short name in a noisy photo); see
            :func:`brand_read_in_place`.

    Returns:
        the reading of the other name (the tallest such line), or None.

    Example:
        >>> refs = [{"text": "Reebok", "box": [60, 20, 200, 60]}, {"text": "Core Trainers", "box": [60, 200, 200, 225]}]
        >>> photo = [{"text": "FILA", "box": [50, 30, 210, 100], "confidence": 0.97},
        ...          {"text": "Pro Trainers", "box": [60, 200, 190, 225], "confidence": 0.97}]
        >>> other_brand_reading(photo, refs, ["Reebok", "Core Trainers"], "reebok")
        'FILA'
        >>> other_brand_reading(photo + [{"text": "Rebeok", "box": [60, 110, 200, 150], "confidence": 0.5}],
        ...                     refs, ["Reebok", "Core Trainers"], "reebok") is None
        True
    """
    named = [ln for ln in lines if names_brand(str(ln.get("text", "")), brand)]
    if not named:
        return None
    heights = [float(ln["box"][3] - ln["box"][1]) for ln in named]
    low, high = FOUND_HEIGHT * min(heights), OTHER_BRAND_HEIGHT * max(heights)
    tall = [p for p in photo_lines if float(p["box"][3] - p["box"][1]) >= low and normalise(str(p.get("text", "")))]
    if any(reads_name(str(ln["text"]), str(p["text"])) for ln in named for p in tall) \
            or brand_read_in_place(placed, brand):
        return None  # this brand's name, as it is, misspelt or in part
    # the product's texts (a reading of one or two characters, a stray letter of a logo, would match anything)
    texts = [t for t in [str(ln.get("text", "")) for ln in lines] + [str(k) for k in known] if len(normalise(t)) >= 3]
    other = [p for p in tall if float(p["box"][3] - p["box"][1]) >= high and not p.get("on_label", False)
             and not p.get("unchanged", False)
             and float(p.get("confidence", 0.0)) >= OTHER_BRAND_CONFIDENCE
             and sum(c.isalpha() for c in normalise(str(p["text"]))) >= 3
             and not any(reads_name(t, str(p["text"])) or reads_name(str(p["text"]), t) for t in texts)]
    if not other:
        return None
    return str(max(other, key=lambda p: float(p["box"][3] - p["box"][1]))["text"])


def read_tall_lines(crop: np.ndarray, reader: TextReader, min_height: float) -> list[dict[str, Any]]:
    """Detect the text lines of an aligned crop and read those at least ``min_height`` pixels high (each
    alone, :meth:`TextReader.recognise_each`): ``[{text, box: [x0, y0, x1, y1], confidence, crop}]`` (``crop``:
    the line's upright RGB pixels)."""
    found = [(box, c) for box, c in (reader.detect(crop) or []) if box[3] - box[1] >= min_height]
    reads = reader.recognise_each([c for _, c in found]) if found else []
    return [{"text": t, "box": box, "confidence": conf, "crop": c} for (box, c), (t, conf) in zip(found, reads)]


#: OCR confidence from which a photo's full-length letter swap in a consistently read line is evidence in
#: itself (:func:`confident_swap`)
SWAP_CONFIDENCE = 0.95


def confident_swap(detail: dict[str, Any]) -> bool:
    """Whether a line's reading is a misspelling the OCR evidence alone makes likely, so that weaker structure
    evidence confirms it (:data:`brandguard.comparison.SWAP_SUPPORT` instead of ``TEXT_SUPPORT``).

    It is when the references read the line alike and confidently (``consistent``, see
    :func:`reference_lines`: a stylised logo read ``UBL`` by some references and ``JBL`` by others is
    not), the photo's reading is at least :data:`SWAP_CONFIDENCE` confident, and it is a *full-length letter
    swap*: as many characters as expected, none unread, at least one misspelt (:func:`misspelt_count`), as
    in ``Reebox`` or ``Nikc``; a reading short of letters (blur, a covered span) is not.

    Args:
        detail: one line of :func:`text_mismatch` details (``text``, ``read``, ``confidence``, ``consistent``).
    """
    if not detail.get("consistent", False) or float(detail.get("confidence", 0.0)) < SWAP_CONFIDENCE:
        return False
    expected, read = normalise(str(detail.get("text", ""))), normalise(str(detail.get("read", "")))
    if not expected or len(read) != len(expected):
        return False
    wrong, seen = misspelt_count(expected, read)
    return wrong > 0 and seen == len(expected)


def line_reads(details: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """The text channel's readings as ``(misspelt characters, characters read)`` per confidently read line
    (:func:`misspelt_count`: a covered span is unread, not wrong; a mostly covered line is left out), the
    input of :class:`brandguard.calibration.MisreadModel`.

    Args:
        details: per reference line, ``{text or expected, read, distance, counted?}`` as in
            :func:`text_mismatch` details or ``Prediction.text``; ``counted`` (else ``distance``) is the
            distance the text channel kept: NaN (not read confidently) leaves the line out, 0 counts the
            line as read right (a misread the structure channel did not confirm).
    """
    out = []
    for d in details:
        kept = float(d.get("counted", d.get("distance", float("nan"))))
        if not np.isfinite(kept):
            continue
        wrong, length = misspelt_count(str(d.get("expected", d.get("text", ""))), str(d.get("read", "")))
        if length:
            out.append((wrong if kept > 0 else 0, length))
    return out


def reference_reads(ref_text: Sequence[Sequence[dict[str, Any]]], lines: Sequence[dict[str, Any]],
                    kept: Sequence[float] | np.ndarray | None = None) -> list[list[tuple[int, int]]]:
    """How each reference reads its product's reference lines, as :func:`line_reads` pairs (the
    references' share of the authentic misread rate).

    Args:
        ref_text: per reference, the lines read in it (``{text, box, confidence}``, canonical pixels).
        lines: the product's reference lines (:func:`reference_lines`).
        kept: per reference, the text channel its leave-one-out comparison kept (0: misreads the structure
            channel did not confirm, which count as read right, as for a photo); None keeps every misread.
    """
    if not lines:
        return [[] for _ in ref_text]
    from brandguard.comparison import reference_text_details

    out = []
    for i, own in enumerate(ref_text):
        reads = line_reads(reference_text_details(own, lines))
        if kept is not None and i < len(kept) and np.isfinite(kept[i]) and kept[i] <= 0:
            reads = [(0, length) for _, length in reads]
        out.append(reads)
    return out


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_lines(per_reference: Sequence[Sequence[dict[str, Any]]], *, agree: float = 0.6, max_lines: int = 2,
                    min_chars: int = 2, min_height: float = 20.0) -> list[dict[str, Any]]:
    """The text lines most references of a product agree on, largest first.

    Each kept line is ``{text, box, agree, consistent, ref_confidence}``: ``agree`` the share of references
    that read ``text`` there, ``ref_confidence`` the lowest confidence of any reading there, ``consistent``
    whether every reading there is ``text`` and at least :data:`MIN_CONFIDENCE` confident.

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
        line = _agreed_line([ln for lines in per_reference for ln in lines if _iou(cand["box"], ln["box"]) > 0.3],
                            n, need, min_chars)
        if line is None:
            continue
        kept.append(line)
        if len(kept) >= max_lines:
            break
    return kept


def _agreed_line(group: Sequence[dict[str, Any]], n: int, need: int, min_chars: int) -> dict[str, Any] | None:
    """The reference line a candidate's group of readings (every reading overlapping it, in reference order)
    makes, or None when fewer than ``need`` of the ``n`` references read the same text there."""
    votes = Counter(normalise(ln["text"]) for ln in group)
    text, count = votes.most_common(1)[0] if votes else ("", 0)
    if count < need or len(text) < min_chars:
        return None
    same = [ln for ln in group if normalise(ln["text"]) == text]
    box = np.median(np.array([ln["box"] for ln in same]), axis=0).tolist()
    # read alike, and confidently, by every reference that reads it: a photo's confident letter swap
    # there is evidence (see :func:`confident_swap`); a stylised logo read two ways is not
    ref_conf = min(float(ln.get("confidence", 0.0)) for ln in group)
    consistent = count == len(group) and ref_conf >= MIN_CONFIDENCE
    return {"text": same[0]["text"], "box": box, "agree": count / n, "consistent": bool(consistent),
            "ref_confidence": ref_conf}


def read_reference_text(images: Sequence[np.ndarray], workers: int = 1,
                        known: Sequence[Sequence[dict[str, Any]]] = (), *, agree: float = 0.6, max_lines: int = 2,
                        min_chars: int = 2, min_height: float = 20.0,
                        readers: int | None = None) -> list[list[dict[str, Any]]]:
    """Read a product's aligned references for the wordmark check, recognising only the lines that count.

    Every line is detected (:meth:`TextReader.detect`), but a line is recognised only when it can change
    the product's reference lines (:func:`reference_lines` with the same arguments, over ``known`` and these
    images) or how a reference reads them (:func:`brandguard.comparison.reference_text_details`): lines
    high enough to be a reference line, tallest first, until ``max_lines`` are kept; every line overlapping
    such a candidate (its votes); every line overlapping a kept line. Small print and the lines below the
    wordmark and product line are left unread, which saves half the recognition. Each line is read alone
    (:meth:`TextReader.recognise_each`), so its reading does not depend on which other lines are read.

    The readings give the same :func:`reference_lines` and, per reference, the same
    ``reference_text_details`` as recognising every line; they omit the lines that do not count.

    Args:
        images: ``HxWx3`` uint8 RGB aligned crops of one product.
        workers: threads, one single-threaded reader each (>= 1).
        known: lines already read in the product's other references (they come first, as in the index).
        agree, max_lines, min_chars, min_height: as for :func:`reference_lines`.
        readers: the shared set of single-threaded readers to take them from (default ``workers``; the index
            build reads several products side by side, one thread each, from a set of ``runtime.workers``).

    Returns:
        per image, the lines recognised ``[{text, box: [x0, y0, x1, y1], confidence}]``, in reading order;
        lines recognised below RapidOCR's text score (0.5) are left out, as :meth:`TextReader.read_lines` does.

    Raises:
        MissingExtraError: the ``ocr`` extra is not installed.
    """
    if not images:
        return []
    workers = max(1, int(workers))
    pool = _reader_pool(max(workers, int(readers or 0)))

    def run(fn: Any, args: list[Any]) -> list[Any]:
        return _on_readers(pool, workers, fn, args)

    detected = run(lambda r, im: r.detect(im), list(images))
    reader = pool.get()
    text_score = float(reader._ocr.text_score)
    pool.put(reader)
    boxes = [((k, j), box) for k, lines in enumerate(detected) for j, (box, _) in enumerate(lines)]
    read: dict[tuple[int, int], tuple[str, float]] = {}

    def recognise(keys: list[tuple[int, int]]) -> None:
        todo = [key for key in keys if key not in read]
        chunks = [todo[i::workers] for i in range(workers) if todo[i::workers]]
        for chunk, res in zip(chunks, run(lambda r, ks: r.recognise_each([detected[k][j][1] for k, j in ks]), chunks)):
            read.update(zip(chunk, res))

    def line(key: tuple[int, int]) -> dict[str, Any] | None:
        text, conf = read[key]
        return {"text": text, "box": detected[key[0]][key[1]][0], "confidence": conf} if conf >= text_score else None

    def overlapping(box: Sequence[float]) -> list[dict[str, Any]]:
        """Every reading overlapping ``box``, in reference order (known references first), recognised now."""
        keys = [key for key, b in boxes if _iou(box, b) > 0.3]
        recognise(keys)
        new = [ln for ln in (line(key) for key in keys) if ln is not None]
        return [ln for lines in known for ln in lines if _iou(box, ln["box"]) > 0.3] + new

    n = len(known) + len(images)
    need = max(1, int(np.ceil(agree * n)))
    # candidates in reference_lines' order: every line high enough, tallest first (stable: reference order)
    order: list[tuple[tuple[int, int] | None, Sequence[float], str]] = \
        [(None, ln["box"], ln["text"]) for lines in known for ln in lines] + [(key, b, "") for key, b in boxes]
    order = sorted((c for c in order if c[1][3] - c[1][1] >= min_height), key=lambda c: -(c[1][3] - c[1][1]))
    kept: list[dict[str, Any]] = []
    for key, box, text in order:
        if len(kept) >= max_lines:
            break
        if any(_iou(box, k["box"]) > 0.3 for k in kept):
            continue
        if key is not None:
            recognise([key])
            cand = line(key)
            if cand is None:
                continue
            text = cand["text"]
        if len(normalise(text)) < min_chars:
            continue
        agreed = _agreed_line(overlapping(box), n, need, min_chars)
        if agreed is not None:
            kept.append(agreed)
    for k in kept:  # how each reference reads the kept lines
        overlapping(k["box"])
    return [[ln for j in range(len(lines)) if (k, j) in read and (ln := line((k, j))) is not None]
            for k, lines in enumerate(detected)]


def line_boxes(lines: Sequence[dict[str, Any]], size: int, pad: float = 0.25) -> list[tuple[int, list[int]]]:
    """Where :func:`text_mismatch` reads the reference lines in an aligned crop of ``size`` pixels a side.

    Args:
        lines: the product's reference lines (:func:`reference_lines`), ``box`` in canonical pixels.
        size: the aligned crop's side in pixels.
        pad: margin added above and below each line, as a share of its height (half of it left and right).

    Returns:
        ``(position in lines, [x0, y0, x1, y1])`` per line read: its padded box clipped to the crop, in
        whole pixels; lines narrower or lower than 4 pixels after clipping are left out.
    """
    out = []
    for j, ln in enumerate(lines):
        x0, y0, x1, y1 = ln["box"]
        ph, pw = pad * (y1 - y0), 0.5 * pad * (y1 - y0)
        xa, ya = int(max(0, x0 - pw)), int(max(0, y0 - ph))
        xb, yb = int(min(size, x1 + pw)), int(min(size, y1 + ph))
        if xb - xa < 4 or yb - ya < 4:
            continue
        out.append((j, [xa, ya, xb, yb]))
    return out


def text_mismatch(crop: np.ndarray, lines: Sequence[dict[str, Any]], reader: TextReader,
                  pad: float = 0.25) -> tuple[float, list[dict[str, Any]]]:
    """Read the reference lines' places in an aligned crop and compare with the reference text.

    Returns:
        ``(score, details)``: the largest misspelling distance (:func:`misspelt_distance`) over confidently
        read lines (NaN when none could be read, or every line read is mostly covered), and per line
        ``{text, read, confidence, distance, box, consistent, skipped}`` (``box``: where it was read,
        :func:`line_boxes`; ``consistent``: the references read the line alike, :func:`reference_lines`;
        False for lines of an index built before it was recorded; ``skipped``: False, see
        :func:`unread_details`).
    """
    placed = line_boxes(lines, crop.shape[0], pad)
    reads = reader.recognise([crop[ya:yb, xa:xb] for _, (xa, ya, xb, yb) in placed])
    details = []
    for (j, box), (read, conf) in zip(placed, reads):
        ln = lines[j]
        dist = misspelt_distance(ln["text"], read) if conf >= MIN_CONFIDENCE else float("nan")
        details.append({"text": ln["text"], "read": read, "confidence": conf, "distance": dist, "box": box,
                        "consistent": bool(ln.get("consistent", False)), "skipped": False})
    dists = [d["distance"] for d in details if np.isfinite(d["distance"])]
    return (max(dists) if dists else float("nan")), details


def unread_details(lines: Sequence[dict[str, Any]], size: int, pad: float = 0.25) -> list[dict[str, Any]]:
    """:func:`text_mismatch` details for lines left unread because no reading of them could count: the
    structure channel sees too few changed strokes under every one of them for a misread to be kept
    (:func:`brandguard.comparison.line_support`), so the text channel would take any reading as read right.

    Returns:
        per line :func:`line_boxes` places, ``{text, read: "", confidence: 0.0, distance: 0.0, box,
        consistent, skipped: True}``: the distance the text channel takes for it (0, read right), and nothing
        read (:func:`line_reads` leaves such a line out of the misread model).
    """
    return [{"text": lines[j]["text"], "read": "", "confidence": 0.0, "distance": 0.0, "box": box,
             "consistent": bool(lines[j].get("consistent", False)), "skipped": True}
            for j, box in line_boxes(lines, size, pad)]
