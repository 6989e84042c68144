"""The errors SLER-IR raises for input a user can fix, in a module that imports nothing heavy.

Each is a ``ValueError``, so callers that only care about bad input can catch that; the napari plugin imports
this module (not torch) to tell them apart from bugs and show the message.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file or mapping that cannot be used, with the reason."""


class WeightsError(ValueError):
    """A weights file that is missing, unreadable or does not fit its config."""


class ImageError(ValueError):
    """An array or file that cannot be restored, with the reason."""


class ExtractorError(ValueError):
    """An extractor that cannot be built: unknown model or missing or unreadable weights."""
