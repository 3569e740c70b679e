"""`taq export` -> one safetensors checkpoint: taq-infer runs from it alone with images
bit-identical to the store's, plain MLX (DiffusionKit's MMDiT + `nn.quantize` +
`load_weights`) loads it with outputs identical to taq-infer's weight-only path, and bad
input is refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from taq_calib import CalibConfig, calibrate
from taq_infer import PackedLinear, load_quantized
from taq_infer import cli as infer_cli
from taq_infer.checkpoint import (
    CheckpointError,
    load_checkpoint,
    projected_nbytes,
    read_checkpoint,
)
from taq_io import Store
from taq_model.presets import load_preset
from taq_model.testing import tiny_random_handle
from taq_pipeline import cli as taq_cli
from taq_run.runs import model_identity

STEPS = 4
ENV = {**os.environ, "TAQ_NO_PROGRESS": "1"}


@pytest.fixture
def command(capsys):
    """A console entry point's `main` in this process (as `taq-infer ...`, `taq ...`)."""

    def run(module, *args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = module.main([str(a) for a in args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(module.__name__, code, out.out, out.err)

    return run


@pytest.fixture(scope="module")
def store(build_store):
    """tiny-digits through calib -> cache -> optimize -> collect -> analyze, minimal."""
    return build_store("tiny-digits", ("digit 3", "digit 8"), STEPS, 3.0)


@pytest.fixture(scope="module")
def exported(store, exports):
    """The default (compact) export and a lossless one (float32, float adaLN)."""
    return exports(store)


def generate(model, act_steps=STEPS):
    return np.array(model.generate(["digit 3", "digit 5"], [0, 1], act_steps, 3.0))


@pytest.mark.parametrize("act", ["timestep", "static", "none"])
def test_checkpoint_samples_bit_identical_to_store(store, exported, act):
    compact, exact = exported
    from_store = load_quantized(load_preset("tiny-digits"), store, act=act, other_dtype="float32")
    from_file = load_checkpoint(exact.output, act=act)
    assert np.array_equal(generate(from_store), generate(from_file))
    twin = load_quantized(
        load_preset("tiny-digits"),
        store,
        act=act,
        scale_dtype="float16",
        other_dtype="float16",
        modulation_bits=4,
    )
    first, second = generate(twin), generate(twin)  # adaLN reloads stay the quantized ones
    assert np.array_equal(first, second)
    assert np.array_equal(first, generate(load_checkpoint(compact.output, act=act)))


def test_default_export_is_under_35_percent_of_float16(exported):
    compact, exact = exported
    assert compact.ratio < 0.35, compact.ratio
    assert exact.ratio > compact.ratio
    assert compact.plan is not None and compact.plan.exists()
    assert compact.quantized_layers == 45 and compact.modulation_layers == 9


def test_projected_bytes_match_the_files(exported):
    mmdit = load_preset("tiny-digits").mmdit
    compact, exact = exported
    for summary, dtype, modulation_bits in ((compact, "float16", 4), (exact, "float32", 0)):
        arrays = mx.load(str(summary.output))
        written = sum(a.nbytes for a in arrays.values())
        assert projected_nbytes(mmdit, 4, 64, dtype, modulation_bits) == written


def test_cli_checkpoint_png_equals_store_png(store, exported, tmp_path, command):
    _, exact = exported
    common = ("--prompt", "digit 7", "--steps", STEPS, "--seed", 2)
    a = command(infer_cli, "--store", store.path, "--output", tmp_path / "a.png", *common)
    assert a.returncode == 0, a.stderr
    b = command(infer_cli, "--checkpoint", exact.output, "--output", tmp_path / "b.png", *common)
    assert b.returncode == 0, b.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


README = Path(__file__).parents[1] / "packages" / "taq-infer" / "README.md"
HARNESS = """
inputs = mx.load("inputs.safetensors")
model.cache_modulation_params(inputs["pooled"], inputs["timesteps"])
n = inputs["x"].shape[0]
outputs = {
    f"t{i}": model(inputs["x"], inputs["tokens"], mx.broadcast_to(t, [n]))
    for i, t in enumerate(inputs["timesteps"])
}
mx.save_safetensors("outputs.safetensors", outputs)
"""


def readme_snippet() -> str:
    """The plain-MLX loading snippet of taq-infer's README, as a user would copy it."""
    text = README.read_text()
    start = text.index("```python", text.index("## Plain MLX")) + len("```python")
    return text[start : text.index("```", start)]


def plain_inputs(handle, prompt: str, cfg: float, x_shape, timesteps, seed: int) -> dict:
    """One MMDiT forward's inputs: seeded latents `x_shape`, the prompt's conditioning (CFG
    batch when `cfg`), and the `timesteps` to run at."""
    tokens, pooled = handle.encode([prompt]).model_batch(cfg)
    return {
        "x": mx.random.normal(x_shape, key=mx.random.key(seed)),
        "tokens": mx.expand_dims(tokens, 2),
        "pooled": pooled,
        "timesteps": mx.array(timesteps),
    }


def test_plain_mlx_loads_the_checkpoint_with_identical_outputs(exported, tmp_path, monkeypatch):
    path = exported[0].output  # W4 adaLN too: every nn.Linear a QuantizedLinear but the embedders
    (tmp_path / "model.safetensors").symlink_to(path)
    handle = load_preset("tiny-digits")
    inputs = plain_inputs(handle, "digit 4", 3.0, (2, 16, 16, 1), [1000.0, 250.0], seed=0)
    mx.save_safetensors(str(tmp_path / "inputs.safetensors"), inputs)
    script = tmp_path / "plain.py"
    script.write_text(readme_snippet() + HARNESS)  # a fresh interpreter, the user's imports
    done = subprocess.run(
        [sys.executable, script], cwd=tmp_path, capture_output=True, text=True, env=ENV
    )
    assert done.returncode == 0, done.stderr
    plain = mx.load(str(tmp_path / "outputs.safetensors"))

    monkeypatch.setattr(PackedLinear, "kernel", "quantized")  # MLX's kernel, as nn.QuantizedLinear
    ours = load_checkpoint(path, handle, act="none").handle.mmdit
    ours.cache_modulation_params(inputs["pooled"], inputs["timesteps"])
    for i, t in enumerate(inputs["timesteps"]):
        out = ours(inputs["x"], inputs["tokens"], mx.broadcast_to(t, [2]))
        assert np.array_equal(np.array(out), np.array(plain[f"t{i}"]))
        assert float(mx.abs(out).max()) > 0


def plain_forward(model, inputs) -> list[mx.array]:
    model.cache_modulation_params(inputs["pooled"], inputs["timesteps"])
    n = inputs["x"].shape[0]
    return [
        model(inputs["x"], inputs["tokens"], mx.broadcast_to(t, [n])) for t in inputs["timesteps"]
    ]


def test_flux_like_checkpoint_loads_in_plain_mlx_identically(flux_store, tmp_path, monkeypatch):
    """Unified blocks and rotary embeddings: the FLUX-like store's default export (AdaRound
    weights, W4 adaLN) through the README's load equals taq-infer's weight-only path."""
    path = flux_store[1].output
    (tmp_path / "model.safetensors").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(readme_snippet(), namespace)  # the user's code, in this process
    fresh = load_preset("flux-schnell-tiny")
    inputs = plain_inputs(fresh, "a red cube", 0.0, (1, 8, 8, 16), [1000.0, 500.0], seed=1)
    monkeypatch.setattr(PackedLinear, "kernel", "quantized")
    loaded = load_checkpoint(path, fresh, act="none")
    assert "uni1.unified.mlp.fc2" in loaded.layers
    ours = loaded.handle.mmdit
    for a, b in zip(
        plain_forward(namespace["model"], inputs), plain_forward(ours, inputs), strict=True
    ):
        assert np.array_equal(np.array(a), np.array(b)) and float(mx.abs(a).max()) > 0


def test_checkpoint_of_another_model_is_refused(exported):
    with pytest.raises(CheckpointError, match="was made for tiny-digits"):
        load_checkpoint(exported[0].output, tiny_random_handle(seed=1))


def resave(src, dst, **changes):
    arrays, meta = mx.load(str(src), return_metadata=True)
    mx.save_safetensors(str(dst), arrays, metadata={**meta, **changes})


def one_line_exit_2(result, *phrases):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_bad_checkpoints_exit_2_in_one_line(exported, tmp_path, command):
    src = exported[0].output
    infer = ("--prompt", "digit 1", "--steps", STEPS, "--output", tmp_path / "x.png")
    newer = tmp_path / "newer.safetensors"
    resave(src, newer, **{"taq.format_version": "2"})
    one_line_exit_2(command(infer_cli, "--checkpoint", newer, *infer), "upgrade taq-infer")
    other = tmp_path / "other.safetensors"
    model = json.dumps({"preset": "tiny-digits", "config_hash": "0123456789abcdef"})
    resave(src, other, **{"taq.model": model})
    one_line_exit_2(command(infer_cli, "--checkpoint", other, *infer), "was made for")
    truncated = tmp_path / "truncated.safetensors"
    data = src.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    one_line_exit_2(command(infer_cli, "--checkpoint", truncated, *infer), "truncated")
    flags = command(infer_cli, "--checkpoint", src, "--weights", "rtn", *infer)
    one_line_exit_2(flags, "--store only")
    assert not (tmp_path / "x.png").exists()


def _quantization(src, **changes) -> str:
    quant = json.loads(mx.load(str(src), return_metadata=True)[1]["taq.quantization"])
    return json.dumps({**quant, **changes})


def _first_layer_bits_0(src) -> str:
    quant = json.loads(_quantization(src))
    quant["layers"][next(iter(quant["layers"]))] = {"group_size": 64, "bits": 0}
    return json.dumps(quant)


# a checkpoint someone else crafted: (metadata changes, or arrays to poison) -> the one line
CRAFTED = {
    "model-not-json": ({"taq.model": "{tiny"}, "metadata taq.model is not JSON"),
    "model-extra-key": (
        {"taq.model": json.dumps({"preset": "tiny-digits", "config_hash": "x", "more": 1})},
        "metadata taq.model is not",
    ),
    "layer-bits-0": (_first_layer_bits_0, "has bits 0 and group size 64"),
    "weights-method": (  # any method's name reads (one layout); not a path or markup
        lambda src: _quantization(src, weights="../gptq"),
        "names weights '../gptq'",
    ),
    "sidecar-outside": (
        {"taq.activation_plan": json.dumps({"file": "../plan.safetensors", "sha256": "0" * 64})},
        "names the file '../plan.safetensors', not a plain file name beside it",
    ),
    "static-unknown-layer": (
        {"taq.static_activations": json.dumps({"mm9.image.attn.q_proj": [8, 0.5]})},
        "has static activation scales for mm9.image.attn.q_proj, which it does not quantize",
    ),
    "static-nan": (
        {"taq.static_activations": '{"mm0.image.attn.q_proj": [8, NaN]}'},
        "not [bits 2..8, a finite scale]",
    ),
    "nan-tensor": ("NaN", "holds NaN or inf"),
}


@pytest.mark.parametrize("case", CRAFTED, ids=list(CRAFTED))
def test_a_crafted_checkpoint_is_refused_in_one_line(case, exported, tmp_path, command):
    """Metadata is parsed and checked as a whole, every layer it names must exist, and every
    float tensor must be finite, before any image is made."""
    src = exported[0].output
    changes, message = CRAFTED[case]
    crafted = tmp_path / "crafted.safetensors"
    if changes == "NaN":
        arrays, meta = mx.load(str(src), return_metadata=True)
        key = next(k for k, v in arrays.items() if k.endswith(".scales"))
        arrays[key] = mx.full(arrays[key].shape, float("nan"), arrays[key].dtype)
        mx.save_safetensors(str(crafted), arrays, metadata=meta)
    else:
        changes = {"taq.quantization": changes(src)} if callable(changes) else changes
        resave(src, crafted, **changes)
    png = tmp_path / "x.png"
    out = command(infer_cli, "--checkpoint", crafted, "--prompt", "digit 1", "--output", png)
    one_line_exit_2(out, message)
    assert not png.exists()


def test_export_of_a_store_without_weights_names_the_command(tmp_path, command):
    handle = load_preset("tiny-digits")
    store = Store.create(tmp_path / "bare.zarr", model_identity(handle))
    calibrate(handle, store, CalibConfig("tiny-digits", ("digit 1",), 1, 2, 3.0))
    out = command(taq_cli, "export", "--store", store.path, "--output", tmp_path / "m.safetensors")
    one_line_exit_2(out, "taq-adaround optimize")
    assert not (tmp_path / "m.safetensors").exists()


def test_export_refuses_an_existing_output_unless_overwrite(store, tmp_path, command):
    """Like mlx-lm's convert: an existing checkpoint (or a directory in its place) is never
    replaced without --overwrite, a store never receives one, and nothing partial is left."""
    output = tmp_path / "m.safetensors"
    output.write_bytes(b"mine")
    export = ("export", "--store", store.path, "--output")
    one_line_exit_2(command(taq_cli, *export, output), "exists: pass --overwrite")
    assert output.read_bytes() == b"mine"
    folder = tmp_path / "d.safetensors"
    folder.mkdir()
    one_line_exit_2(command(taq_cli, *export, folder), "is a directory")
    inside = Path(store.path) / "weights" / "m.safetensors"
    one_line_exit_2(command(taq_cli, *export, inside), "is inside the zarr store")
    assert not inside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors", "m.safetensors"]
    assert list(folder.iterdir()) == []
    out = command(taq_cli, *export, output, "--overwrite")
    assert out.returncode == 0, out.stderr
    assert read_checkpoint(output).quantization["weights"] == "adaround"


def test_cli_export_prints_the_ratio(store, tmp_path, command):
    out = command(taq_cli, "export", "--store", store.path, "--output", tmp_path / "m.safetensors")
    assert out.returncode == 0, out.stderr
    assert "% of the float16 MMDiT" in out.stdout and "actplan" in out.stdout
