"""Image arrays and files, one idea per module.

* ``layout``: what each axis of an array is and how its channels reach the model (``Layout``).
* ``scaling``: raw values to the model's [0, 1] and back (``Scaling``).
* ``files``: reading and atomic writing of TIFF, PNG and JPEG files with their calibration (``ImageFile``).
"""
