"""The ``nasseg`` command (:func:`nasseg.shell.cli.main.main`): every argparse parser of the project
lives in this package, one module per command group."""
