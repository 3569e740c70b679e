"""A weight method added through the registry alone (an installed distribution with a
`taq.weight_methods` entry point, made here, not shipped) appears in every place that offers
a choice of method, with no other edit: its stage command and flags, `taq run`, `taq eval`'s
variants and claims, the report, `taq sweep` (which also reuses the run's recorded config:
`--scale-method minmax` stays minmax), `taq-infer --weights` and `taq export`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from taq_io import Store
from taq_pipeline.testing import ENV, MINIMAL
from taq_run.weights import grid_of, require_weights

PLUGIN = textwrap.dedent(
    '''
    """Round-to-nearest under another name, with a flag of its own: a test's method."""
    from dataclasses import dataclass, field

    from taq_adaround.rtn import rtn_weights
    from taq_run.weight_methods import WeightMethod
    from taq_run.weights import GridConfig


    @dataclass(frozen=True)
    class ProbeConfig(GridConfig):
        shrink: float = field(default=1.0, metadata={"help": "probe: a flag it records"})


    METHOD = WeightMethod(
        name="probe",
        label="Probe",
        config=ProbeConfig,
        quantize_block=rtn_weights,
        summary="a test's method",
        order=70,
    )
    '''
)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """An environment where a distribution `taq-probe` registers the method `probe`."""
    site = tmp_path_factory.mktemp("site")
    (site / "taq_probe.py").write_text(PLUGIN)
    info = site / "taq_probe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: taq-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[taq.weight_methods]\nprobe = taq_probe:METHOD\n")
    path = os.pathsep.join(p for p in (str(site), ENV.get("PYTHONPATH")) if p)
    return {**ENV, "PYTHONPATH": path}


def run(env, *args) -> subprocess.CompletedProcess:
    module = {"taq": "taq_pipeline", "taq-adaround": "taq_adaround", "taq-infer": "taq_infer"}
    cmd = [sys.executable, "-m", module[args[0]], *map(str, args[1:])]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_a_registered_method_appears_everywhere(plugin_env, tmp_path):
    helps = run(plugin_env, "taq-adaround", "probe", "--help")
    assert helps.returncode == 0 and "--shrink" in helps.stdout and "[1.0]" in helps.stdout
    assert "--shrink" in run(plugin_env, "taq", "run", "--help").stdout
    assert "probe" in run(plugin_env, "taq-infer", "--help").stdout

    store = tmp_path / "run.zarr"
    flags = ("--weights", "rtn,probe", "--scale-method", "minmax", "--shrink", "0.5")
    out = run(plugin_env, "taq", "run", "--store", store, *MINIMAL, *flags)
    assert out.returncode == 0, out.stderr
    assert "== weights probe" in out.stdout and "== weights adaround" not in out.stdout
    opened = Store.open(store, mode="r")
    probe = require_weights(opened, "probe")
    assert probe.meta.config["shrink"] == 0.5 and grid_of(probe).bits_w == 4
    assert probe.meta.config["scale_method"] == "minmax"

    report = json.loads((tmp_path / "run-report" / "report.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names[:3] == ["FP", "RTN W4", "Probe W4"]
    assert "Probe W4 + time-aware A4/A6/A8" in names  # the last method's activation variants
    pairs = [(c["better"], c["worse"]) for c in report["intervals"]["comparisons"]]
    assert ("Probe W4", "RTN W4") in pairs
    assert [m["method"] for m in report["weight_methods"]] == ["rtn", "probe"]
    md = (tmp_path / "run-report" / "report.md").read_text()
    assert "| Probe | W4 | " in md and "| Probe W4 | " in md

    evaluated = run(plugin_env, "taq", "eval", "--store", store, "--eval-samples", "4")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Probe W4 vs RTN W4: " in evaluated.stdout

    image = tmp_path / "probe.png"
    args = ("--store", store, "--weights", "probe", "--act", "none", "--steps", "4")
    args += ("--prompt", "digit 3", "--output", image)
    inferred = run(plugin_env, "taq-infer", *args)
    assert inferred.returncode == 0, inferred.stderr
    assert "(probe, group 64)" in inferred.stdout and image.stat().st_size > 100

    checkpoint = tmp_path / "probe.safetensors"
    exported = run(
        plugin_env, "taq", "export", "--store", store, "--weights", "probe", "--output", checkpoint
    )
    assert exported.returncode == 0, exported.stderr
    assert "--weights probe" in exported.stdout and checkpoint.stat().st_size > 1000

    # the sweep: every method of the run at each width, with the run's recorded config (minmax)
    # for what it does not vary
    tiny = ("--weight-bits", "3", "--avg-bits", "8", "--plans", "static", "--recipes", "taq")
    swept = run(plugin_env, "taq", "sweep", "--store", store, *tiny, "--eval-samples", "2")
    assert swept.returncode == 0, swept.stderr
    sibling = Store.open(tmp_path / "run-sweep" / "w3.zarr", mode="r")
    for method in ("rtn", "probe"):
        group = require_weights(sibling, method)
        recorded = group.meta.config
        assert recorded["scale_method"] == "minmax" and recorded["bits_w"] == 3, method
    assert require_weights(sibling, "probe").meta.config["shrink"] == 0.5
    table = (tmp_path / "run-sweep" / "sweep.md").read_text()
    assert "| Probe W3 | W3 |" in table and "- Probe W3 vs RTN W3: " in table
