"""`taq-bench` and `python -m taq_bench`: the optimised BLAS first, then the command."""

import sys

from taq_runtime.launcher import launch


def main() -> int:
    return launch("taq_bench.cli:main")


if __name__ == "__main__":
    sys.exit(main())
