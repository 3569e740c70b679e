"""Content identities: the hash of a config, and which model a store belongs to."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


def config_hash(config: object, *, spaced: bool = False) -> str:
    """A short stable hash of a JSON-serialisable value (key order does not matter).

    `spaced=True` hashes json's default form (`", "` and `": "`, other values by `str`): the
    form model identities have been hashed in since the first store, kept so that every
    existing store keeps its identity.
    """
    if spaced:
        canonical = json.dumps(config, sort_keys=True, default=str)
    else:
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelIdentity:
    """The model a store's artifacts were made with: a preset and the hash of its config."""

    preset: str
    config_hash: str

    def to_json(self) -> dict[str, str]:
        return {"preset": self.preset, "config_hash": self.config_hash}

    def __str__(self) -> str:
        return f"{self.preset} (hash {self.config_hash})"
