"""`taq-bench realscale` on a toy of a real family: the same code path as at SD3 size."""

import json
import os
import subprocess
import sys

STAGES = [
    "model build",
    "calib",
    "blockio cache",
    "weights rtn",
    "weights gptq",
    "weights adaround",
    "actstats collect",
    "actstats analyze",
    "eval",
    "report",
    "export",
]


def realscale(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taq_bench", "realscale", *flags, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TAQ_NO_PROGRESS": "1"},
        timeout=1800,
    )


def test_every_stage_is_measured_and_a_killed_optimize_resumes_to_the_same_weights(tmp_path):
    # 100 iterations: each of the 2 blocks takes seconds, so the kill lands between them
    out = realscale(
        "--model", "sd3.5-large-tiny", "--iters", "100", "--workdir", str(tmp_path / "w"),
        "--kill-resume",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert [s["name"] for s in result["stages"]] == STAGES
    for stage in result["stages"]:
        assert stage["outcome"] == "ok", stage
        assert stage["cpu_seconds"] > 0 and stage["peak_rss_bytes"] > 2**20, stage
        assert (stage["bytes_written"] > 0) == (stage["name"] != "model build"), stage
    export = next(s for s in result["stages"] if s["name"] == "export")
    files = ("model.safetensors", "model.actplan.safetensors")  # the checkpoint and its plan
    assert export["bytes_written"] == sum((tmp_path / "w" / f).stat().st_size for f in files)
    resume = result["resume"]
    assert resume["killed"]["outcome"] == "killed on purpose"
    assert 1 <= resume["blocks_done_at_kill"] < resume["blocks"] == 2
    assert resume["equal"] and resume["arrays_compared"] > 0 and not resume["arrays_differing"]
    assert json.loads((tmp_path / "w.json").read_text()) == result

    # a run stopped during evaluation: --resume keeps what was measured, reruns the rest
    stopped = {**result, "stages": result["stages"][:-3]}
    stopped["stages"][-1] = {**stopped["stages"][-1], "outcome": "failed (exit -9)"}
    (tmp_path / "w.json").write_text(json.dumps(stopped))
    (tmp_path / "w" / "model.safetensors").unlink()
    again = realscale("--model", "sd3.5-large-tiny", "--iters", "100",
                      "--workdir", str(tmp_path / "w"), "--resume")  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = json.loads(again.stdout)
    assert [s["name"] for s in resumed["stages"]] == STAGES
    assert resumed["stages"][:-4] == stopped["stages"][:-1]  # kept as measured
    assert all(s["outcome"] == "ok" for s in resumed["stages"])
    assert (tmp_path / "w" / "model.safetensors").is_file()
    assert "resumed: 7 stage(s) kept from the stopped run" in resumed["notes"]


def test_a_stage_over_the_memory_limit_is_reported_and_ends_the_run(tmp_path):
    out = realscale("--model", "sd3.5-large-tiny", "--max-rss-gb", "0.01",
                    "--workdir", str(tmp_path / "w"))  # fmt: skip
    assert out.returncode == 1
    (stage,) = json.loads(out.stdout)["stages"]
    assert stage["name"] == "model build" and stage["outcome"] == "over the memory limit"
    assert stage["peak_rss_bytes"] > 0.01 * 2**30


def test_bad_flags_exit_2_with_one_line(tmp_path):
    out = realscale("--iters", "0", "--workdir", str(tmp_path / "w"))
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --iters must be at least 1"
    out = realscale("--resume", "--workdir", str(tmp_path / "none"))
    assert out.returncode == 2
    expected = "(no none.json beside it, or no store): run without --resume"
    assert out.stderr.strip().endswith(expected)
