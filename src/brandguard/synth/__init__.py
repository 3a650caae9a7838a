"""Synthetic, deterministic demo and test data on real brand artwork.

Real logos (Simple Icons, CC0; see ``assets/LICENSE-simple-icons.md``) are placed on invented packaging
(:func:`make_design`, :func:`render_package`), optionally altered the way counterfeiters alter them
(:data:`EDITS`), and photographed into studio reference shots or hard marketplace listing photos
(:func:`photograph`). :func:`make_demo_dataset` writes a whole labelled data set. Two photo models
(:data:`PHOTO_MODELS`) take the photos: ``demo``, which designs are decided on, and ``studio-casual``
(another photographer's packshots and casual phone listings), which is only read to check.

This package has dependencies the core library does not need (matplotlib for its fonts, svg.path,
albumentations, scikit-image's sample photos when present); the core never imports it.

Example:
    >>> import numpy as np
    >>> from brandguard.synth import EDITS, list_brands, make_design, photograph, render_package
    >>> design = make_design(list_brands("demo")[0], 0, seed=0)
    >>> fake = EDITS["mirrored_logo"](design, "subtle", np.random.default_rng(0))
    >>> photo, quad = photograph(render_package(fake, 0.75), np.random.default_rng(0), "listing")
    >>> photo.shape[2], quad.shape
    (3, (4, 2))
"""

from __future__ import annotations

from .artwork import ARTWORK_POOLS, get_icon, list_brands
from .dataset import DemoDataset, make_demo_dataset, make_validation_set, product_designs
from .design import LogoSpec, MarkSpec, PackageDesign, TextSpec, make_design, render_package
from .edits import EDITS, STRENGTHS, apply_edit
from .photo import PHOTO_STYLES, photograph
from .photo_models import PHOTO_MODELS, PhotoModel, Shot, get_photo_model

__all__ = [
    "ARTWORK_POOLS",
    "EDITS",
    "PHOTO_MODELS",
    "PHOTO_STYLES",
    "STRENGTHS",
    "DemoDataset",
    "LogoSpec",
    "MarkSpec",
    "PackageDesign",
    "PhotoModel",
    "Shot",
    "TextSpec",
    "apply_edit",
    "get_icon",
    "get_photo_model",
    "list_brands",
    "make_demo_dataset",
    "make_design",
    "make_validation_set",
    "photograph",
    "product_designs",
    "render_package",
]
