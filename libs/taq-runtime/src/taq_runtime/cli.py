"""What every taq command shares: user errors as one line and exit code 2, `--version`,
progress bars, logging set-up, and stage configs built from flags."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
Config = TypeVar("Config")


class UsageError(Exception):
    """A flag or input the user can fix; printed as one line, exit code 2.

    Libraries subclass it for their own user-facing errors (e.g. `taq_model.ModelError`).
    """


def configure_logging(level: int = logging.WARNING) -> None:
    """Diagnostics from library code go through `logging` to stderr, one line each."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


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


def command_parser(
    prog: str, distribution: str, description: str | None
) -> tuple[ArgumentParser, argparse._SubParsersAction]:
    """A command with subcommands: the parser (one-line errors, `--version` from
    `distribution`'s metadata) and the subparsers to add them to (one is required)."""
    parser = ArgumentParser(prog=prog, description=description)
    add_version_flag(parser, distribution)
    return parser, parser.add_subparsers(dest="command", required=True)


def run_cli(main: Callable[[], int | None], user_errors: Iterable[type[BaseException]] = ()) -> int:
    """Run `main`, turning user errors into `error: ...` and exit code 2 (no traceback).
    Under `mlx.launch`, the ranks first check they run the same code and command line."""
    configure_logging()
    errors = (UsageError, *user_errors)
    try:
        from taq_runtime import ranks  # imports MLX: only once the command runs

        ranks.check_launch()
        return main() or 0
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        _exit_now_if_launched()
        return EXIT_USAGE
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:
            longest = max(Path(str(err.filename or "")).parts, key=len, default="")
            print(
                f"error: a path is too long for the file system ({len(longest)} characters in "
                f"one of its names, {str(err.filename)[:40]}...): pass a shorter path",
                file=sys.stderr,
            )
            return EXIT_USAGE
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


def _exit_now_if_launched() -> None:
    """Under `mlx.launch`, exit 2 at once: the launcher stops the other ranks as soon as one
    exits, and a rank still tearing Python down would be killed rather than exit 2 itself."""
    ranks = sys.modules.get("taq_runtime.ranks")
    if ranks is not None and ranks.size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_USAGE)


def config_from_flags(cls: type[Config], flags: Any, **overrides: Any) -> Config:
    """`cls(...)` from the attributes of `flags` (an argparse namespace or another config)
    named like its fields; fields `flags` lacks keep their defaults; `overrides` win."""
    values = {
        field.name: getattr(flags, field.name)
        for field in dataclasses.fields(cls)
        if field.init and hasattr(flags, field.name)
    }
    return cls(**{**values, **overrides})


def add_config_flags(
    parser: argparse.ArgumentParser, configs: Iterable[type], skip: Iterable[str] = ()
) -> list[str]:
    """One flag per field of the dataclasses `configs` (`--bits-w` for `bits_w`), its help
    from the field's `metadata["help"]`, so a config's flags are declared once, beside its
    fields. With one config a flag defaults to the field's default; a field several configs
    share is one flag defaulting to None, which keeps each config's own default (shown in
    the help). Returns the field names added."""
    configs = list(configs)
    skip = set(skip)
    seen: dict[str, list] = {}
    for cls in configs:
        for item in dataclasses.fields(cls):
            if item.init and item.name not in skip:
                seen.setdefault(item.name, []).append((cls, item))
    for name, owners in seen.items():
        item = owners[0][1]
        defaults = {cls.__name__: owner.default for cls, owner in owners}
        if len(configs) == 1:
            default, shown = item.default, f"{item.default}"
        else:
            default = None
            values = set(map(repr, defaults.values()))
            shown = (
                f"{item.default}"
                if len(values) == 1
                else "; ".join(f"{cls}: {value}" for cls, value in defaults.items())
            )
        text = f"{item.metadata.get('help', '')} [{shown}]"
        flag = f"--{name.replace('_', '-')}"
        if isinstance(item.default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=text
            )
        else:
            parser.add_argument(flag, type=type(item.default), default=default, help=text)
    return list(seen)


def config_from_given(cls: type[Config], flags: Any, **overrides: Any) -> Config:
    """`cls(...)` from the attributes of `flags` named like its fields that were given (not
    None: `add_config_flags`' shared flags), its own defaults for the rest; `overrides` win."""
    values = {
        field.name: getattr(flags, field.name)
        for field in dataclasses.fields(cls)
        if field.init and getattr(flags, field.name, None) is not None
    }
    return cls(**{**values, **overrides})


def at_least(minimum: int, **flags: int | None) -> None:
    """Refuse (`ValueError`, naming the flag) any of `flags` (field name -> value; None: not
    given) below `minimum`: how every config checks its counts."""
    for name, value in flags.items():
        if value is not None and value < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


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
