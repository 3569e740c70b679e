"""One writer per store: an advisory lock every writing command holds while it runs.

zarr has no locks, and two writers on one store corrupt it (one's `--overwrite` removes the
groups the other is writing). A local store's lock is `flock` on `<store>/taq-writer.lock`,
a file holding the holder's record (pid, host, command, since), so a refused writer can say
who holds the store. The kernel drops a `flock` when its process dies, however it dies
(kill -9 included): a lock left by a dead writer is simply free, and the next writer takes it
and overwrites the stale record. Readers take no lock; they trust only committed groups
(`complete` is written last).

`lock_for(path)` picks the implementation for a store; a store that is not a local directory
(an object store) would get its own `WriterLock` there.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Protocol

from taq_io.errors import StoreLockedError, StoreNotWritableError

LOCK_FILE = "taq-writer.lock"
"""The lock file inside a local store's root directory."""


class WriterLock(Protocol):
    """The store's writer lock: `acquire` refuses (StoreLockedError) while another holds it."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def holder(self) -> dict | None:
        """The record of the process that holds (or last held) the lock, if any."""
        ...


def holder_record() -> dict:
    """Who this process is, as a lock holder."""
    program = Path(sys.argv[0])
    name = program.parent.name if program.name == "__main__.py" else program.name  # python -m
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([name, *sys.argv[1:]])[:200],
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def describe_holder(record: dict | None) -> str:
    if not record:
        return "another process (no holder record)"
    return (
        f"pid {record.get('pid')} on {record.get('host')} (`{record.get('command')}`, "
        f"since {record.get('since')})"
    )


class FileLock:
    """`flock` on a file in a local store directory; re-entrant within one process."""

    _held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, holders in this process)

    def __init__(self, store_path: Path) -> None:
        self.store_path = Path(store_path)
        self.path = self.store_path / LOCK_FILE

    def acquire(self) -> None:
        key = self.path.resolve()
        if key in FileLock._held:
            fd, count = FileLock._held[key]
            FileLock._held[key] = (fd, count + 1)
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StoreNotWritableError(
                f"cannot lock {self.store_path} for writing ({error.strerror or error}): fix its "
                "permissions or pass another --store path"
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            os.close(fd)
            raise StoreLockedError(
                f"{self.store_path} is being written by {describe_holder(holder)}: wait for it "
                "to finish (or stop it), then rerun; a lock left by a dead process is taken "
                "over automatically"
            ) from None
        record = json.dumps(holder_record()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        os.fsync(fd)
        FileLock._held[key] = (fd, 1)

    def release(self) -> None:
        key = self.path.resolve()
        if key not in FileLock._held:
            return
        fd, count = FileLock._held[key]
        if count > 1:
            FileLock._held[key] = (fd, count - 1)
            return
        del FileLock._held[key]
        os.ftruncate(fd, 0)  # no record: nobody holds it
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def holder(self) -> dict | None:
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            return None


def lock_for(store_path: str | Path) -> WriterLock:
    """The writer lock of the store at `store_path` (a local directory)."""
    return FileLock(Path(store_path))
