"""``python -m qhybrid``: the same as the ``qhybrid`` command."""

from qhybrid.cli import main

main()
