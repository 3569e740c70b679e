"""One writer per store: an advisory lock every writing command holds while it runs.

zarr has no locks, and two writers on one store corrupt it (one's `--overwrite` removes the
groups the other is writing). A local store's lock is `flock` on `<store>/taq-writer.lock`,
a file holding the holder's record (pid, host, command, since), so a refused writer can say
who holds the store. The kernel drops a `flock` when its process dies, however it dies
(kill -9 included): a lock left by a dead writer is simply free, and the next writer takes it
and overwrites the stale record. Readers take no lock; they trust only committed groups
(`complete` is written last).

A store on object storage (`taq_io.location`) has no flock: its lock is an object,
`<store>/taq-writer.lock`, holding the same record (`ObjectLock`). It is created with a
conditional put (S3 `If-None-Match: *`): of two writers creating it at once exactly one
succeeds. Nothing notices when its holder dies, so a writer that finds the lock held takes it
over when the holder ran on this host and its pid is gone (a kill, then `--resume`), replacing
exactly the record it read (`If-Match` on its ETag: of two writers taking over at once, one
wins). A lock left by a writer that died on another machine is refused, naming the object to
delete by hand.

The ranks of one `mlx.launch` are one writer: rank 0 takes the lock, the others call
`join_launch()` and open the store only after rank 0 holds it (`taq_run.writers`), writing
their own units under rank 0's lock. A writer outside the launch is still refused.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import stat
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

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
        key = self.store_path.resolve() / LOCK_FILE  # never through a symlinked lock
        if key in FileLock._held:
            fd, count = FileLock._held[key]
            FileLock._held[key] = (fd, count + 1)
            return
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse_record(_read_fd(fd))
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
        key = self.store_path.resolve() / LOCK_FILE  # never through a symlinked lock
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
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            return _parse_record(_read_fd(fd)) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)

    def _open(self) -> int:
        """The lock file, opened for writing only if it is a regular file of the store: a
        symlink (to a file anywhere) or a device, FIFO or directory in its place is refused,
        so a store someone else made cannot make us truncate a file outside it."""
        refused = (
            f"{self.path} is not a regular file (a symlink or a special file): a store must "
            "hold its own lock file; remove it, or pass another --store path"
        )
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                raise StoreNotWritableError(refused) from None
            raise StoreNotWritableError(
                f"cannot lock {self.store_path} for writing ({error.strerror or error}): fix its "
                "permissions or pass another --store path"
            ) from error
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreNotWritableError(refused)
        return fd


def _read_fd(fd: int) -> bytes:
    return os.pread(fd, 4096, 0)


def _parse_record(data: bytes) -> dict | None:
    try:
        record = json.loads(data) if data.strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _alive_here(record: dict | None) -> bool:
    """Whether the record's holder may still be running: true unless it ran on this host and
    its pid is gone."""
    if not record or record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


class ObjectLock:
    """A lock object in an object store (see the module docstring); re-entrant within one
    process. `errors` turns the storage library's errors into one-line `StoreError`s."""

    _held: dict[str, tuple[str, int]] = {}  # lock key -> (our token, holders in this process)

    def __init__(
        self, fs: Any, key: str, label: str, errors: Callable[[], AbstractContextManager]
    ) -> None:
        self.fs = fs
        self.key = key
        self.label = label
        self._errors = errors

    def acquire(self) -> None:
        if self.key in ObjectLock._held:
            token, count = ObjectLock._held[self.key]
            ObjectLock._held[self.key] = (token, count + 1)
            return
        token = uuid.uuid4().hex
        body = json.dumps({**holder_record(), "token": token}).encode()
        with self._errors():
            try:
                self.fs.pipe_file(self.key, body, mode="create")
            except FileExistsError:
                record, etag = self._read()
                if _alive_here(record):
                    raise StoreLockedError(
                        f"{self.label} is being written by {describe_holder(record)}: wait for "
                        "it to finish (or stop it), then rerun; if that process is gone, delete "
                        f"{self.label}/{LOCK_FILE}"
                    ) from None
                if not self._replace(body, etag):
                    raise StoreLockedError(
                        f"{self.label} was just taken by another writer: wait for it to finish, "
                        "then rerun"
                    ) from None
        ObjectLock._held[self.key] = (token, 1)

    def release(self) -> None:
        if self.key not in ObjectLock._held:
            return
        token, count = ObjectLock._held[self.key]
        if count > 1:
            ObjectLock._held[self.key] = (token, count - 1)
            return
        del ObjectLock._held[self.key]
        try:
            with self._errors():
                record, etag = self._read()
                if record and record.get("token") == token:  # never delete another's lock
                    self._call("delete_object", IfMatch=etag)
        except Exception as error:  # noqa: BLE001 - at exit: the lock is left, said once
            logging.getLogger(__name__).warning(
                "could not release the writer lock %s/%s (%s): delete it if no writer runs",
                self.label,
                LOCK_FILE,
                error,
            )

    def holder(self) -> dict | None:
        with self._errors():
            return self._read()[0]

    def _read(self) -> tuple[dict | None, str | None]:
        self.fs.invalidate_cache(self.key)
        try:
            etag = self.fs.info(self.key).get("ETag")
            text = self.fs.cat_file(self.key)
        except FileNotFoundError:
            return None, None
        try:
            return json.loads(text), etag
        except ValueError:
            return None, etag

    def _call(self, method: str, **kwargs: Any) -> None:
        from fsspec.asyn import sync

        bucket, key, _ = self.fs.split_path(self.key)
        sync(self.fs.loop, self.fs._call_s3, method, Bucket=bucket, Key=key, **kwargs)
        self.fs.invalidate_cache(self.key)

    def _replace(self, body: bytes, etag: str | None) -> bool:
        """Put `body` over the lock object if it is still the one with `etag`."""
        try:
            if etag is None:
                self.fs.pipe_file(self.key, body, mode="create")
            else:
                self._call("put_object", Body=body, IfMatch=etag)
        except (FileExistsError, OSError) as error:
            if "pre-condition" in str(error) or "precondition" in str(error).lower():
                return False
            if isinstance(error, FileExistsError):
                return False
            raise
        return True


class LaunchLock:
    """A rank > 0's lock: held for it by rank 0 of its launch, so taking it does nothing."""

    def __init__(self, inner: WriterLock) -> None:
        self.inner = inner

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def holder(self) -> dict | None:
        return self.inner.holder()


_in_launch = False


def join_launch() -> None:
    """This process is a rank > 0 of a launch whose rank 0 holds the writer lock of every
    store the launch writes: take no lock of its own (see the module docstring)."""
    global _in_launch
    _in_launch = True


def lock_for(store_path: str | Path, object_lock: WriterLock | None = None) -> WriterLock:
    """The writer lock of the store at `store_path`: `flock` in a local directory; a store at
    a URL passes its `ObjectLock` (`taq_io.location` makes it). Every writer gets it here (a
    rank > 0 of a launch: wrapped in its `LaunchLock`)."""
    lock = FileLock(Path(store_path)) if object_lock is None else object_lock
    return LaunchLock(lock) if _in_launch else lock
