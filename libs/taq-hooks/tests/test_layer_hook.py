import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from taq_hooks import hook_blocks, hook_layers, hooked_by
from taq_model.taxonomy import get_layer, quantizable_layers


def _keys(module):
    return [key for key, _ in tree_flatten(module.parameters())]


def test_selects_layers_by_pattern_and_keeps_paths(run):
    before = _keys(run.mmdit)
    with hook_layers(run.mmdit, "mm*.image.mlp.fc2") as hooks:
        assert list(hooks) == ["mm0.image.mlp.fc2", "mm1.image.mlp.fc2"]
        assert _keys(run.mmdit) == before
        run.forward(run.timesteps[0])
        hooks.flush()
        assert _keys(run.mmdit) == before
    assert _keys(run.mmdit) == before
    assert all(
        hooked_by(get_layer(run.mmdit, ref.name)) is None for ref in quantizable_layers(run.mmdit)
    )


def test_recorded_input_equals_manual_computation(run):
    timestep = mx.array([run.timesteps[1]])
    with (
        hook_blocks(run.mmdit, ["mm0"]) as blocks,
        hook_layers(
            run.mmdit, "mm0.image.attn.q_proj,mm0.text.mlp.fc2", record_output=True
        ) as layers,
    ):
        run.forward(run.timesteps[1])
        (block_call,) = blocks.flush()["mm0"]
        (q_call,) = layers["mm0.image.attn.q_proj"].flush()
        (fc2_call,) = layers["mm0.text.mlp.fc2"].flush()
    block = run.mmdit.multimodal_transformer_blocks[0]
    image_in = block_call.args[0]
    expected = block.image_transformer_block.pre_sdpa(image_in, timestep)["modulated_pre_attention"]
    assert mx.allclose(q_call.x, expected, rtol=1e-5, atol=1e-6).item()
    q_proj = block.image_transformer_block.attn.q_proj
    assert mx.array_equal(q_call.y, q_proj(q_call.x)).item()
    assert fc2_call.x.shape == (1, 5, 1, 4 * 64)  # post-GELU: the MLP's hidden width


def test_observer_streams_calls_and_stores_nothing(run):
    seen = []
    with hook_layers(
        run.mmdit, "mm0.*", observer=lambda name, x, y: seen.append((name, x.shape))
    ) as hooks:
        run.forward(run.timesteps[0])
        run.forward(run.timesteps[1])
        assert hooks.flush() == {name: [] for name in hooks}
    assert len(seen) == 2 * len(hooks)
    assert ("mm0.image.attn.q_proj", (1, 16, 1, 64)) in seen


def test_cfg_batch_is_recorded_whole(cfg_run):
    with hook_layers(cfg_run.mmdit, "mm1.image.mlp.fc1") as hooks:
        cfg_run.forward(cfg_run.timesteps[0])
        (call,) = hooks["mm1.image.mlp.fc1"].flush()
    assert call.x.shape[0] == 2 and call.y is None


def test_restored_after_exception_and_double_wrap_refused(run):
    layer = get_layer(run.mmdit, "mm0.image.mlp.fc1")
    layer_type = type(layer)
    with pytest.raises(RuntimeError, match="mm0.image.mlp.fc1 is already hooked"):
        with hook_layers(run.mmdit, "mm0.image.mlp.*"):
            with hook_layers(run.mmdit, "mm0.image.mlp.fc1"):
                pass
    assert type(layer) is layer_type and hooked_by(layer) is None


def test_pattern_matching_nothing_is_an_error(run):
    with pytest.raises(ValueError, match="no quantizable layer matches"):
        with hook_layers(run.mmdit, "mm9.*"):
            pass
