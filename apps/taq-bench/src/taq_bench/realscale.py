"""`taq-bench realscale`: every stage of `taq run` on one preset, each as its own process.

The stages are the console scripts a user runs (`taq-calib`, `taq-adaround cache` and
`optimize`, `taq-actstats collect` and `analyze`, `taq eval`, `taq report`, `taq export`), in
`taq run`'s order into one store, preceded by a process that only builds the model (what every
stage pays before its work). Per stage: wall time, CPU time (user + system of the child, from
`wait4`), the child's peak resident memory (`ru_maxrss`) and the bytes it added to the run's
directory (store, report files, checkpoint). A stage whose resident memory passes
`--max-rss-gb` is killed and reported as over the limit: on a shared machine the benchmark
must not take everyone's memory.

`--resume` continues a stopped benchmark in the same `workdir`: the stages its results file
records as measured are kept, and the others run with their own flag for continuing what a
killed process of theirs left (`--resume`, or `--overwrite` where a stage has no resume).

`--kill-resume` then checks resumption at this size: the finished store is copied, its
`weights/adaround` group removed, optimize run again on the model's first two blocks, killed
(SIGKILL) once the first is committed, resumed with `--resume`, and every array of the group
(wall times excepted) compared with the uninterrupted run's first two blocks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zarr

from taq_bench.commands import console_script
from taq_run.weight_methods import weight_methods

ADAROUND = Path("weights", "adaround")  # the group --kill-resume makes again
TIMINGS = ("seconds",)  # wall times differ between runs: every other array must not
RESUME_BLOCKS = 2  # --kill-resume optimizes this many blocks again: one killed, one resumed
POLL_SECONDS = 0.2


class RealscaleError(RuntimeError):
    """A stage failed or a check did not hold (the message says which)."""


@dataclass(frozen=True)
class RealscaleConfig:
    """`taq-bench realscale`'s flags, one field each: the smallest run touching every stage."""

    model: str = "sd3-medium-random"
    height: int | None = None  # sd3-medium presets: pixels (None: the preset's 512)
    width: int | None = None
    num_images: int = 1
    num_steps: int = 2
    cache_stride: int = 2
    iters: int = 2
    batch_size: int = 16
    eval_samples: int = 2  # taq eval's least (an interval needs two)
    workdir: str = "runs/realscale"
    max_rss_gb: float = 18.0
    kill_resume: bool = False
    resume: bool = False

    def __post_init__(self) -> None:
        for name in ("num_images", "num_steps", "cache_stride", "iters", "eval_samples"):
            if getattr(self, name) < 1:
                raise RealscaleError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_rss_gb <= 0:
            raise RealscaleError("--max-rss-gb must be positive")

    @property
    def store(self) -> Path:
        return Path(self.workdir) / "run.zarr"

    @property
    def checkpoint(self) -> Path:
        return Path(self.workdir) / "model.safetensors"

    def size_flags(self) -> list[str]:
        flags = []
        for name in ("height", "width"):
            if getattr(self, name) is not None:
                flags += [f"--{name}", str(getattr(self, name))]
        return flags

    def weights_command(self, subcommand: str, flags: list[str], store: Path) -> list[str]:
        """A weight method's stage; AdaRound's iterations and batch where the method has them."""
        argv = [console_script("taq-adaround"), subcommand, "--store", str(store)]
        for name in ("iters", "batch_size"):
            if name in flags:
                argv += [f"--{name.replace('_', '-')}", str(getattr(self, name))]
        return argv

    def optimize_command(self, store: Path) -> list[str]:
        return self.weights_command("optimize", ["iters", "batch_size"], store)

    def stages(self) -> list[Stage]:
        """Every stage in `taq run`'s order (the installed weight methods, cheapest first),
        then export."""
        store = str(self.store)
        build = (  # as every stage starts: the optimised BLAS first (taq_runtime.launcher)
            "from taq_runtime.blas import load_optimised_blas; load_optimised_blas(); "
            "from taq_model.presets import ModelOptions, load_preset; "
            f"load_preset({self.model!r}, options=ModelOptions(False, {self.height}, "
            f"{self.width}))"
        )
        calib = [console_script("taq-calib"), "--store", store, "--model", self.model]
        calib += ["--num-images", str(self.num_images), "--num-steps", str(self.num_steps)]
        adaround, taq = console_script("taq-adaround"), console_script("taq")
        actstats, samples = console_script("taq-actstats"), str(self.eval_samples)
        return [
            Stage("model build", [sys.executable, "-c", build], ()),
            Stage("calib", calib + self.size_flags(), ("--resume",)),
            Stage(
                "blockio cache",
                [adaround, "cache", "--store", store, "--stride", str(self.cache_stride)],
                ("--resume",),
            ),
            *(
                Stage(
                    f"weights {m.name}",
                    self.weights_command(m.subcommand or m.name, m.flags(), self.store),
                    ("--resume",),
                )
                for m in weight_methods().values()
            ),
            Stage("actstats collect", [actstats, "collect", "--store", store], ("--resume",)),
            Stage("actstats analyze", [actstats, "analyze", "--store", store], ("--overwrite",)),
            Stage("eval", [taq, "eval", "--store", store, "--eval-samples", samples]),
            Stage("report", [taq, "report", "--store", store]),
            Stage(
                "export",
                [taq, "export", "--store", store, "--output", str(self.checkpoint)],
                ("--overwrite",),
            ),
        ]


@dataclass(frozen=True)
class Stage:
    name: str
    argv: list[str]
    continue_flags: tuple[str, ...] = ()  # what makes it continue a killed run of itself


@dataclass
class StageRun:
    name: str
    wall_seconds: float
    cpu_seconds: float  # user + system of the child (and anything it waited for)
    peak_rss_bytes: int  # the child's ru_maxrss
    bytes_written: int  # growth of the run's directory
    outcome: str  # "ok", "failed (exit N)", "over the memory limit"
    message: str = ""  # a refused or failed stage's last line


@dataclass
class RealscaleResult:
    config: dict
    stages: list[StageRun]
    load_average: tuple[float, float, float]  # when the run ended
    resume: dict | None = None  # --kill-resume: what was killed, whether the stores agree
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def directory_bytes(path: Path) -> int:
    """Bytes of every file under `path` (0 when absent)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue  # a temporary file removed while we walked
    return total


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_stage(
    name: str,
    argv: list[str],
    workdir: Path,
    max_rss_bytes: int,
    stop_when=None,
    log=print,
) -> StageRun:
    """Run one stage's process to its end (or kill it: over `max_rss_bytes`, or once
    `stop_when()` is true) and measure it from its own rusage."""
    before = directory_bytes(workdir)
    log(f"== {name}: {' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv))}")
    start = time.perf_counter()
    # the stage's own output goes to stderr: stdout is the benchmark's table (or JSON)
    child = subprocess.Popen(argv, stdout=sys.stderr.fileno(), stderr=subprocess.PIPE, text=True)
    reason: list[str] = []
    tail: list[str] = []

    def drain() -> None:  # show the child's progress, keep its last lines for the report
        for line in child.stderr:
            sys.stderr.write(line)
            tail[:] = (tail + [line.rstrip()])[-5:]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if _rss_bytes(child.pid) > max_rss_bytes and not reason:
            reason.append("over the memory limit")
            os.kill(child.pid, signal.SIGKILL)
        elif stop_when is not None and not reason and stop_when():
            reason.append("killed on purpose")
            os.kill(child.pid, signal.SIGKILL)
        time.sleep(POLL_SECONDS)
    child.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=5)
    wall = time.perf_counter() - start
    if usage.ru_maxrss * 1024 > max_rss_bytes and not reason:
        reason.append("over the memory limit")  # it peaked between two polls
    outcome = reason[0] if reason else "ok" if child.returncode == 0 else "failed"
    if outcome == "failed":
        outcome = f"failed (exit {child.returncode})"
    run = StageRun(
        name,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss * 1024,  # kilobytes on Linux
        directory_bytes(workdir) - before,
        outcome,
        tail[-1] if tail and outcome != "ok" else "",
    )
    log(f"   {row(run)}")
    return run


def weights_arrays(store: Path) -> dict[str, np.ndarray]:
    """Every array of `weights/adaround` but wall times."""
    root = zarr.open_group(store / ADAROUND, mode="r")
    return {
        path: member[...]
        for path, member in root.members(max_depth=None)
        if isinstance(member, zarr.Array) and path.rsplit("/", 1)[-1] not in TIMINGS
    }


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and values; NaN (the fill of absent layers) equals NaN."""
    nan_equal = a.dtype.kind == "f" and b.dtype.kind == "f"
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=nan_equal)


def first_blocks(array: np.ndarray, model_blocks: int, blocks: int) -> np.ndarray:
    """A whole-model group's array cut to its first `blocks` blocks (per-block arrays lead
    with the block axis; the others are returned whole)."""
    return array[:blocks] if array.ndim and array.shape[0] == model_blocks else array


def blocks_done(store: Path) -> int:
    """Blocks committed in `weights/adaround` so far (0 while the group is being made)."""
    try:
        group = zarr.open_group(store / ADAROUND, mode="r")
        return int(np.asarray(group["done"][...]).sum())
    except (KeyError, FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError):
        return 0


def kill_and_resume(config: RealscaleConfig, max_rss: int, log=print) -> dict:
    """Optimize the first `RESUME_BLOCKS` blocks of a copy of the finished store again,
    SIGKILL it once one is committed, resume it, and compare their `weights/adaround`
    arrays with the uninterrupted run's (a block's result depends only on its data and
    `seed + its index`, so the first blocks alone must come out the same)."""
    copy = Path(config.workdir) / "resumed.zarr"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(config.store, copy)
    shutil.rmtree(copy / ADAROUND)  # optimize starts from no weights, as in the run
    names = zarr.open_group(config.store / ADAROUND)["block_names"][...].tolist()
    if len(names) < RESUME_BLOCKS:
        raise RealscaleError(f"--kill-resume needs a model of at least {RESUME_BLOCKS} blocks")
    argv = config.optimize_command(copy) + ["--blocks", ",".join(names[:RESUME_BLOCKS])]
    killed = run_stage(
        "optimize, killed once a block is committed",
        argv,
        copy,
        max_rss,
        stop_when=lambda: blocks_done(copy) >= 1,
        log=log,
    )
    done_at_kill = blocks_done(copy)
    if killed.outcome != "killed on purpose" or done_at_kill >= RESUME_BLOCKS:
        raise RealscaleError(f"optimize was not killed mid-way ({killed.outcome})")
    resumed = run_stage("optimize --resume", [*argv, "--resume"], copy, max_rss, log=log)
    if resumed.outcome != "ok":
        raise RealscaleError(f"the resumed optimize {resumed.outcome}: {resumed.message}")
    ours = weights_arrays(copy)
    theirs = {
        path: first_blocks(array, len(names), RESUME_BLOCKS)
        for path, array in weights_arrays(config.store).items()
    }
    differ = sorted(
        path
        for path in ours.keys() | theirs.keys()
        if path not in ours or path not in theirs or not same_array(ours[path], theirs[path])
    )
    shutil.rmtree(copy)
    return {
        "blocks": RESUME_BLOCKS,
        "model_blocks": len(names),
        "blocks_done_at_kill": done_at_kill,
        "arrays_compared": len(theirs),
        "arrays_differing": differ,
        "equal": not differ,
        "killed": asdict(killed),
        "resumed": asdict(resumed),
    }


def bench_realscale(config: RealscaleConfig, log=print) -> RealscaleResult:
    """Every stage into a fresh `workdir` (`--resume`: the one a stopped run left), measured
    one by one; stops at the first stage that fails or passes the memory limit (the rest
    need its output)."""
    workdir = Path(config.workdir)
    kept = measured_before(config) if config.resume else []
    if not config.resume:
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
    max_rss = int(config.max_rss_gb * 2**30)
    result = RealscaleResult(asdict(config), kept, (0.0, 0.0, 0.0))
    if kept:
        result.notes.append(f"resumed: {len(kept)} stage(s) kept from the stopped run")
    for index, stage in enumerate(config.stages()):
        if index < len(kept):
            continue
        argv = stage.argv + (list(stage.continue_flags) if config.resume else [])
        run = run_stage(stage.name, argv, workdir, max_rss, log=log)
        result.stages.append(run)
        save(result, config)  # a long run keeps what it measured if it is stopped
        if run.outcome != "ok":
            result.notes.append(f"stopped at {stage.name}: {run.outcome}. {run.message}".strip())
            break
    else:
        if config.kill_resume:
            result.resume = kill_and_resume(config, max_rss, log=log)
    result.load_average = os.getloadavg()
    save(result, config)
    return result


# flags that may differ between a stopped run and its --resume
RESUME_MAY_CHANGE = ("resume", "kill_resume", "max_rss_gb")


def measured_before(config: RealscaleConfig) -> list[StageRun]:
    """The stages a stopped run in `config.workdir` measured, in order, up to its first
    stage that did not finish."""
    path = results_path(config)
    if not path.is_file() or not config.store.exists():
        raise RealscaleError(
            f"--resume: no stopped run in {config.workdir} (no {path.name} beside it, or no "
            "store): run without --resume"
        )
    try:
        earlier = json.loads(path.read_text())
        runs = [StageRun(**run) for run in earlier["stages"]]
        recorded = earlier["config"]
    except (ValueError, KeyError, TypeError) as err:
        raise RealscaleError(f"--resume: {path} is not this benchmark's results ({err})") from None
    differ = sorted(
        name
        for name, value in asdict(config).items()
        if name not in RESUME_MAY_CHANGE and recorded.get(name) != value
    )
    if differ:
        flags = ", ".join(f"--{n.replace('_', '-')} {recorded.get(n)}" for n in differ)
        raise RealscaleError(f"--resume: the stopped run used {flags}: pass the same flags")
    names = [stage.name for stage in config.stages()]
    kept = []
    for run in runs:
        if run.outcome != "ok" or len(kept) >= len(names) or run.name != names[len(kept)]:
            break
        kept.append(run)
    return kept


def results_path(config: RealscaleConfig) -> Path:
    return Path(config.workdir).with_suffix(".json")  # outside the measured directory


def save(result: RealscaleResult, config: RealscaleConfig) -> None:
    result.load_average = os.getloadavg()
    results_path(config).write_text(json.dumps(result.as_dict(), indent=2))


def header() -> str:
    return f"{'stage':<20}{'wall s':>9}{'CPU s':>9}{'peak RSS GB':>13}{'bytes':>15}  outcome"


def row(run: StageRun) -> str:
    return (
        f"{run.name:<20}{run.wall_seconds:>9.1f}{run.cpu_seconds:>9.1f}"
        f"{run.peak_rss_bytes / 1e9:>13.2f}{run.bytes_written:>15,}  {run.outcome}"
    )


def lines(result: RealscaleResult) -> list[str]:
    out = [header(), *(row(run) for run in result.stages)]
    out.append(f"load average at the end: {', '.join(f'{v:.1f}' for v in result.load_average)}")
    out += result.notes
    if result.resume is not None:
        r = result.resume
        verdict = "equal" if r["equal"] else f"DIFFER in {', '.join(r['arrays_differing'])}"
        out.append(
            f"kill mid-optimize ({r['blocks_done_at_kill']} of {r['blocks']} blocks committed) "
            f"and --resume: {r['arrays_compared']} weights arrays {verdict} to the "
            f"uninterrupted run's first {r['blocks']} of {r['model_blocks']} blocks (wall times "
            "excepted)"
        )
    return out
