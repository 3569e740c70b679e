"""`taq-bench blocks` on toy configs of the same families (the real shapes take minutes)."""

import subprocess
import sys

import pytest

from taq_bench.blocks import SHAPES, bench_block, project_models
from taq_model.families import tiny_family_config


@pytest.fixture(scope="module")
def flux_results():
    config = tiny_family_config("flux-schnell")
    results = [bench_block(SHAPES[n], 16, config=config) for n in ("flux-mm", "flux-uni")]
    return config, results


def test_w4_block_is_packed_and_close_to_fp32(flux_results):
    _, results = flux_results
    for r in results:
        assert r.image_tokens == 16 and r.text_tokens == 256 and r.hidden == 64
        assert r.fp32_seconds > 0 and r.w4_seconds > 0
        # 4-bit codes + float16 scale and bias per group of 64: 4.5 bits of 16, plus biases
        assert 0.28 <= r.linears_w4 / r.linears_fp16 <= 0.33
        assert r.block_fp16 >= r.linears_fp16 and r.block_w4 >= r.linears_w4
        assert 1e-4 < r.relative_error < 0.05  # really quantized, still the same function


def test_projection_counts_every_block_kind(flux_results):
    config, results = flux_results
    (projection,) = project_models(results, {"flux-schnell": config})
    assert projection.blocks == "2 mm + 2 uni"
    blocks_w4 = 2 * results[0].block_w4 + 2 * results[1].block_w4
    blocks_fp16 = 2 * results[0].block_fp16 + 2 * results[1].block_fp16
    other = projection.fp16_bytes - blocks_fp16
    assert other > 0 and projection.w4_bytes == other + blocks_w4
    # an SD3.5 block alone cannot project FLUX (its unified blocks were not measured)
    assert project_models(results[:1], {"flux-schnell": config}) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-tokens", "10"], "--image-tokens 10 is not a square"),
        (["--shapes", "flux-dit"], "unknown block shape(s) flux-dit: choose from sd3-medium-mm"),
    ],
    ids=["non-square", "unknown-shape"],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    out = subprocess.run(
        [sys.executable, "-m", "taq_bench", "blocks", *args], capture_output=True, text=True
    )
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert message in line
