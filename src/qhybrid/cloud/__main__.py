"""``python -m qhybrid.cloud``: run the emulated quantum cloud."""

from qhybrid.cloud.main import main

if __name__ == "__main__":
    raise SystemExit(main())
