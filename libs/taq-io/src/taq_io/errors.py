"""Errors a taq CLI reports as one line (`error: <message>`, exit 2).

Each message says what is wrong and names the fix, usually a command to run.
"""


class StoreError(Exception):
    """Base of every store refusal; the message is one line meant for the user."""


class StoreNotFoundError(StoreError):
    """No store at the path."""


class NotATaqStoreError(StoreError):
    """The path exists but holds something else."""


class CorruptStoreError(StoreError):
    """The store's metadata cannot be read."""


class SchemaVersionError(StoreError):
    """The store was written by a schema major version this taq-io does not read."""


class ModelMismatchError(StoreError):
    """The store belongs to another model."""


class StoreNotWritableError(StoreError):
    """The store cannot be created or written at the path."""


class StoreUnreachableError(StoreError):
    """A URL store cannot be reached: no connection, no credentials, no bucket."""


class StoreLockedError(StoreError):
    """Another process is writing the store (one writer at a time)."""


class CorruptGroupError(StoreError):
    """A committed group's data is missing, unreadable (checksum) or not finite."""


class StoreExistsError(StoreError):
    """A store is already at the path and overwriting was not asked for."""


class GroupMissingError(StoreError):
    """The stage group a reader needs was never written."""


class GroupIncompleteError(StoreError):
    """The stage group was started but not committed."""


class StaleGroupError(StoreError):
    """The stage group was made from other inputs or config than the caller expects."""


class GroupConflictError(StoreError):
    """A writer asked for a group that exists with another config, inputs or shape."""


class UnitNotDoneError(StoreError):
    """A reader asked for a unit that is not (yet) written."""
