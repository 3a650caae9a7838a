"""brandguard: catch counterfeit products in marketplace listing photos.

Authentic reference photos go into a :class:`ReferenceIndex`; a :class:`Detector` finds the product a
listing photo shows, compares it locally with that product's references and returns a
:class:`Prediction` (verdict, calibrated score, matched references, heatmap).

Example:
    >>> import brandguard as bg
    >>> index = bg.build_index("refs/")           # doctest: +SKIP
    >>> index.save("idx/")                         # doctest: +SKIP
    >>> det = bg.load("idx/")                      # doctest: +SKIP
    >>> det.predict("listing.jpg").verdict         # doctest: +SKIP
    'counterfeit'

Importing brandguard loads no model and touches no network; heavy modules load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Config",
    "Detector",
    "Match",
    "Prediction",
    "ReferenceIndex",
    "__version__",
    "build_index",
    "load",
    "load_image",
    "predict",
]

if TYPE_CHECKING:  # pragma: no cover
    from brandguard.config import Config
    from brandguard.detector import Detector, Match, Prediction, build_index, load, predict
    from brandguard.images import load_image
    from brandguard.index import ReferenceIndex

_LAZY = {
    "build_index": "brandguard.detector", "load": "brandguard.detector", "predict": "brandguard.detector",
    "Detector": "brandguard.detector", "Prediction": "brandguard.detector", "Match": "brandguard.detector",
    "ReferenceIndex": "brandguard.index", "Config": "brandguard.config", "load_image": "brandguard.images",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'brandguard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
