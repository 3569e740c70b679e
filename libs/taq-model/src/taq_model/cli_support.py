"""What every taq command shares: user errors as one line and exit code 2, `--version`,
progress bars."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import version

from taq_model.presets import ModelError

from tqdm import tqdm

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A flag or input the user can fix; printed as one line, exit code 2."""


def add_version_flag(parser: argparse.ArgumentParser, distribution: str) -> None:
    """`--version`: the member's version from its installed package metadata (one source)."""
    own = f"{distribution} {version(distribution)}"
    text = own if parser.prog == distribution else f"{parser.prog} ({own})"
    parser.add_argument("--version", action="version", version=text)


def run_cli(main: Callable[[], int | None], user_errors: Iterable[type[BaseException]] = ()) -> int:
    """Run `main`, turning user errors into `error: ...` and exit code 2 (no traceback)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    errors = (UsageError, ModelError, *user_errors)
    try:
        return main() or 0
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


def progress(total: int, desc: str, unit: str = "it", initial: int = 0) -> tqdm:
    """A progress bar with rate and ETA (on stderr; quiet when TAQ_NO_PROGRESS is set)."""
    import os

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        dynamic_ncols=True,
        disable=bool(os.environ.get("TAQ_NO_PROGRESS")),
    )
