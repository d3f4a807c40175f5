"""The ``broadcaster`` command line: ``app`` (the typer app and ``main``), ``options`` and ``output`` (what every
command shares), and one module per command group, each writing and reading through broadcaster.service."""
