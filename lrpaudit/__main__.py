"""``python -m lrpaudit`` runs the command line."""

from .cli import main

main()
