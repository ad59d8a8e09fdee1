"""``python -m efbench`` is the ``efbench`` command."""

from efbench.cli import main

main()
