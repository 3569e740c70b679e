"""Collected statistics against a direct NumPy computation over the same activations, and
as the group's owner decodes them."""

import numpy as np

from taq_actstats.analyze import momentum_shift
from taq_actstats.collect import CollectConfig, collect_stats, histogram, read_stats
from taq_hooks import hook_layers
from taq_io import Store
from taq_run.runs import forward_calibration

LAYERS = "mm1.image.mlp.fc2,mm2.text.attn.q_proj"


def captured_inputs(digits, calib, images, steps):
    """Inputs of the selected layers, recorded independently with plain hooks."""
    seen = {}
    with hook_layers(digits.mmdit, LAYERS) as hooks:
        for image in images:
            for forward in forward_calibration(digits, calib, [image], steps):
                hooks.flush(forward.output)
                for name, hook in hooks.items():
                    seen[(name, image, forward.step)] = np.array(hook.flush()[-1].x)
                    hook.clear()
    return seen


def test_statistics_equal_numpy(digits, store_copy):
    store = Store.open(store_copy, mode="r+")
    group = collect_stats(digits, store, CollectConfig(num_images=2, layers=LAYERS))
    calib = store.require_group("calib")
    steps = [0, 3, 5]
    seen = captured_inputs(digits, calib, [0, 1], steps)
    names = group.read("layer_names").tolist()
    cmin, cmax = group.read("channel_min"), group.read("channel_max")
    edges, counts = group.read("hist_edges"), group.read("hist_counts")
    for li, name in enumerate(names):
        width = int(group.read("in_features")[li])
        for step in steps:
            per_image = [seen[(name, i, step)].reshape(-1, width) for i in (0, 1)]
            for i, x in enumerate(per_image):
                np.testing.assert_array_equal(cmin[i, li, step, :width], x.min(axis=0))
                np.testing.assert_array_equal(cmax[i, li, step, :width], x.max(axis=0))
                np.testing.assert_array_equal(edges[i, li, step], edges[0, li, step])
                assert counts[i, li, step].sum() == x.size  # nothing dropped
                np.testing.assert_array_equal(
                    counts[i, li, step], histogram(x.reshape(-1), edges[0, li, step])
                )
            lo0, hi0 = per_image[0].min(0), per_image[0].max(0)
            expected_edges = np.linspace(per_image[0].min(), per_image[0].max(), 257)
            np.testing.assert_allclose(edges[0, li, step], expected_edges, rtol=1e-6, atol=1e-6)
            lo1, hi1 = per_image[1].min(0), per_image[1].max(0)
            shift = 0.95 * (lo0 + hi0) / 2 + 0.05 * (lo1 + hi1) / 2
            got = momentum_shift(cmin[:, li, step, :width], cmax[:, li, step, :width])
            np.testing.assert_allclose(got, shift, rtol=1e-6)
    stats = read_stats(group)  # what readers get: image 0's edges, counts pooled over images
    assert stats.layer_names == names
    np.testing.assert_array_equal(stats.channel_min, cmin)
    np.testing.assert_array_equal(stats.hist_edges, edges[0])
    np.testing.assert_array_equal(stats.hist_counts, counts.sum(axis=0))
    summaries = read_stats(group, per_channel=False)
    assert summaries.channel_min is None and summaries.hist_counts is None
    np.testing.assert_array_equal(summaries.p99, group.read("p99"))
