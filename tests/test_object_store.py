"""A store on object storage: `taq run` on `s3://` against a real S3-compatible server (moto's
server mode, started here on 127.0.0.1), killed mid-optimize and resumed, ends with the local
run's numbers; one writer per store through the lock object; a store URL that cannot be used
(no server, no credentials, no bucket) is refused in one line by every command, writing
nothing."""

import json
import logging
import signal
import socket
import subprocess
import sys
import time

import pytest

from taq_actstats.cli import main as actstats_main
from taq_adaround.cli import main as adaround_main
from taq_calib.cli import main as calib_main
from taq_infer.cli import main as infer_main
from taq_io import Store
from taq_io.lock import LOCK_FILE
from taq_pipeline.cli import main as taq_main
from taq_pipeline.testing import ENV, MINIMAL
from taq_run.runs import model_identity
from taq_runtime.testing import HANG_GUARD_S

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "taq"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; yields the environment that reaches it
    (botocore's standard variables, as a user would set them)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups for credentials
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    bucket_fs(env).mkdir(BUCKET)
    yield env
    server.stop()


def bucket_fs(env: dict):
    """The test's own view of the bucket (not through taq)."""
    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": "eu-west-1"},
        skip_instance_cache=True,
    )


def keys(fs) -> list[str]:
    fs.invalidate_cache()
    return sorted(fs.find(BUCKET))


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The server's environment in this process; fsspec's cached filesystems dropped, since
    each was made under the environment of the test before."""
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TAQ_NO_PROGRESS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3
    s3fs.S3FileSystem.clear_instance_cache()


def report(directory) -> dict:
    return json.loads((directory / "run-report" / "report.json").read_text())


def test_run_on_s3_killed_mid_optimize_resumes_to_the_local_numbers(finished, s3, tmp_path):
    url = f"s3://{BUCKET}/run.zarr"
    env = {**ENV, **s3}
    cmd = [sys.executable, "-m", "taq_pipeline", "run", "--store", url, *MINIMAL]
    fs = bucket_fs(s3)
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and proc.poll() is None:
        fs.invalidate_cache()
        if fs.exists(f"{BUCKET}/run.zarr/weights"):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert fs.exists(f"{BUCKET}/run.zarr/{LOCK_FILE}")  # left by the killed writer
    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "already complete, skipped" in resumed.stdout  # resumed, not restarted
    assert "evaluation and report are local files" in resumed.stdout
    got, want = report(tmp_path)["variants"], report(finished[0].parent)["variants"]
    for a, b in zip(got, want, strict=True):
        assert a["name"] == b["name"]
        for key in ("mse", "psnr_db", "accuracy", "frechet", "weight_bytes", "act_bits"):
            assert a[key] == b[key], (a["name"], key)
    assert not fs.exists(f"{BUCKET}/run.zarr/{LOCK_FILE}")  # released at exit
    doctor = subprocess.run(  # --verify reads every chunk: a minute of round trips, not run
        [sys.executable, "-m", "taq_pipeline", "doctor", "--store", url],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert doctor.returncode == 0, doctor.stderr
    assert "weights/adaround: complete" in doctor.stdout


def test_one_writer_per_store_on_s3(s3_env, tmp_path, capsys):
    url = f"s3://{BUCKET}/locked.zarr"
    fs = bucket_fs(s3_env)
    store = Store.create(url, load_model_identity())
    try:
        second = subprocess.run(
            [sys.executable, "-m", "taq_adaround", "cache", "--store", url],
            env={**ENV, **s3_env},
            capture_output=True,
            text=True,
        )
        (line,) = second.stderr.strip().splitlines()
        assert second.returncode == 2
        assert f"error: {url} is being written by pid " in line and "wait for it" in line
    finally:
        store.close()
    assert not fs.exists(f"{BUCKET}/locked.zarr/{LOCK_FILE}")
    # a lock left by a writer on another machine: nothing can tell it is dead; refused, with
    # the object to delete named
    record = {"pid": 1, "host": "elsewhere", "command": "taq run", "since": "now"}
    fs.pipe_file(f"{BUCKET}/locked.zarr/{LOCK_FILE}", json.dumps(record).encode())
    assert adaround_main(["cache", "--store", url]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pid 1 on elsewhere" in line and f"delete {url}/{LOCK_FILE}" in line
    fs.rm(f"{BUCKET}/locked.zarr", recursive=True)


def test_two_writers_on_one_s3_store_at_once(s3_env, tmp_path, capsys):
    """A writer (another process) holds the lock object of a new store while a second starts:
    the second is refused in one line naming the first, and the first finishes a store that
    verifies."""
    url = f"s3://{BUCKET}/two.zarr"
    fs = bucket_fs(s3_env)
    calib = ["--store", url, "--num-images", "2", "--num-steps", "20"]
    first = subprocess.Popen(
        [sys.executable, "-m", "taq_calib", *calib],
        env={**ENV, **s3_env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = f"{BUCKET}/two.zarr/{LOCK_FILE}"
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and first.poll() is None:
        fs.invalidate_cache()
        try:
            if json.loads(fs.cat_file(lock)).get("pid") == first.pid:
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    try:
        assert calib_main(calib) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"error: {url} is being written by pid {first.pid}" in line, line
    finally:
        assert first.wait(timeout=HANG_GUARD_S) == 0, first.stderr.read()
    Store.open(url).require_group("calib", verify=True)
    assert not fs.exists(lock)
    fs.rm(f"{BUCKET}/two.zarr", recursive=True)


def load_model_identity():
    from taq_model.presets import load_preset

    return model_identity(load_preset("tiny-digits"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


COMMANDS = {
    "taq run": lambda url: taq_main(["run", "--store", url, *MINIMAL]),
    "taq doctor": lambda url: taq_main(["doctor", "--store", url]),
    "taq report": lambda url: taq_main(["report", "--store", url]),
    "taq export": lambda url: taq_main(["export", "--store", url, "--output", "x.safetensors"]),
    "taq-calib": lambda url: calib_main(["--store", url]),
    "taq-adaround": lambda url: adaround_main(["optimize", "--store", url]),
    "taq-actstats": lambda url: actstats_main(["collect", "--store", url]),
    "taq-infer": lambda url: infer_main(["--store", url, "--prompt", "3", "--output", "x.png"]),
}
PROBLEMS = {
    "unreachable": ("cannot reach s3://taq/run.zarr", "AWS_ENDPOINT_URL"),
    "no-credentials": ("no credentials for s3://taq/run.zarr", "AWS_ACCESS_KEY_ID"),
    "no-bucket": ("bucket missing of s3://missing/run.zarr does not exist", "aws s3 mb"),
}


# every problem through `taq run`, every command through one: the probe is taq-io's, shared
CASES = [("taq run", problem) for problem in PROBLEMS]
CASES += [(command, "no-credentials") for command in COMMANDS if command != "taq run"]


@pytest.mark.parametrize(("command", "problem"), CASES, ids=[f"{c}-{p}" for c, p in CASES])
def test_unusable_store_url_is_one_line_exit_2_and_writes_nothing(
    s3_env, monkeypatch, capsys, tmp_path, command, problem
):
    monkeypatch.chdir(tmp_path)
    fs = bucket_fs(s3_env)
    before = keys(fs)
    url = f"s3://{BUCKET}/run.zarr"
    if problem == "unreachable":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    elif problem == "no-credentials":
        for name in CREDENTIALS:
            monkeypatch.delenv(name)
    else:
        url = "s3://missing/run.zarr"
    code = COMMANDS[command](url)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    message, fix = PROBLEMS[problem]
    assert code == 2 and message in lines[0] and fix in lines[0], lines[0]
    assert keys(fs) == before and not fs.exists("missing")
    assert not any(tmp_path.iterdir())
