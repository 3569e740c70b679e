"""`taq-actstats` and `python -m taq_actstats`: the optimised BLAS first, then the command."""

import sys

from taq_runtime.launcher import launch


def main() -> int:
    return launch("taq_actstats.cli:main")


if __name__ == "__main__":
    sys.exit(main())
