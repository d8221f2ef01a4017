"""Exceptions raised for bad configuration or bad input data."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and the fix."""


class DataError(ValueError):
    """Input data (manifest, images, videos, split) is missing, unreadable or inconsistent."""
