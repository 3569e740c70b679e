"""What every taq command shares: user errors as one line and exit code 2, `--version`,
progress bars."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path

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


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (`error: ...`, exit 2) like every other user
    error, not a usage dump; subcommands inherit it."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def run_cli(main: Callable[[], int | None], user_errors: Iterable[type[BaseException]] = ()) -> int:
    """Run `main`, turning user errors into `error: ...` and exit code 2 (no traceback)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    errors = (UsageError, ModelError, *user_errors)
    try:
        return main() or 0
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(
            f"error: no space left on the device{where}: free some space and rerun the same "
            "command (with --resume for a stage: the store keeps every unit written so far)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


def writable_dir(path: str | Path, flag: str) -> Path:
    """`path`, checked to be a directory that exists or can be created and written (nothing
    is created here): a one-line `UsageError` naming `flag` before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a directory: pass a directory path")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"{flag} {path} cannot be created: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path} is not writable ({existing}): pass another path")
    return path


def progress(total: int, desc: str, unit: str = "it", initial: int = 0) -> tqdm:
    """A progress bar with rate and ETA (on stderr; quiet when TAQ_NO_PROGRESS is set)."""

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        dynamic_ncols=True,
        disable=bool(os.environ.get("TAQ_NO_PROGRESS")),
    )
