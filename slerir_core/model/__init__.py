"""The SLER-IR network and its parts (see ``slerir.py`` for the whole)."""

from slerir_core.model.parameters import parameter_counts
from slerir_core.model.slerir import ROUTING_MODES, SLERIR

__all__ = ["ROUTING_MODES", "SLERIR", "parameter_counts"]
