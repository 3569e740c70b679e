"""`--recipe taq-dit` against a NumPy reference of the seed's algorithm on a synthetic trace:
AvgMinMax of the momentum-shifted input, tails from the re-binned histograms, the absolute
thresholds applied by hand, SmoothQuant candidates dropping one tier."""

import numpy as np
import pytest

from taq_actstats.analyze import momentum_shift
from taq_actstats.collect import BINS, histogram
from taq_actstats.recipes import avg_min_max, histogram_quantile, taq_dit_plan
from taq_actstats.tiers import TierRule
from taq_io import Store

NAMES = ["mm0.image.attn.q_proj", "mm0.image.mlp.fc2", "mm1.text.attn.o_proj"]
WIDTHS = np.array([48, 48, 40])
IMAGES, STEPS, TOKENS, CHANNELS = 5, 4, 40, 48


def synthetic_trace(seed=0):
    """Inputs `(image, layer, step, token, channel)`; layer 1 is a shifted post-GELU input,
    layer 2 is narrower (NaN-padded) with one spiking channel."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(IMAGES, 3, STEPS, TOKENS, CHANNELS))
    x *= np.array([1.2, 2.0, 0.5])[None, :, None, None, None]
    x *= np.linspace(1.0, 3.0, STEPS)[None, None, :, None, None]  # ranges grow with the step
    x[:, 1] = np.maximum(x[:, 1], -0.17) + 1.5  # GELU-like, off-centre
    x[:, 2, ..., 40:] = np.nan
    x[:, 2, ..., 0] *= 40.0  # one outlier channel
    return x


def seed_reference(x, rule, margin=1.0):
    """The seed's algorithm written out directly on the activations."""
    shift = np.zeros((3, STEPS, CHANNELS))
    for li in (1,):  # fc2: shift = 0.95 shift + 0.05 midpoint, from image 0's midpoint
        for image in range(IMAGES):
            mid = (np.nanmin(x[image, li], axis=1) + np.nanmax(x[image, li], axis=1)) / 2
            shift[li] = mid if image == 0 else 0.95 * shift[li] + 0.05 * mid
    shifted = x - shift[None, :, :, None, :]
    low = np.nanmin(shifted, axis=(3, 4)).mean(axis=0)  # AvgMinMax: mean of per-image extrema
    high = np.nanmax(shifted, axis=(3, 4)).mean(axis=0)
    absmax = margin * np.maximum(np.abs(low), np.abs(high)).T  # (step, layer)
    edges = np.zeros((3, STEPS, BINS + 1))
    tails = np.zeros((STEPS, 3))
    for li in range(3):
        for s in range(STEPS):
            first = x[0, li, s][~np.isnan(x[0, li, s])]
            edges[li, s] = np.linspace(first.min(), first.max(), BINS + 1)  # fixed by image 0
            pooled = np.zeros(BINS, np.int64)
            for image in range(IMAGES):  # later images clipped into the end bins
                values = x[image, li, s][~np.isnan(x[image, li, s])]
                clipped = np.clip(values, edges[li, s, 0], edges[li, s, -1])
                pooled += np.histogram(clipped, edges[li, s])[0]
            centres = np.abs((edges[li, s, 1:] + edges[li, s, :-1]) / 2)
            samples = np.repeat(centres, pooled)
            p99, p50 = (np.percentile(samples, q, method="inverted_cdf") for q in (99, 50))
            tails[s, li] = p99 / p50
    gelu = np.array([False, True, False])
    a4 = np.where(gelu, rule.gelu_a4, rule.other_a4)
    a6 = np.where(gelu, rule.gelu_a6, rule.other_a6)
    bits = np.where(absmax < a4, 4, np.where(absmax < a6, 6, 8))
    bits = np.where(tails > rule.outlier_ratio, 8, bits)
    return shift, low, high, absmax, tails, bits


def project_inputs(x):
    """What `collect` stores: per-image channel extrema and image-0-edged histograms."""
    cmin, cmax = np.nanmin(x, axis=3), np.nanmax(x, axis=3)  # (image, layer, step, ch)
    edges = np.zeros((3, STEPS, BINS + 1), np.float32)
    counts = np.zeros((3, STEPS, BINS), np.int64)
    for li in range(3):
        for s in range(STEPS):
            first = x[0, li, s][~np.isnan(x[0, li, s])]
            edges[li, s] = np.linspace(first.min(), first.max(), BINS + 1)
            for image in range(IMAGES):
                values = x[image, li, s][~np.isnan(x[image, li, s])]
                counts[li, s] += histogram(values.astype(np.float32), edges[li, s])
    return cmin, cmax, edges, counts


def weights(name):
    rng = np.random.default_rng(len(name))
    return rng.normal(size=(16, WIDTHS[NAMES.index(name)]))


RULE = TierRule(
    rule="absolute", gelu_a4=4.0, gelu_a6=12.0, other_a4=5.0, other_a6=9.0, outlier_ratio=8.5
)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_taq_dit_statistics_equal_the_seed():
    x = synthetic_trace()
    shift_ref, low_ref, high_ref, absmax_ref, tails_ref, bits_ref = seed_reference(x, RULE)
    cmin, cmax, edges, counts = project_inputs(x)
    gelu = np.array([False, True, False])
    shift = np.where(gelu[:, None, None], momentum_shift(cmin, cmax), 0.0)
    np.testing.assert_allclose(np.nan_to_num(shift), shift_ref, rtol=1e-10, atol=1e-12)
    low, high = avg_min_max(cmin, cmax, shift)
    np.testing.assert_allclose(low, low_ref, rtol=1e-10)
    np.testing.assert_allclose(high, high_ref, rtol=1e-10)
    plan = taq_dit_plan(NAMES, WIDTHS, cmin, cmax, shift, edges, counts, weights, RULE)
    np.testing.assert_allclose(plan["grid_absmax"], absmax_ref, rtol=1e-10)
    np.testing.assert_allclose(plan["tails"], tails_ref, rtol=1e-6)
    np.testing.assert_array_equal(plan["bits"], bits_ref)
    assert len(np.unique(bits_ref)) == 3  # the trace reaches every tier
    assert absmax_ref[2, 1] < RULE.gelu_a6 and bits_ref[2, 1] == 8  # heavy tails force A8
    # only the spiking layer is a SmoothQuant candidate; it drops one tier, never below A4
    smoothed = (np.nan_to_num(plan["smoothing"], nan=1.0) != 1.0).any(axis=1)
    assert smoothed.tolist() == [False, False, True]
    np.testing.assert_array_equal(plan["sq_bits"][:, :2], bits_ref[:, :2])
    np.testing.assert_array_equal(plan["sq_bits"][:, 2], np.maximum(bits_ref[:, 2] - 2, 4))
    channel = np.maximum(np.abs(cmin[:, 2, :, :40].mean(0)), np.abs(cmax[:, 2, :, :40].mean(0)))
    peak = channel.max(axis=0)
    scales = np.sqrt(peak) / np.sqrt(np.abs(weights(NAMES[2])).max(axis=0))
    np.testing.assert_allclose(plan["smoothing"][2, :40], scales, rtol=1e-5)
    smoothed_x = x[:, 2, ..., :40] / scales
    expected = np.maximum(
        np.abs(smoothed_x.min(axis=(2, 3)).mean(0)), np.abs(smoothed_x.max(axis=(2, 3)).mean(0))
    )
    np.testing.assert_allclose(plan["sq_absmax"][:, 2], expected, rtol=1e-5)


def test_histogram_quantile_is_the_inverted_cdf():
    rng = np.random.default_rng(4)
    edges = np.sort(rng.normal(size=(3, 11)), axis=-1)
    counts = rng.integers(0, 20, (3, 10))
    for q in (0.5, 0.9, 0.99):
        got = histogram_quantile(edges, counts, q)
        for row in range(3):
            centres = np.abs((edges[row, 1:] + edges[row, :-1]) / 2)
            samples = np.repeat(centres, counts[row])
            assert got[row] == np.percentile(samples, 100 * q, method="inverted_cdf")


def test_analyze_recipe_taq_dit(collected_copy, cli):
    out = cli("analyze", "--store", collected_copy)
    assert out.returncode == 0, out.stderr
    ours = Store.open(collected_copy).require_group("quant_config")
    assert "recipe" not in ours.meta.config  # the default's config (and hash) is unchanged
    out = cli("analyze", "--store", collected_copy, "--recipe", "taq-dit", "--overwrite",
              "--other-a6", "9.5")  # fmt: skip
    assert out.returncode == 0, out.stderr
    paper = Store.open(collected_copy).require_group("quant_config")
    config = paper.meta.config
    assert config["recipe"] == "taq-dit" and config["range_margin"] == 1.0
    assert config["rule"]["rule"] == "absolute" and config["rule"]["other_a6"] == 9.5
    assert config["smooth_min_spike"] == 5.0 and config["static_cap"] is False
    stats = Store.open(collected_copy).require_group("actstats")
    cmin, cmax = stats.read("channel_min"), stats.read("channel_max")
    gelu = paper.read("post_gelu")
    with np.errstate(all="ignore"):
        shift = np.where(gelu[:, None, None], momentum_shift(cmin, cmax), 0.0)
        low = np.nanmin(cmin - shift, axis=-1).mean(axis=0)
        high = np.nanmax(cmax - shift, axis=-1).mean(axis=0)
    absmax = np.maximum(np.abs(low), np.abs(high)).T
    np.testing.assert_allclose(paper.read("quant_absmax"), absmax, rtol=1e-5)
    a4, a6 = np.where(gelu, 5.0, 6.0), np.where(gelu, 8.0, 9.5)
    by_hand = np.where(absmax < a4, 4, np.where(absmax < a6, 6, 8))
    forced = paper.read("bits") != by_hand
    assert (paper.read("bits")[forced] == 8).all()  # only heavy tails overrule the thresholds
    assert forced.mean() < 0.5
