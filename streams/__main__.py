"""``python -m streams`` is the ``coordwatch`` command."""

from streams.cli import main

main()
