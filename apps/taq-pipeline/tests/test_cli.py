import os
import subprocess
import sys


def taq(*args):
    env = {**os.environ, "TAQ_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "taq_pipeline", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_doctor_reports_environment_and_store_health(tmp_path):
    out = taq("doctor")
    assert out.returncode == 0 and "gemm fp32" in out.stdout and "blas" in out.stdout
    missing = taq("doctor", "--store", tmp_path / "nope.zarr")
    assert missing.returncode == 2 and "no store at" in missing.stderr


def test_run_refuses_impossible_flags(tmp_path):
    for flag, least in (("--num-images", 1), ("--eval-samples", 2), ("--num-steps", 1)):
        out = taq("run", "--store", tmp_path / "s.zarr", flag, "0")
        assert out.returncode == 2, flag
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{flag} must be at least {least}" in lines[0], lines


def test_report_and_eval_refuse_a_store_without_their_inputs(tmp_path):
    report = taq("report", "--store", tmp_path / "none.zarr")
    assert report.returncode == 2 and len(report.stderr.strip().splitlines()) == 1
    evaluation = taq("eval", "--store", tmp_path / "none.zarr")
    assert evaluation.returncode == 2 and len(evaluation.stderr.strip().splitlines()) == 1


def test_run_flags_mirror_the_config_fields():
    from dataclasses import fields

    from taq_pipeline.pipeline import RunConfig

    out = taq("run", "--help")
    assert out.returncode == 0
    for item in fields(RunConfig):
        if item.name != "method_flags":  # the weight methods' own flags, from their configs
            assert f"--{item.name.replace('_', '-')}" in out.stdout, item.name
