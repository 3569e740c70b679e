"""The ranks of one launch (`taq launch` or `mlx.launch`): who this process is, a barrier,
deterministic shares of the work, and the checks that keep the ranks in step.

taq scales out with MLX's own engine (`mx.distributed`, ring backend: ranks started by
`taq launch -n N` on one machine, `spawn.py`, or by `mlx.launch` with a hostfile across
machines); there is no scheduler or transport of ours. Every stage splits its units the same
way on every rank (images by index, blocks by size), each rank writes only its own units of
a group, and rank 0 alone creates groups and commits them (`complete`) after a barrier. One
process (no launch) is rank 0 of 1: every helper here is then a no-op.

Collectives run on the CPU stream (the ring backend's). Every helper that communicates is a
collective: every rank must call it, in the same order.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import pkgutil
import socket
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar

import mlx.core as mx

from taq_runtime.blas import blas_info
from taq_runtime.cli import UsageError

T = TypeVar("T")
MESSAGE_BYTES = 1024  # a failure broadcast from rank 0 is cut to this


class RankError(UsageError):
    """The ranks of a launch disagree, or another rank failed: one line, exit 2."""


@functools.cache
def world() -> mx.distributed.Group:
    """This process's group: the launch's ranks, or a group of one."""
    return mx.distributed.init()


def rank() -> int:
    return world().rank()


def size() -> int:
    return world().size()


def tag() -> str:
    """`rank r/n: ` to start a rank's output lines with under a launch; "" alone."""
    return f"rank {rank()}/{size()}: " if size() > 1 else ""


def owns(index: int) -> bool:
    """Whether this rank does unit `index` (round robin: stable across resumes)."""
    return index % size() == rank()


def balance(weights: Sequence[float], ranks: int | None = None) -> list[list[int]]:
    """Indices of `weights` per rank, largest first onto the least loaded rank (ties: the
    lower index, the lower rank), each rank's list ascending: deterministic, so every rank
    computes the same split."""
    ranks = size() if ranks is None else ranks
    loads = [0.0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for index in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        target = min(range(ranks), key=lambda r: (loads[r], r))
        loads[target] += weights[index]
        shares[target].append(index)
    return [sorted(share) for share in shares]


def _all_sum(values: mx.array) -> mx.array:
    total = mx.distributed.all_sum(values, group=world(), stream=mx.cpu)
    mx.eval(total)
    return total


def barrier() -> None:
    """Wait until every rank got here."""
    if size() > 1:
        _all_sum(mx.zeros((1,), mx.int32))


def _share_text(text: str) -> str:
    """Rank 0's `text` on every rank (the others pass "")."""
    data = list(text.encode()[:MESSAGE_BYTES]) if rank() == 0 else []
    padded = mx.array(data + [0] * (MESSAGE_BYTES - len(data)), mx.int32)
    codes = _all_sum(padded).tolist()
    return bytes(c for c in codes if c).decode(errors="replace")


def on_rank0(work: Callable[[], T]) -> T | None:
    """Run `work` on rank 0 alone (None elsewhere); if it fails, every rank fails with its
    message, so no rank waits forever on a rank that is gone."""
    if size() == 1:
        return work()
    result, failure = None, None
    if rank() == 0:
        try:
            result = work()
        except BaseException as error:  # noqa: BLE001 - re-raised below, after telling the others
            failure = error
    message = _share_text("" if failure is None else str(failure) or type(failure).__name__)
    if failure is not None:
        raise failure
    if message:
        raise RankError(f"rank 0 failed: {message}")
    return result


def rank0_first(work: Callable[[], T]) -> T:
    """Run `work` on rank 0, then on the others (opening what rank 0 created), then wait
    for all: what creates a store or a group, which one rank must do first and alone."""
    result = on_rank0(work)
    if size() == 1:
        return result
    if rank() > 0:
        result = work()
    barrier()
    return result


def code_version() -> str:
    """A hash of every taq module's source and MLX's version: equal on ranks that run the
    same code."""
    digest = hashlib.sha256(f"mlx {version('mlx')}".encode())
    for module in sorted(m.name for m in pkgutil.iter_modules() if m.name.startswith("taq_")):
        spec = importlib.util.find_spec(module)
        for location in sorted(spec.submodule_search_locations or []) if spec else []:
            for path in sorted(Path(location).rglob("*.py")):
                digest.update(str(path.relative_to(location)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def _gather_digests(text: str) -> list[bytes]:
    digest = mx.array(list(hashlib.sha256(text.encode()).digest()), mx.int32)
    gathered = mx.distributed.all_gather(digest, group=world(), stream=mx.cpu)
    mx.eval(gathered)
    flat = gathered.tolist()
    return [bytes(flat[r * 32 : (r + 1) * 32]) for r in range(size())]


def _gather_texts(text: str) -> list[str]:
    data = list(text.encode()[:MESSAGE_BYTES])
    padded = mx.array(data + [0] * (MESSAGE_BYTES - len(data)), mx.int32)
    gathered = mx.distributed.all_gather(padded, group=world(), stream=mx.cpu)
    mx.eval(gathered)
    flat = gathered.tolist()
    rows = [flat[r * MESSAGE_BYTES : (r + 1) * MESSAGE_BYTES] for r in range(size())]
    return [bytes(c for c in row if c).decode(errors="replace") for row in rows]


def _first_difference(mine: str, theirs: str) -> tuple[str, str]:
    """The first differing word of two texts (with the word before it, for a flag's name)."""
    a, b = mine.split(), theirs.split()
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, i - 1)
    return " ".join(a[start : i + 1]) or "(nothing)", " ".join(b[start : i + 1]) or "(nothing)"


def agree(what: str, value: str, fix: str) -> None:
    """Refuse (RankError on every rank) unless every rank has the same `value` of `what`;
    the message names the first difference from the first rank that differs."""
    if size() == 1:
        return
    digests = _gather_digests(value)
    if len(set(digests)) == 1:
        return
    values = _gather_texts(value)  # every rank learns what the others have
    other = next(r for r in range(size()) if digests[r] != digests[rank()])
    mine, theirs = _first_difference(values[rank()], values[other])
    raise RankError(
        f"ranks disagree on the {what}: rank {rank()} on {socket.gethostname()} has "
        f"`{mine}`, rank {other} has `{theirs}`: {fix}"
    )


def check_launch(argv: Sequence[str] | None = None) -> None:
    """At a launched command's start: every rank runs the same code with the same command
    line (the run config) and BLAS thread count, else every rank exits 2 naming what
    differs."""
    if size() == 1:
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    agree(
        "code version",
        code_version(),
        "install the same taq and MLX on every machine (the hash covers every taq module)",
    )
    agree("command line", " ".join(argv), "launch every rank with the same flags")
    agree(
        "BLAS thread count",
        f"OPENBLAS_NUM_THREADS={blas_info().threads}",
        "set the same OPENBLAS_NUM_THREADS on every rank (a GEMM's result can depend on it)",
    )
