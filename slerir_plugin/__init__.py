"""SLER-IR's napari plugin: Restore, Routes and Degradation map widgets, and degraded sample images.

napari finds it through the ``napari.manifest`` entry point (``slerir_plugin:napari.yaml``). The widgets
only display and collect settings; the work runs in :mod:`slerir_core` inside thread workers, and torch
and the model are imported on the first job, not when napari starts.
"""

__version__ = "0.1.0"
