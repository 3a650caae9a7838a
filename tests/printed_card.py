"""Helpers shared by the tests of comparisons over a printed card (test_comparison, test_overlays,
test_occluders): the card, and predictions with a setting switched for a while."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

#: the canonical frame's side the card is drawn at
CARD_SIDE = 384


def card() -> np.ndarray:
    """``(CARD_SIDE, CARD_SIDE, 3)`` uint8: a printed card (coloured band, logo, lines of text, barcode)."""
    img = np.full((192, 192, 3), 232, np.uint8)
    img[:, :40] = (30, 90, 160)
    cv2.circle(img, (110, 60), 26, (200, 30, 40), -1)
    cv2.putText(img, "BRAND", (60, 120), cv2.FONT_HERSHEY_DUPLEX, 1.2, (20, 20, 20), 2)
    cv2.putText(img, "fresh taste 1L", (60, 150), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 40), 1)
    for x in range(120, 170, 4):
        img[160:182, x:x + 2] = 10
    return cv2.resize(img, (CARD_SIDE, CARD_SIDE), interpolation=cv2.INTER_LINEAR)


def predict_with(detector: Any, photos: Sequence[Any], overrides: dict[str, Any]) -> list[Any]:
    """``detector.predict_batch(photos)`` with ``overrides`` (``{"compare.occluders": False}``) in force for the
    call; the detector's config is restored afterwards."""
    saved = detector.config
    try:
        detector.config = saved.with_overrides(overrides)
        return detector.predict_batch(photos)
    finally:
        detector.config = saved


def camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``img`` photographed: a little blur, exposure within 5% and sensor noise (uint8)."""
    out = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.6, 1.0)) * rng.uniform(0.95, 1.05)
    return np.clip(out + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)


def placement(width: int, height: int, scale: float, angle: float) -> np.ndarray:
    """Canonical -> photo pixels: the card turned by ``angle`` degrees, ``scale`` times its size, centred in a
    ``width`` x ``height`` photo."""
    a = np.deg2rad(angle)
    R = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = np.array([width / 2, height / 2]) - R @ np.array([CARD_SIDE / 2, CARD_SIDE / 2])
    return np.array([[R[0, 0], R[0, 1], t[0]], [R[1, 0], R[1, 1], t[1]], [0, 0, 1.0]])


def card_bank(cell: int) -> tuple[Any, Any]:
    """``(bank, stats)``: four photographed copies of the card as a product's references, and their
    leave-one-out statistics (seeded)."""
    from brandguard.mismatch import ProductBank, fit_normal_stats, make_view

    rng = np.random.default_rng(3)
    views = [make_view(camera(card(), rng), np.ones((CARD_SIDE, CARD_SIDE), bool), cell) for _ in range(4)]
    bank = ProductBank.from_views(views)
    return bank, fit_normal_stats(bank, cell, k=0, margin=3)[0]
