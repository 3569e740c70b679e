"""taq-io: taq's zarr v3 artifact store and its versioned schema (see docs/schema.md).

A run is one store; each stage writes one group with `Store.create_group`, unit by unit with
`StageGroup.write_unit`, and commits it with `StageGroup.mark_complete`; readers get complete,
up-to-date groups with `Store.require_group`.
"""

from taq_io.dtypes import from_bfloat16_bits, to_bfloat16_bits
from taq_io.errors import (
    CorruptGroupError,
    CorruptStoreError,
    GroupConflictError,
    GroupIncompleteError,
    GroupMissingError,
    ModelMismatchError,
    NotATaqStoreError,
    SchemaVersionError,
    StaleGroupError,
    StoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    StoreNotWritableError,
    StoreUnreachableError,
    UnitNotDoneError,
)
from taq_io.group import GroupMeta, GroupStatus, StageGroup
from taq_io.health import StoreStatus, describe
from taq_io.identity import ModelIdentity, config_hash
from taq_io.location import is_url, local_parent, store_stem
from taq_io.schema import GROUPS, SCHEMA_VERSION, ArraySpec, GroupSpec
from taq_io.store import COMPLETE, MISSING, PARTIAL, STALE, GroupState, Store

__all__ = [
    "COMPLETE",
    "GROUPS",
    "MISSING",
    "PARTIAL",
    "STALE",
    "SCHEMA_VERSION",
    "ArraySpec",
    "CorruptGroupError",
    "CorruptStoreError",
    "GroupConflictError",
    "GroupIncompleteError",
    "GroupMeta",
    "GroupMissingError",
    "GroupSpec",
    "GroupState",
    "GroupStatus",
    "ModelIdentity",
    "ModelMismatchError",
    "NotATaqStoreError",
    "SchemaVersionError",
    "StageGroup",
    "StaleGroupError",
    "Store",
    "StoreError",
    "StoreExistsError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreNotWritableError",
    "StoreStatus",
    "StoreUnreachableError",
    "UnitNotDoneError",
    "config_hash",
    "describe",
    "from_bfloat16_bits",
    "is_url",
    "local_parent",
    "store_stem",
    "to_bfloat16_bits",
]
