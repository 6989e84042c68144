"""The errors SLER-IR raises for input a user can fix, in a module that imports nothing heavy.

Each is a ``ValueError``, so callers that only care about bad input can catch that; the napari plugin imports
this module (not torch) to tell them apart from bugs and show the message. ``first_line`` quotes another
library's error inside one of these.
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


def first_line(err: BaseException) -> str:
    """The first line of an error's message, or its type's name when the message is empty.

    Libraries (torch, Pillow, tifffile, CUDA backends) raise messages that span paragraphs; a one-line reason
    fits into SLER-IR's own message.
    """
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
