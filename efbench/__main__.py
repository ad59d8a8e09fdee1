"""``python -m efbench`` is the ``efbench`` command."""

from efbench.app.cli import main

main()
