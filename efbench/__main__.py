"""``python -m efbench`` is the ``efbench`` command."""

from efbench.app.entry import efbench

efbench()
