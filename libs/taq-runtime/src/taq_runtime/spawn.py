"""`taq launch -n N -- COMMAND`: N local ranks of one command, started directly with MLX's
own ring-backend environment (`MLX_RANK`, `MLX_HOSTFILE`), without `mlx.launch`.

`mlx.launch` relays each rank's output through loops that never block (a `select` on the
child's stdin, always writable, and on a stdin at EOF): measured, its launcher burned as
much CPU as the ranks it started. Here every rank inherits stdout and stderr (the ranks tag
their own lines, `ranks.tag`), and the launcher sleeps in `wait` until a rank exits. If one
fails (an exit code other than 0, or a signal) the others are stopped and the launch exits
non-zero: 128 + the signal of a killed rank, else the first failing rank's code.

Standard library only: the launcher never imports MLX or loads BLAS, so it costs a Python
start-up and nothing while the ranks run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from taq_runtime.cli import ArgumentParser, UsageError

GRACE_SECONDS = 5  # before SIGTERM and again before SIGKILL


def free_port(count: int) -> int:
    """A port p with p .. p + count - 1 free on loopback (the ring backend listens on one
    port per rank)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + count > 65535:
            continue
        try:
            for offset in range(count):
                with socket.socket() as other:
                    other.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
    raise OSError("no free run of loopback ports for the ranks")


def ring_hostfile(count: int, port: int) -> list[list[str]]:
    """MLX's ring hostfile for `count` ranks on loopback: rank r listens on port + r."""
    return [[f"127.0.0.1:{port + r}"] for r in range(count)]


def _stop(ranks: dict[int, subprocess.Popen], patience: float = 0.0) -> None:
    """Give the ranks still running `patience` seconds to exit by themselves (a refusal
    exits every rank, each with its own line), then SIGTERM them, then SIGKILL."""
    deadline = time.monotonic() + patience
    for process in ranks.values():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in ranks.values():
        if process.poll() is None:
            process.terminate()
    for process in ranks.values():
        try:
            process.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _exit_on_sigterm(number: int, frame: object) -> None:
    raise SystemExit(128 + number)  # the `finally` of `start` stops the ranks


def _failure(rank: int, status: int) -> tuple[int, str]:
    """The launch's exit code for rank `rank`'s wait status, and the line saying why."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = signal.Signals(number).name if number in signal.valid_signals() else number
        return 128 + number, f"rank {rank} was killed by {name}"
    code = os.waitstatus_to_exitcode(status)
    return code, f"rank {rank} exited with code {code}"


def start(count: int, command: Sequence[str]) -> int:
    """Run `command` as `count` ranks on this machine (ring backend over loopback) and wait:
    0 when every rank exits 0; else the others are stopped and the code is non-zero."""
    if count < 1:
        raise UsageError(f"-n must be at least 1, got {count}")
    if not command:
        raise UsageError("no command to launch: taq launch -n N -- COMMAND [ARGS...]")
    if count == 1:
        return subprocess.run(list(command)).returncode
    with tempfile.TemporaryDirectory(prefix="taq-launch-") as work:
        hostfile = Path(work) / "hosts.json"
        hostfile.write_text(json.dumps(ring_hostfile(count, free_port(count))))
        ranks: dict[int, subprocess.Popen] = {}
        try:
            for r in range(count):
                env = {**os.environ, "MLX_RANK": str(r), "MLX_HOSTFILE": str(hostfile)}
                ranks[r] = subprocess.Popen(list(command), env=env)
        except OSError as error:
            _stop(ranks)
            raise UsageError(f"cannot start `{command[0]}`: {error.strerror}") from None
        by_pid = {process.pid: r for r, process in ranks.items()}
        running = set(by_pid)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            while running:
                pid, status = os.wait()  # sleeps in the kernel until a rank exits
                if pid not in running:
                    continue
                running.discard(pid)
                ranks[by_pid[pid]].returncode = os.waitstatus_to_exitcode(status)
                if status != 0:
                    code, why = _failure(by_pid[pid], status)
                    print(f"taq launch: {why}; stopping the other ranks", file=sys.stderr)
                    _stop(ranks, patience=GRACE_SECONDS)
                    return code
        except KeyboardInterrupt:  # the ranks got the same SIGINT from the terminal
            return 130
        finally:
            _stop(ranks)  # no-op once every rank has exited
    return 0


def add_flags(parser: ArgumentParser) -> None:
    parser.add_argument("-n", "--ranks", type=int, required=True, help="ranks to start")
    parser.add_argument("command", nargs="+", help="the command every rank runs (after --)")


def main(argv: Sequence[str] | None = None) -> int:
    """`taq launch` without the rest of `taq`: no MLX, no BLAS in the launcher."""
    parser = ArgumentParser(
        prog="taq launch", description="N local ranks of one command (MLX ring backend)"
    )
    add_flags(parser)
    args = parser.parse_args(argv)
    try:
        return start(args.ranks, args.command)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
