"""Subcommands of the ``slerir`` command line (see ``slerir_core.cli``)."""
