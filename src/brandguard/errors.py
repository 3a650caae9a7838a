"""Typed errors raised at brandguard's public boundary.

Every error says what was expected, what came, and what to do about it. Catch
:class:`BrandguardError` to handle all of them.
"""

from __future__ import annotations

__all__ = [
    "BrandguardError",
    "ConfigError",
    "DataError",
    "DeviceError",
    "ImageLoadError",
    "IndexCompatibilityError",
    "IndexCorruptError",
    "MissingExtraError",
    "UnknownBackboneError",
    "WeightsError",
]


class BrandguardError(Exception):
    """Base class of every error brandguard raises on purpose."""


class ImageLoadError(BrandguardError, ValueError):
    """An input could not be read as an RGB image (empty, truncated, not an image, too large...)."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message if source is None else f"{source}: {message}")
        self.reason = message
        self.source = source


class IndexCompatibilityError(BrandguardError):
    """An index was opened with a backbone, checkpoint or library version it was not built with."""


class IndexCorruptError(BrandguardError):
    """An index directory is missing files, or a file's checksum does not match its manifest."""


class UnknownBackboneError(BrandguardError, KeyError):
    """A backbone name is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class WeightsError(BrandguardError):
    """Pretrained or user weights are missing or do not fit the architecture."""


class DataError(BrandguardError, ValueError):
    """A reference folder, manifest or labels file does not have the expected layout."""


class ConfigError(DataError):
    """A configuration value (YAML file, override, argument) has the wrong type or is out of range."""


class DeviceError(BrandguardError, RuntimeError):
    """The requested device (``cuda``, ``cuda:1``...) is not available on this machine."""


class MissingExtraError(BrandguardError, ImportError):
    """An optional extra a setting needs is not installed; the message names the pip extra."""
