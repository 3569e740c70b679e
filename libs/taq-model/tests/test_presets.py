import json
import sys

import pytest

from taq_model.presets import ModelError, load_preset, plugin_presets
from taq_model.taxonomy import block_names, get_layer, quantizable_layers


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ModelError, match="tiny-digits, sd3-medium-random, sd3-medium"):
        load_preset("sd4")


def test_sd3_medium_without_weights_says_how_to_point_at_a_checkpoint(tmp_path):
    with pytest.raises(ModelError, match="--local-ckpt"):
        load_preset("sd3-medium", local_ckpt=str(tmp_path / "missing.safetensors"))


def test_empty_prompt_is_refused(random_handle):
    with pytest.raises(ModelError, match="empty prompt"):
        random_handle.encode(["  "])


def test_identity_changes_with_weights(random_handle, random_handle_factory):
    other = random_handle_factory(seed=2)
    assert other.identity_config["preset"] == random_handle.identity_config["preset"]
    assert other.identity_config["weights"] != random_handle.identity_config["weights"]


def test_taxonomy_names_every_quantizable_linear(random_handle):
    mmdit = random_handle.mmdit
    assert block_names(mmdit) == ["mm0", "mm1"]
    names = [ref.name for ref in quantizable_layers(mmdit)]
    # the last MM block's text stream has no post-attention layers
    assert "mm1.text.attn.q_proj" in names and "mm1.text.mlp.fc2" not in names
    assert "mm1.text.attn.o_proj" not in names
    assert len(names) == 6 + 6 + 6 + 3
    assert not any("adaLN" in n for n in names)
    assert get_layer(mmdit, "mm0.image.mlp.fc2").weight.shape == (64, 256)
    fc2 = quantizable_layers(mmdit, "mm*.image.mlp.fc2")
    assert [r.name for r in fc2] == ["mm0.image.mlp.fc2", "mm1.image.mlp.fc2"]
    assert all(r.is_post_gelu for r in fc2)


def test_doctor_reports_blas_and_gemm_rate(run_command):
    out = run_command("taq_model", "doctor", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["gemm_gflops"] > 0
    if sys.platform == "linux":
        assert report["blas"] == "openblas", "install libopenblas0-pthread (see README)"


def test_cli_bad_preset_exits_2_with_one_line(run_command, tmp_path):
    out = run_command("taq_model", "sample", "--model", "sd4", "--output", tmp_path / "x.png")
    assert out.returncode == 2
    expected = "error: unknown model preset 'sd4': choose one of tiny-digits, sd3-medium-random, "
    expected += "sd3-medium, sd3.5-large, flux-schnell, sd3.5-large-tiny, flux-schnell-tiny, "
    expected += "sd3.5-large-wide, flux-schnell-wide"
    plugins = "".join(f", {name}" for name in sorted(plugin_presets()))  # e.g. tiny-shapes
    assert out.stderr.strip().splitlines() == [expected + plugins]
