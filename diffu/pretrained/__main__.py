"""``python -m diffu.pretrained list`` prints the shipped models; ``python -m diffu.pretrained train NAME …`` retrains
one (:func:`diffu.recipes.main`; ``train -h`` lists its options). Listing imports no training code."""

from __future__ import annotations

import argparse
import sys

from . import available, info


def main(argv=None):
    """Run the ``list`` or ``train`` command (``argv``, a list of strings, defaults to ``sys.argv[1:]``)."""
    if argv is not None and (isinstance(argv, str) or not all(isinstance(a, str) for a in argv)):
        raise TypeError(f"argv must be a list of strings or None, got {argv!r:.80}")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        from ..recipes import main as train_main  # the training code is imported only to train

        return train_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m diffu.pretrained", description="Shipped weights of diffu.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list shipped models")
    sub.add_parser("train", help="retrain a shipped model from scratch (see: train -h)")
    p.parse_args(argv)
    for name in available():
        e = info(name)
        print(f"{name:26s} {e['parameters']:>9,d} params  sha256 {e['sha256'][:12]}…  retrain: {e['command']}")


if __name__ == "__main__":
    main()
