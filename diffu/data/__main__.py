"""``python -m diffu.data --src DIR``: rebuild the shipped Fashion-MNIST subset from the original idx files."""

import argparse
from pathlib import Path

from . import build_fashion_mnist_subset

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--src", default="/usr/share/datasets/fashion-mnist", help="folder with the four .gz idx files")
parser.add_argument("--out", default=str(Path(__file__).parent / "fashion_mnist_subset.npz"))
args = parser.parse_args()
print(build_fashion_mnist_subset(args.src, args.out))
