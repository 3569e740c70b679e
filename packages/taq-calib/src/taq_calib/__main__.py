"""`taq-calib` and `python -m taq_calib`: the optimised BLAS first, then the command."""

import sys

from taq_runtime.launcher import launch


def main() -> int:
    return launch("taq_calib.cli:main")


if __name__ == "__main__":
    sys.exit(main())
