"""Training pairs made from authentic reference photos alone.

The references are first aligned exactly as the index aligns them (SIFT keypoints, RANSAC, one canonical
frame per product; :class:`brandguard.index.ReferenceIndex`), so two references of a product show the same
part of the package at the same place. A training pair is two such photos of one product: the first is
the "reference", the second plays the listing photo. Both get photo augmentations (lighting, colour cast,
blur, noise, JPEG) and the second a small random misalignment; with probability ``edit_probability`` the
second also gets a counterfeit-style edit (:mod:`brandguard.training.edits`) and the mask of what it
changed, and with probability ``occluder_probability`` something on top of it (a finger, a price sticker,
glare: :mod:`brandguard.training.occluders`). No counterfeit example is needed.

Example:
    >>> from brandguard.training.data import AlignedReferences
    >>> refs = AlignedReferences.from_folder("refs/")          # doctest: +SKIP
    >>> batch = refs.batch(np.random.default_rng(0), 8, crop=192, edit_probability=0.5)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from brandguard.errors import DataError
from brandguard.training.edits import random_photo_edit
from brandguard.training.occluders import add_occluder

__all__ = ["AlignedReferences", "PairBatch", "photo_augment"]


@dataclass
class PairBatch:
    """One step's pairs (``P`` pairs of ``C x C`` windows and the whole frames, uint8 RGB).

    Attributes:
        ref, query: ``(P, C, C, 3)`` windows of the reference photo and of the listing-like photo.
        ref_valid, query_valid: ``(P, C, C)`` bool, pixels inside each photo.
        changed: ``(P, C, C)`` bool, where an edit changed the query's print.
        occluded: ``(P, C, C)`` bool, where an occluder (:mod:`brandguard.training.occluders`) covers the query.
        ref_full, query_full: ``(P, G, G, 3)`` whole aligned frames resized for the global vector.
        labels: ``(P,)`` product ids.
        edited: ``(P,)`` bool, the query carries an edit.
        edit_names: the edit of each pair ("" for none).
    """

    ref: np.ndarray
    query: np.ndarray
    ref_valid: np.ndarray
    query_valid: np.ndarray
    changed: np.ndarray
    occluded: np.ndarray
    ref_full: np.ndarray
    query_full: np.ndarray
    labels: np.ndarray
    edited: np.ndarray
    edit_names: list[str]


def _albumentations() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A


_PIPELINE: Any = None


def _pipeline() -> Any:
    global _PIPELINE
    if _PIPELINE is None:
        A = _albumentations()
        _PIPELINE = A.Compose([
            A.ColorJitter(brightness=(0.75, 1.25), contrast=(0.75, 1.25), saturation=(0.75, 1.25),
                          hue=(-0.02, 0.02), p=0.9),
            A.RandomGamma(gamma_limit=(80, 125), p=0.5),
            A.OneOf([A.MotionBlur(blur_limit=(3, 5), p=1.0), A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.0), p=1.0),
                     A.Defocus(radius=(1, 2), alias_blur=(0.1, 0.3), p=1.0)], p=0.5),
            A.OneOf([A.GaussNoise(std_range=(0.01, 0.035), p=1.0),
                     A.ISONoise(color_shift=(0.01, 0.04), intensity=(0.1, 0.4), p=1.0)], p=0.6),
            A.ImageCompression(quality_range=(50, 95), p=0.9),
        ])
    return _PIPELINE


def photo_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photometric augmentation of an aligned photo: a smooth lighting gradient and a colour cast (what
    differs between authentic photos), then albumentations' jitter, blur, noise and JPEG."""
    h, w = img.shape[:2]
    x = img.astype(np.float32)
    if rng.random() < 0.7:  # light falling off across the package
        gx, gy = rng.uniform(-0.25, 0.25, 2)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = 1.0 + gx * (xx / w - 0.5) + gy * (yy / h - 0.5)
        x *= ramp[..., None]
    if rng.random() < 0.6:  # white balance of another camera or light
        x *= rng.uniform(0.88, 1.12, 3).astype(np.float32)
    out = np.clip(x, 0, 255).astype(np.uint8)
    pipe = _pipeline()
    pipe.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    return np.ascontiguousarray(pipe(image=out)["image"])


def _jitter(img: np.ndarray, valid: np.ndarray, rng: np.random.Generator, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """Move the four corners by up to ``amount`` of the side: the misalignment a RANSAC fit leaves."""
    S = img.shape[0]
    src = np.float32([[0, 0], [S, 0], [S, S], [0, S]])
    dst = (src + rng.uniform(-amount, amount, (4, 2)) * S).astype(np.float32)
    H = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(img, H, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    v = cv2.warpPerspective(valid.astype(np.uint8), H, (S, S), flags=cv2.INTER_NEAREST, borderValue=0) > 0
    return out, v


class AlignedReferences:
    """Reference photos warped into their product's canonical frame, grouped by product.

    Attributes:
        products: ``brand/product`` keys.
        crops: per product, ``(n, S, S, 3)`` uint8 aligned photos.
        valids: per product, ``(n, S, S)`` bool.
        paths: per product, the reference paths.
    """

    def __init__(self, products: list[str], crops: list[np.ndarray], valids: list[np.ndarray],
                 paths: list[list[str]]) -> None:
        self.products, self.crops, self.valids, self.paths = products, crops, valids, paths

    def __len__(self) -> int:
        return len(self.products)

    @property
    def n_photos(self) -> int:
        return int(sum(len(c) for c in self.crops))

    @classmethod
    def from_index(cls, index: Any, canonical_size: int | None = None, max_per_product: int = 16,
                   min_per_product: int = 2) -> AlignedReferences:
        """Warp the aligned references of a :class:`~brandguard.index.ReferenceIndex` again from their paths.

        Raises:
            DataError: fewer than two products, or a product with fewer than ``min_per_product`` aligned
                photos (named, with what to do).
        """
        from brandguard.images import load_image
        from brandguard.localization import warp_to_canonical

        S0 = index.config.localization.canonical_size
        S = canonical_size or S0
        scale = np.diag([S0 / S, S0 / S, 1.0])
        keys, crops, valids, paths, short = [], [], [], [], []
        # a product's views (references that do not align with each other) are classes of their own; a view
        # too small to pair is left out when another view of its product is large enough
        enough = {m.key for m in index.products
                  if sum(r.aligned and r.H is not None for r in m.refs) >= min_per_product}
        for m in index.products:
            aligned = [r for r in m.refs if r.aligned and r.H is not None][:max_per_product]
            if len(aligned) < min_per_product:
                if m.key not in enough:
                    short.append(f"{m.key} ({len(aligned)} aligned of {len(m.refs)})")
                continue
            cs, vs = [], []
            for r in aligned:
                img = load_image(r.path, max_side=index.config.localization.max_side)
                c, v = warp_to_canonical(img, np.asarray(r.H) @ scale, S)
                cs.append(c)
                vs.append(v)
            keys.append(m.key if m.view == 0 else f"{m.key}#view{m.view}")
            crops.append(np.stack(cs))
            valids.append(np.stack(vs))
            paths.append([r.path for r in aligned])
        if short:
            raise DataError(
                f"training needs at least {min_per_product} reference photos per product that align with each "
                f"other (same package, seen whole); too few for: {', '.join(short[:8])}"
                f"{' ...' if len(short) > 8 else ''}. Add photos of these products or remove them from the folder")
        if len(keys) < 2:
            raise DataError(f"training needs at least 2 products (other products are negatives); got {len(keys)}")
        return cls(keys, crops, valids, paths)

    @classmethod
    def from_folder(cls, references: str | Path, config: Any = None, canonical_size: int | None = None,
                    max_per_product: int = 16, min_per_product: int = 2, progress: bool = False) -> AlignedReferences:
        """Align a reference folder (or CSV manifest) with a pretrained index, then see :meth:`from_index`."""
        from brandguard.index import ReferenceIndex

        index = ReferenceIndex.build(references, config, progress=progress)
        return cls.from_index(index, canonical_size, max_per_product, min_per_product)

    def batch(self, rng: np.random.Generator, pairs: int, crop: int, global_size: int = 224,
              edit_probability: float = 0.5, occluder_probability: float = 0.0, jitter: float = 0.012,
              edit_weights: Mapping[str, float] | None = None) -> PairBatch:
        """Draw ``pairs`` training pairs (see the module docstring); ``edit_weights`` as in
        :func:`brandguard.training.edits.random_photo_edit`."""
        S = self.crops[0].shape[1]
        n = len(self.products)
        prods = rng.choice(n, size=pairs, replace=pairs > n)
        out: dict[str, list[Any]] = {k: [] for k in ("ref", "query", "ref_valid", "query_valid", "changed", "occluded",
                                                     "ref_full", "query_full", "edited", "edit_names")}
        for p in prods:
            k = len(self.crops[p])
            i, j = rng.choice(k, size=2, replace=False) if k >= 2 else (0, 0)
            a, va = self.crops[p][i], self.valids[p][i]
            b, vb = _jitter(self.crops[p][j], self.valids[p][j], rng, jitter)
            changed = np.zeros((S, S), bool)
            name = ""
            if rng.random() < edit_probability:
                other = int(rng.choice([q for q in range(n) if q != p]))
                donor = self.crops[other][int(rng.integers(len(self.crops[other])))]
                try:
                    e = random_photo_edit(b, vb, rng, donor=donor, weights=edit_weights)
                    b, changed, name = e.image, e.mask & vb, e.name
                except DataError:
                    pass
            occluded = np.zeros((S, S), bool)
            if rng.random() < occluder_probability:
                b, occluded = add_occluder(b, vb, rng)
                changed &= ~occluded
            a, b = photo_augment(a, rng), photo_augment(b, rng)
            # a window of the frame at full resolution, centred near the edit or the occluder if any
            focus = changed if changed.any() and (not occluded.any() or rng.random() < 0.5) else occluded
            if focus.any() and rng.random() < 0.9:
                ys, xs = np.nonzero(focus)
                t = int(rng.integers(len(ys)))
                cy, cx = ys[t], xs[t]
                y0 = int(np.clip(cy - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, S - crop))
                x0 = int(np.clip(cx - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, S - crop))
            else:
                y0, x0 = (int(v) for v in rng.integers(0, S - crop + 1, 2))
            win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
            out["ref"].append(a[win])
            out["query"].append(b[win])
            out["ref_valid"].append(va[win])
            out["query_valid"].append(vb[win])
            out["changed"].append(changed[win])
            out["occluded"].append(occluded[win])
            out["ref_full"].append(cv2.resize(a, (global_size, global_size), interpolation=cv2.INTER_AREA))
            out["query_full"].append(cv2.resize(b, (global_size, global_size), interpolation=cv2.INTER_AREA))
            out["edited"].append(bool(name) and bool(changed.any()))
            out["edit_names"].append(name)
        return PairBatch(*(np.stack(out[k]) for k in ("ref", "query", "ref_valid", "query_valid", "changed",
                                                       "occluded", "ref_full", "query_full")),
                         labels=prods.astype(np.int64), edited=np.array(out["edited"]), edit_names=out["edit_names"])
