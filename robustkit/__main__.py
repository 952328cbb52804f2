"""``python -m robustkit``: the command line."""

from robustkit.app.cli import main

main()
