import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from taq_hooks import hook_blocks, hook_layers, hooked_by, replay_block
from taq_model.taxonomy import get_block


def _keys(module):
    return [key for key, _ in tree_flatten(module.parameters())]


def _rel_err(a, b):
    return (mx.abs(a - b).max() / mx.abs(b).max()).item()


def test_parameter_paths_and_types_unchanged_while_hooked(run):
    before = _keys(run.mmdit)
    block_type = type(get_block(run.mmdit, "mm0"))
    with hook_blocks(run.mmdit) as hooks:
        assert _keys(run.mmdit) == before
        assert isinstance(get_block(run.mmdit, "mm0"), block_type)
        run.forward(run.timesteps[0])
        hooks.flush()
        assert _keys(run.mmdit) == before  # recordings never become parameters
    assert _keys(run.mmdit) == before
    assert type(get_block(run.mmdit, "mm0")) is block_type


def test_hook_returns_the_real_outputs(run):
    expected = run.forward(run.timesteps[0])
    with hook_blocks(run.mmdit, ["mm0", "mm1"]) as hooks:
        out = run.forward(run.timesteps[0])
        calls = hooks.flush(out)
    assert mx.array_equal(out, expected).item()
    assert [len(calls[name]) for name in ("mm0", "mm1")] == [1, 1]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt], ids=["error", "ctrl-c"])
def test_model_restored_after_exception(run, error):
    block = get_block(run.mmdit, "mm1")
    block_type = type(block)
    with pytest.raises(error):
        with hook_blocks(run.mmdit):
            run.forward(run.timesteps[0])
            raise error("boom")
    assert type(block) is block_type and hooked_by(block) is None
    with hook_blocks(run.mmdit) as hooks:  # hookable again
        assert len(hooks) == 2


def test_double_wrap_refused(run):
    with hook_blocks(run.mmdit, ["mm0"]):
        with pytest.raises(RuntimeError, match="mm0 is already hooked"):
            with hook_blocks(run.mmdit, ["mm1", "mm0"]):
                pass
        assert hooked_by(get_block(run.mmdit, "mm1")) is None  # partial install undone
        assert hooked_by(get_block(run.mmdit, "mm0")) is not None  # outer hook untouched
    with pytest.raises(RuntimeError, match="already hooked"):
        with hook_blocks(run.mmdit, ["mm0", "mm0"]):
            pass


def test_unknown_block_is_a_clear_error(run):
    with pytest.raises(ValueError, match="unknown block 'mm7'"):
        with hook_blocks(run.mmdit, ["mm7"]):
            pass


def test_records_inputs_outputs_and_modulation_per_timestep(run):
    with hook_blocks(run.mmdit) as hooks:
        for timestep in run.timesteps:
            run.forward(timestep)
        calls = hooks.flush()
    first, second = calls["mm0"]
    assert (first.timestep_key, second.timestep_key) == run.timesteps
    image = get_block(run.mmdit, "mm0").image_transformer_block
    assert first.modulation["image"] is image._modulation_params[run.timesteps[0]]
    assert set(first.modulation) == {"image", "text"}
    assert first.args[0].shape == (1, 16, 1, 64) and first.args[1].shape == (1, 5, 1, 64)
    # mm1's inputs are mm0's outputs; the last MM block returns no text
    assert mx.array_equal(calls["mm1"][0].args[0], first.outputs[0]).item()
    assert calls["mm1"][0].outputs[1] is None


@pytest.mark.parametrize("depth_unified", [0, 1], ids=["mm-only", "with-unified"])
def test_replay_reproduces_recorded_outputs(run_factory, depth_unified):
    run = run_factory(depth_unified=depth_unified)
    with hook_blocks(run.mmdit) as hooks:
        for timestep in run.timesteps:
            run.forward(timestep)
        calls = hooks.flush()
    run.mmdit.clear_modulation_params_cache()  # replay must rely on the recording alone
    for name, block_calls in calls.items():
        block = get_block(run.mmdit, name)
        for call in block_calls:
            replayed = tree_flatten(replay_block(block, call))
            recorded = tree_flatten(call.outputs)
            assert [key for key, _ in replayed] == [key for key, _ in recorded]
            for (_, out), (_, expected) in zip(replayed, recorded, strict=True):
                if expected is None:
                    assert out is None
                else:
                    assert _rel_err(out, expected) < 1e-5


def test_cfg_batch_is_recorded_whole(cfg_run):
    with hook_blocks(cfg_run.mmdit, ["mm0"]) as hooks:
        cfg_run.forward(cfg_run.timesteps[0])
        (call,) = hooks.flush()["mm0"]
    assert call.args[0].shape[0] == call.args[1].shape[0] == 2
    assert call.outputs[0].shape[0] == 2 and call.modulation["image"].shape[0] == 2


def test_clear_drops_recordings(run):
    with hook_blocks(run.mmdit, ["mm0"]) as hooks:
        run.forward(run.timesteps[0])
        hooks.clear()
        assert hooks.flush() == {"mm0": []}


def test_one_evaluation_per_forward_pass(run, monkeypatch):
    evals = []
    real_eval = mx.eval
    monkeypatch.setattr(mx, "eval", lambda *args: evals.append(args) or real_eval(*args))
    with hook_blocks(run.mmdit) as blocks, hook_layers(run.mmdit, "mm1.*") as layers:
        out = run.forward(run.timesteps[0])
        assert evals == []  # recording never evaluates
        blocks.flush(out)
        assert len(evals) == 1
        blocks["mm0"].flush()  # nothing left to evaluate
        assert len(evals) == 1
    assert len(layers.flush()["mm1.image.mlp.fc2"]) == 1 and len(evals) == 2
