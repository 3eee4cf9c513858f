"""``python -m diffu.bench``: see :mod:`diffu.bench.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
