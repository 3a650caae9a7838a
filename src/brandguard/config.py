"""Typed configuration, loaded from YAML (``configs/default.yaml``) and overridable in code or on the CLI.

The resolved configuration is written next to every index and every scoring run, so a result can always
be traced back to the settings that produced it.

Example:
    >>> from brandguard.config import Config
    >>> cfg = Config().with_overrides({"localization.min_inliers": 15})
    >>> cfg.localization.min_inliers
    15
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from brandguard.errors import ConfigError

__all__ = ["BackboneConfig", "CompareConfig", "Config", "LocalizationConfig", "RuntimeConfig", "ScoringConfig",
           "load_yaml_mapping"]


@dataclass(frozen=True)
class BackboneConfig:
    """Which network embeds images.

    Attributes:
        name: a name from :func:`brandguard.backbones.list_backbones`, or ``timm:<architecture>`` with a
            checkpoint.
        checkpoint: optional local weights (``.safetensors`` preferred, or a fine-tuned run directory).
    """

    name: str = "efficientnet_lite0"
    checkpoint: str | None = None


#: the largest ``localization.surface_min_detail``: 0.8 still compares a label up to 37 degrees either side
_MAX_MIN_DETAIL = 0.8


@dataclass(frozen=True)
class LocalizationConfig:
    """Finding the product in a photo: SIFT keypoints, FAISS matching, RANSAC homography.

    Attributes:
        max_side: photos are decoded so that their long side is at most this many pixels.
        keypoint_side: long side (pixels) of the grey image a reference's keypoints are detected on (stored
            in the index: changing it means building the index again).
        query_side: long side (pixels) of the grey image a listing photo's keypoints are detected on; None
            (default): ``keypoint_side`` (see :attr:`query_detect_side`). A query-side setting: the index's
            reference keypoints stay valid, SIFT being scale invariant. SIFT's cost grows with the pixels it
            sees (OpenCV doubles the image for its first octave): 448 instead of 512 costs about a fifth less
            (60 -> 47 ms a photo) but aligns less precisely and finds fewer keypoints on small products
            (demo listings: detection at 5% FPR 77.9% -> 76.7%; scene set's small products: right product
            91.7% -> 86.1%; README "Throughput"), so it is not the default.
        query_keypoints: keypoints detected per listing photo.
        reference_keypoints: keypoints detected per reference photo.
        max_descriptors_per_product: bound on the descriptors kept per product in the index.
        ratio: Lowe ratio between the best match in a product and the best in any other product.
        candidates: products verified geometrically per photo.
        ransac_threshold: RANSAC reprojection threshold, in keypoint-image pixels.
        min_inliers: fewer geometrically consistent matches than this means "unknown product".
        canonical_size: side (pixels) of the square frame every product is compared in (large enough to
            show letters).
        full_side: photos larger than ``max_side`` are also kept at full resolution, up to this long side
            (pixels), and the product's aligned crop is taken from that copy (reduced without aliasing to
            about 1.5 ``canonical_size``), so a product is compared at the same detail whether it fills a
            640-px photo or a fifth of a 4000-px one. Decompression-bomb limits still apply.
        max_instances: instances of known products localised per photo (several units side by side,
            collage cells): after each verified instance, the photo keypoints inside it are set aside and
            the rest verified again, while enough remain. The photo's answer is its worst instance.
        min_product_side: a product whose outline measures fewer full-resolution pixels than this (square
            root of its area) is too small to judge: its crop is upsampled more than 4 times (at 96 px a
            cell of the 6-px comparison grid covers 1.5 photo pixels: no stroke detail), so a
            ``counterfeit`` verdict is lowered to ``suspicious`` with the note ``product only N px: too
            small to judge``, and such photos are left out of ``calibrate``. Measured on the scene set's
            thumbnail and small-product photos (products of 112-290 px, JPEG q 35-55): authentic ones
            showed no raised raw score (the highest 1.7 decades, at 193 px), so the rule starts below them.
        unknown_product_side: below this many pixels (upsampled more than 8 times) the product is far too
            small to compare: it is not compared and the verdict is ``unknown``, with the note
            ``<brand>/<product> found but only N px: far too small to compare``.
        curved_surfaces: look for a label wrapped on a bottle, can or jar, which one homography cannot
            align (it fits the label's middle; the edges land too far out and the rows bend): a direct
            search over a cylinder's curvature on column profiles of the aligned crop against the product's
            first reference (:func:`brandguard.localization.search_cylinder`, a few milliseconds; flat
            packages stop here), then the cylinder refined on dense optical flow
            (:func:`brandguard.localization.fit_surface`, about 0.1 s a curved photo), the crop taken through
            it and compared only where the label faces the camera enough (``surface_min_detail``). The
            prediction notes "curved label". On the scene set's bottle photos (demo photo model): honest
            bottles flagged 75% -> 25%, AUROC 0.68 -> 0.75 (README, "Scenes of real listing photos").
        surface_min_detail: on a curved alignment, canonical pixels the photo shows at less than this share
            of the detail it shows the flattest part at (a label's edges turning away) are not compared.
    """

    max_side: int = 640
    keypoint_side: int = 512
    query_side: int | None = None
    query_keypoints: int = 800
    reference_keypoints: int = 1500
    max_descriptors_per_product: int = 3000
    ratio: float = 0.85
    candidates: int = 3
    ransac_threshold: float = 4.0
    min_inliers: int = 36
    canonical_size: int = 384
    full_side: int = 4096
    max_instances: int = 4
    min_product_side: int = 96
    unknown_product_side: int = 48
    curved_surfaces: bool = True
    surface_min_detail: float = 0.4

    def __post_init__(self) -> None:
        if not isinstance(self.curved_surfaces, bool):
            raise ConfigError(f"localization.curved_surfaces must be true or false, got {self.curved_surfaces!r}")
        d = self.surface_min_detail
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d <= _MAX_MIN_DETAIL:
            raise ConfigError(f"localization.surface_min_detail must be a number in 0..{_MAX_MIN_DETAIL} (0.4: the "
                              f"label up to 66 degrees from the line facing the camera; higher compares little of "
                              f"a curved label), got {d!r}")
        q = self.query_side
        if q is not None and (isinstance(q, bool) or not isinstance(q, int) or q < 64):
            raise ConfigError(f"localization.query_side must be null (as keypoint_side) or a whole number of pixels, "
                              f"at least 64, got {q!r}")

    @property
    def query_detect_side(self) -> int:
        """Long side (pixels) a listing photo's keypoints are detected at: ``query_side``, else ``keypoint_side``."""
        return int(self.query_side) if self.query_side is not None else int(self.keypoint_side)


@dataclass(frozen=True)
class CompareConfig:
    """Local comparison of an aligned photo with its product's references.

    Attributes:
        max_references_per_product: bound on the aligned references kept in a product's bank.
        cell: size (canonical pixels) of the cells the heatmap and statistics are computed on.
        references_compared: compare a photo with this many of its product's references, those closest
            to it overall (0: all).
        top_fraction: a channel's score is the mean of this fraction of its highest cells.
        margin: cells along each edge of the canonical frame that are not scored: a few pixels of alignment
            error show the scene behind the package there (a table, a hand), which no reference shows.
            3 cells = 18 px of the 384-px frame per side (see the README for what it changed).
        text_check: read the wordmark and product text with OCR and compare it with the references'
            (``auto``: on when the ``ocr`` extra is installed; ``on``; ``off``). Calibration counts a misread by
            how many authentic photos read as far off (see ``ChannelFusion``), so one misread of a short
            authentic wordmark no longer outscores every counterfeit. On the demo listings it lifts misspelt
            wordmarks from 0.91 to 0.955 AUROC and costs about a quarter of the scoring throughput.
        simulated_views: simulated listing photos made at indexing time (perspective, light, colour cast,
            blur, noise, JPEG; :mod:`brandguard.listing_conditions`) and compared like listing photos: the
            authentic variation and the calibration in force until ``calibrate`` runs. Each view of a product
            gets about 4 times this many (12 at the default 3), spread over its references: at least two (one
            when this is 1) and at most twice this many per reference
            (:func:`brandguard.index.simulated_photos_per_reference`). 0 or less: none, the references'
            leave-one-out comparisons instead (studio photos: far too strict for listings).
        support_margin: a photo is compared only inside the convex hull of its inlier keypoints grown by
            this many canonical pixels (:func:`brandguard.localization.support_mask`): beyond its matches a
            homography extrapolates (a label curving away on a bottle, the other face of a carton, a hand).
            0 (default): compare the whole frame. Off by default because edits that destroy keypoint
            matches (a look-alike logo, a missing part, a moved logo) then fall outside the hull: with 48
            px, demo detection at 5% FPR fell 77.1% -> 67.1% (AUROC 0.930 -> 0.915).
        overlay_discount: scale the structure map down when its changes are spread over the whole package in
            thin strokes, as a seller's watermark tiled over the photo does
            (:func:`brandguard.mismatch.discount_overlay`). Off by default: it was decided on the demo photo
            model's watermark scene, and on the second photo model it fired on gross counterfeit edits
            without any watermark (their changes are spread because authentic variation is underestimated
            there), turning them `authentic`.
        seller_overlays: where a photo would be flagged, look for a seller's overlay (a shop name tiled over
            the photo) among what changed: changes that repeat beyond the package under translations the
            background repeats under too (:func:`brandguard.overlays.find_overlay`) are filled in and left out
            of the structure channel, and the photo is compared again. Print on the package does not continue
            beyond it, so an extra mark on a counterfeit stays.
        occluders: look for something on top of the package that crosses its outline (a finger, a price
            sticker stuck across the edge, a pen): patches that depart from the references and whose colour
            continues beyond the package (:func:`brandguard.occluders.find_occluder`) are discounted in every
            channel and the photo is compared again. Print ends at the package's outline, so an extra mark
            printed on a counterfeit stays.
        price_stickers: where a photo would be flagged (and on every calibration photo), read what stands out
            of the references with the OCR (the ``ocr`` extra; nothing is read without it or with
            ``text_check: off``): a patch that reads as a price (``12.99``, ``$12``) is a shop's or seller's
            price sticker, left out in every channel, and the photo is compared again
            (:func:`brandguard.stickers.find_price_sticker`). A counterfeit's extra mark that does not read as a
            price stays.
        white_balance: the cells a photo's colours are balanced on before its colour is compared, those the
            reference shows neutral (grey, white): ``product`` (default) only within the product's scored
            region; ``frame`` anywhere in the canonical frame, where a studio reference's white margin can face
            the listing's own background (a green table balanced against it doubled every channel and lit a
            whole package up in colour). Indexes built before ``product`` existed load with ``frame``, the
            comparison their statistics were fitted on; rebuild them to change it.
    """

    max_references_per_product: int = 16
    cell: int = 6
    references_compared: int = 3
    top_fraction: float = 0.01
    margin: int = 3
    text_check: str = "auto"
    simulated_views: int = 3
    support_margin: int = 0
    overlay_discount: bool = False
    seller_overlays: bool = True
    occluders: bool = True
    price_stickers: bool = True
    white_balance: str = "product"

    def __post_init__(self) -> None:
        if not isinstance(self.margin, int) or self.margin < 0:
            raise ConfigError(f"compare.margin must be a whole number of cells >= 0, got {self.margin!r}")
        for flag in ("overlay_discount", "seller_overlays", "occluders", "price_stickers"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"compare.{flag} must be true or false, got {getattr(self, flag)!r}")
        # YAML 1.1 reads an unquoted ``off``/``on`` as a boolean: accept it as the word it was written as
        if isinstance(self.text_check, bool):
            object.__setattr__(self, "text_check", "on" if self.text_check else "off")
        if self.text_check not in ("auto", "on", "off"):
            raise ConfigError(f"compare.text_check must be auto, on or off, got {self.text_check!r}")
        if self.white_balance not in WHITE_BALANCES:
            raise ConfigError(f"compare.white_balance must be {' or '.join(WHITE_BALANCES)}, got {self.white_balance!r}")


@dataclass(frozen=True)
class ScoringConfig:
    """Turning raw mismatch into verdicts.

    Attributes:
        review_fpr: share of authentic photos allowed above the ``suspicious`` threshold.
        takedown_fpr: share of authentic photos allowed above the ``counterfeit`` threshold.
    """

    review_fpr: float = 0.05
    takedown_fpr: float = 0.01


#: the values ``compare.white_balance`` takes (see :class:`CompareConfig`)
WHITE_BALANCES = ("product", "frame")

#: the values ``runtime.geometry`` takes (:mod:`brandguard.accel`)
GEOMETRIES = ("auto", "opencv", "kornia")


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the network runs.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
        precision: ``auto`` (bfloat16 autocast where the CPU supports it, float16 on CUDA), ``fp32``,
            ``bf16`` or ``fp16``.
        batch_size: photos embedded per forward pass.
        workers: threads for decoding and keypoint detection.
        geometry: where scoring's keypoints, RANSAC and warps run (:mod:`brandguard.accel`): ``auto``
            (kornia on a CUDA device when the ``gpu`` extra is installed, else OpenCV), ``opencv`` or
            ``kornia`` (on the network's device; on a CPU only to check the GPU path).
        cached_products: products whose comparison banks and statistics a loaded index keeps in memory at
            most (least recently matched are dropped first; the rest stay in the memory-mapped
            ``arrays.safetensors``, see :mod:`brandguard.arraystore`). About 3 MB each.
    """

    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    workers: int = 2
    cached_products: int = 128
    geometry: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"runtime.batch_size (--batch-size) must be a whole number >= 1, got {self.batch_size!r}")
        if isinstance(self.cached_products, bool) or not isinstance(self.cached_products, int) \
                or self.cached_products < 1:
            raise ConfigError(f"runtime.cached_products must be a whole number >= 1, got {self.cached_products!r}")
        if self.geometry not in GEOMETRIES:
            raise ConfigError(f"runtime.geometry (--geometry) must be auto, opencv or kornia, got {self.geometry!r}")


@dataclass(frozen=True)
class Config:
    """The whole configuration of an index and of the detector that uses it."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    localization: LocalizationConfig = field(default_factory=LocalizationConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON/YAML-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Config:
        """Build from a nested mapping; unknown keys raise :class:`ConfigError` naming the known ones."""
        return _build(cls, data or {}, "config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        """Load ``path`` (YAML)."""
        return cls.from_dict(load_yaml_mapping(path, "config file", "configs/default.yaml"))

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """Return a copy with dotted keys replaced, e.g. ``{"runtime.batch_size": 8}``."""
        data = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            if section not in data or not name or name not in data[section]:
                raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(_dotted_keys(data))}")
            data[section][name] = value
        return Config.from_dict(data)

    def save_yaml(self, path: str | Path) -> None:
        """Write the resolved configuration as YAML."""
        import yaml

        from brandguard.storage import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_yaml_mapping(path: str | Path, what: str, example: str) -> dict[str, Any]:
    """The mapping a YAML file holds, or a :class:`ConfigError` saying what was expected."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist; pass a YAML file such as {example}")
    try:
        with p.open("r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{what} {p} is not readable YAML (UTF-8): {reason}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p} must hold a mapping at its top level, got {type(data).__name__}")
    return data


def _dotted_keys(data: Mapping[str, Any]) -> list[str]:
    return [f"{s}.{k}" for s, sub in data.items() for k in sub]


def _build(cls: Any, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; expected some of {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = known[name].default_factory() if known[name].default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        if default is not None and is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)
