"""fishaug: compare data augmentations for small, low-quality fish-species image sets."""

from fishaug.errors import ConfigError, DataError

__all__ = ["ConfigError", "DataError"]
__version__ = "0.1.0"
