"""`taq-adaround` and `python -m taq_adaround`: the optimised BLAS first, then the command."""

import sys

from taq_runtime.launcher import launch


def main() -> int:
    return launch("taq_adaround.cli:main")


if __name__ == "__main__":
    sys.exit(main())
