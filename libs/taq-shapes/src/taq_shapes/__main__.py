"""`taq-shapes` / `train-tiny-shapes` and `python -m taq_shapes`: the optimised BLAS first,
then the command."""

import sys

from taq_runtime.launcher import launch


def main() -> int:
    return launch("taq_shapes.cli:main")


def train() -> int:
    return launch("taq_shapes.train:main")


if __name__ == "__main__":
    sys.exit(main())
