"""``python -m fastffnn`` and the ``fastffnn`` console script: the command line of ``fastffnn.cli``."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
