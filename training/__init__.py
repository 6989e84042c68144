"""Training and evaluation of SLER-IR: datasets, the two-stage training loop, evaluation tables, baselines.

``slerir train`` runs ``training.train`` and ``slerir evaluate`` runs ``training.evaluate``; configs live in
``training/configs``. Nothing here runs at import.
"""
