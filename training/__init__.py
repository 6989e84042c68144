"""Training and evaluation of SLER-IR: datasets, the two training phases, evaluation tables, baselines.

The ``slerir train`` and ``slerir evaluate`` command lines are in ``training.commands``; configs live in
``training/configs``. Nothing here runs at import.
"""
