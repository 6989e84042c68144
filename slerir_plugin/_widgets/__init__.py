"""The plugin's dock widgets. Importing them is cheap: torch and the model load when a job first runs."""

from slerir_plugin._widgets.adapt import AdaptWidget
from slerir_plugin._widgets.degradation_map import DegradationMapWidget
from slerir_plugin._widgets.restore import RestoreWidget
from slerir_plugin._widgets.routes import RoutesWidget

__all__ = ["AdaptWidget", "DegradationMapWidget", "RestoreWidget", "RoutesWidget"]
