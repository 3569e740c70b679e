"""The temporal analysis: switchers and one-tier layers by hand, the shift's effect, and the
`temporal` group analyze stores beside `quant_config`."""

import numpy as np

from taq_actstats.temporal import temporal_arrays, temporal_record
from taq_io import Store


def test_switchers_and_one_tier_layers():
    bits = np.array([[4, 6, 8, 6], [4, 6, 8, 8], [4, 6, 6, 6], [4, 6, 8, 8]])  # (step, layer)
    ranges = np.ones((4, 4))
    arrays = temporal_arrays(bits, 2 * ranges, ranges)
    assert arrays["switcher"].tolist() == [False, False, True, True]
    assert arrays["always_bits"].tolist() == [4, 6, 0, 0]
    assert arrays["tier_changes"].tolist() == [0, 0, 2, 3]


def test_analyze_stores_the_temporal_analysis(collected_copy, cli):
    out = cli("analyze", "--store", collected_copy)
    assert out.returncode == 0, out.stderr
    store = Store.open(collected_copy)
    bits = store.require_group("quant_config").read("bits")
    group = store.require_group("temporal")
    record = temporal_record(group)
    names = group.read("layer_names").tolist()
    switchers = [n for i, n in enumerate(names) if len(np.unique(bits[:, i])) > 1]
    assert sorted(record["switchers"]) == sorted(switchers)
    for label, tier in (("A4", 4), ("A6", 6), ("A8", 8)):
        assert record["always"][label] == [
            n for i, n in enumerate(names) if (bits[:, i] == tier).all()
        ]
    fc2 = [n for n in names if n.endswith("mlp.fc2")]
    assert sorted(record["shift"]) == sorted(fc2)
    stats = store.require_group("actstats")
    np.testing.assert_allclose(
        group.read("range_unshifted"), stats.read("absmax").max(axis=0).T, rtol=1e-6
    )
    unshifted, shifted = group.read("range_unshifted"), group.read("range_shifted")
    other = ~group.read("post_gelu")
    np.testing.assert_allclose(shifted[:, other], unshifted[:, other], rtol=1e-6)
    assert all(v["ratio"] < 1.0 for v in record["shift"].values())  # the shift narrows fc2
    assert f"temporal: {len(switchers)} of {len(names)} layers switch" in out.stdout
