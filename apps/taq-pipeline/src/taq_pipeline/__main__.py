"""`taq` and `python -m taq_pipeline`: the optimised BLAS first, then the command.

`taq launch` skips both: its process only starts the ranks and waits (`taq_runtime.spawn`),
so it imports neither MLX nor the pipeline."""

import sys

from taq_runtime.launcher import launch


def main() -> int:
    if sys.argv[1:2] == ["launch"]:
        from taq_runtime import spawn

        return spawn.main(sys.argv[2:])
    return launch("taq_pipeline.cli:main")


if __name__ == "__main__":
    sys.exit(main())
