"""Where a store lives: a local directory (the default) or a URL (`s3://bucket/run.zarr`, or
any other URL zarr opens through fsspec).

Every store argument goes through `locate`, so every command takes both. A URL store is
opened with fsspec's filesystem for its protocol (s3fs for `s3://`, the `taq-io[s3]` extra);
credentials, region and endpoint come from that library's own configuration, for S3 botocore's
standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
`AWS_PROFILE`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3` for an
S3-compatible server). A URL store is probed once when located: an unreachable endpoint,
missing credentials, a missing bucket or a missing fsspec backend is a one-line `StoreError`
naming the fix, before anything is written.

Files taq writes beside a store (the report, plots, the sweep) are local files: beside a local
store, in the current directory for a URL store (`local_parent`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from zarr.abc.store import Store as ZarrStore
from zarr.storage import FsspecStore, LocalStore

from taq_io.errors import StoreError, StoreNotWritableError, StoreUnreachableError
from taq_io.lock import LOCK_FILE, ObjectLock, WriterLock, lock_for

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PROBE_OPTIONS = {"s3": {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 5}}}
"""The probe fails fast (botocore retries a refused connection for ~10 s by default); the
store's own filesystem keeps the library's retries for the run."""


def is_url(store: str | Path) -> bool:
    """A store argument that names a URL (`s3://...`) rather than a local path."""
    return isinstance(store, str) and bool(_URL.match(store))


def local_parent(store: str | Path) -> Path:
    """Where files written beside the store go: its parent directory, or the current
    directory for a URL store."""
    return Path(".") if is_url(store) else Path(store).parent


def store_stem(store: str | Path) -> str:
    """The store's name without its suffix (`run` for `.../run.zarr`)."""
    name = PurePosixPath(store.rstrip("/")).name if is_url(store) else Path(store).name
    return PurePosixPath(name).stem


class LocalLocation:
    """A store in a local directory; `label` (what messages name) is the path itself."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = path

    def exists(self) -> bool:
        return self.path.exists()

    def is_empty(self) -> bool:
        """An empty directory, or one holding only a lock file (a create that died early)."""
        return self.path.is_dir() and all(child.name == LOCK_FILE for child in self.path.iterdir())

    def read_text(self, name: str) -> str | None:
        """A file of the store's root (None: absent)."""
        file = self.path / name
        return file.read_text() if file.is_file() else None

    def check_contained(self) -> None:
        """Refuse a store holding a symlink that leads out of it (a group, an array, a chunk,
        the lock): zarr follows links, so a store someone else made could make a command read,
        overwrite or delete files anywhere. One walk of the directory tree, links not followed."""
        if not self.path.is_dir():
            return
        root = self.path.resolve()
        pending = [root]
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        target = Path(entry.path).resolve()
                        if not target.is_relative_to(root):
                            raise StoreError(
                                f"{self.path} holds a link leading out of the store: "
                                f"{Path(entry.path).relative_to(root)} -> {target}: a store "
                                "must hold its own files; remove the link, or pass another --store"
                            )
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))

    def zarr_store(self, read_only: bool) -> ZarrStore:
        return LocalStore(self.path, read_only=read_only)

    def lock(self) -> WriterLock:
        return lock_for(self.path)

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        """Remove everything but the lock file (it is what the writer holds); a link is
        removed, never what it points to."""
        for child in self.path.iterdir():
            if child.name != LOCK_FILE:
                is_tree = child.is_dir() and not child.is_symlink()
                shutil.rmtree(child) if is_tree else child.unlink()

    def check_writable(self) -> None:
        try:
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as error:
            raise StoreNotWritableError(
                f"{self.path} is not writable ({error.strerror or error}): fix its permissions "
                "or pass another --store path"
            ) from error

    def nbytes(self, name: str) -> int:
        """Bytes under a group of the store."""
        return sum(f.stat().st_size for f in (self.path / name).rglob("*") if f.is_file())


class UrlLocation:
    """A store under a URL, through the fsspec filesystem of its protocol."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.label = self.url
        self.protocol = self.url.split("://", 1)[0].lower()
        with self.errors():
            import fsspec

            self.fs, self.root = fsspec.url_to_fs(self.url)
            self._probe()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn what the storage library raises for a store it cannot use into one line."""
        try:
            yield
        except StoreError:
            raise
        except ImportError as error:
            raise StoreError(
                f"cannot open {self.url}: no fsspec backend for {self.protocol}:// is installed "
                f"({error}); install it (for s3://: `pip install 'taq-io[s3]'`)"
            ) from None
        except ValueError as error:
            if "protocol" not in str(error).lower():
                raise
            raise StoreError(
                f"cannot open {self.url}: {error}; pass a local path or an s3:// URL to --store"
            ) from None
        except Exception as error:  # noqa: BLE001 - each library raises its own
            raise _translate(self.url, self.protocol, error) from None

    def _probe(self) -> None:
        """Reach the store's bucket once, failing fast: connection, credentials, the bucket
        (`exists` would answer False for all three)."""
        import fsspec

        options = PROBE_OPTIONS.get(self.protocol, {})
        probe = fsspec.filesystem(self.protocol, skip_instance_cache=True, **options)
        bucket = self.root.split("/")[0]
        try:
            probe.info(bucket)
        except FileNotFoundError:
            raise StoreUnreachableError(
                f"bucket {bucket} of {self.url} does not exist: create it (for S3: "
                f"`aws s3 mb {self.protocol}://{bucket}`) or pass another --store"
            ) from None

    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _names(self) -> list[str]:
        with self.errors():
            try:
                return [PurePosixPath(p).name for p in self.fs.ls(self.root, detail=False)]
            except FileNotFoundError:
                return []

    def exists(self) -> bool:
        return bool(self._names())

    def is_empty(self) -> bool:
        return all(name == LOCK_FILE for name in self._names())

    def read_text(self, name: str) -> str | None:
        with self.errors():
            try:
                return self.fs.cat_file(self._key(name)).decode()
            except FileNotFoundError:
                return None

    def zarr_store(self, read_only: bool) -> ZarrStore:
        with self.errors():
            return FsspecStore.from_url(self.url, read_only=read_only)

    def lock(self) -> WriterLock:
        return lock_for(
            self.url, ObjectLock(self.fs, self._key(LOCK_FILE), self.label, self.errors)
        )

    def prepare(self) -> None:
        """Nothing: object stores have no directories (and s3fs's mkdir would create a
        bucket, which the probe has refused to do)."""

    def clear(self) -> None:
        with self.errors():
            for path in self.fs.ls(self.root, detail=False):
                if PurePosixPath(path).name != LOCK_FILE:
                    self.fs.rm(path, recursive=True)
            self.fs.invalidate_cache()

    def check_contained(self) -> None:
        """Nothing: an object store has no links."""

    def check_writable(self) -> None:
        """Nothing: taking the writer lock writes an object, and a refusal is reported there."""

    def nbytes(self, name: str) -> int:
        with self.errors():
            return int(self.fs.du(self._key(name)))


Location = LocalLocation | UrlLocation


def locate(store: str | Path) -> Location:
    """The location of a store argument: a URL (`scheme://...`) or a local path (an empty
    one is refused: it would make the current directory a store)."""
    if not str(store).strip():
        raise StoreError("--store is empty: pass the path of a store directory (e.g. run.zarr)")
    return UrlLocation(store) if is_url(store) else LocalLocation(Path(store))


def _translate(url: str, protocol: str, error: Exception) -> StoreError:
    """One line for an error of the storage library, by what it means to the user."""
    name = type(error).__name__
    text = str(error).splitlines()[0][:160] if str(error) else name
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"):
        return StoreUnreachableError(
            f"no credentials for {url} ({text}): set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if isinstance(error, PermissionError) or name in ("ClientError", "InvalidAccessKeyId"):
        return StoreUnreachableError(
            f"access to {url} was refused ({text}): check the credentials "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and their permissions on the bucket"
        )
    if "Connect" in name or "Endpoint" in name or isinstance(error, ConnectionError | TimeoutError):
        return StoreUnreachableError(
            f"cannot reach {url} ({text}): check the endpoint (AWS_ENDPOINT_URL for an "
            "S3-compatible server) and the network, then rerun"
        )
    if isinstance(error, FileNotFoundError):
        return StoreUnreachableError(f"{url}: {text}: pass an existing bucket to --store")
    return StoreUnreachableError(f"cannot use {url} ({name}: {text}): check the URL and rerun")
