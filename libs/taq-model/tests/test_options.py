"""SD3 conditioning and size: `--t5/--no-t5`, `--height/--width`; how stores name them."""

import pytest

from taq_model.options import ModelOptions, OptionsError, parse_spec
from taq_model.presets import ModelError, load_preset


@pytest.mark.parametrize(
    "options, spec",
    [
        (ModelOptions(), "sd3-medium"),
        (ModelOptions(height=512, width=512), "sd3-medium"),
        (ModelOptions(t5=True), "sd3-medium+t5"),
        (ModelOptions(height=1024, width=768), "sd3-medium@1024x768"),
        (ModelOptions(True, 256, 1536), "sd3-medium@256x1536+t5"),
    ],
    ids=["defaults", "default-size", "t5", "size", "both"],
)
def test_options_round_trip_through_the_recorded_preset_name(options, spec):
    assert options.spec("sd3-medium", (512, 512)) == spec
    name, parsed = parse_spec(spec)
    assert name == "sd3-medium"
    assert parsed.spec(name, (512, 512)) == spec


def test_latent_shape_follows_the_pixels():
    assert ModelOptions(height=1024, width=768).latent_shape((64, 64, 16)) == (128, 96, 16)
    assert ModelOptions().latent_shape((64, 64, 16)) == (64, 64, 16)


@pytest.mark.parametrize("height, width", [(500, 512), (512, 8), (1552, 512)])
def test_sizes_sd3_cannot_take_are_refused(height, width):
    with pytest.raises(OptionsError, match="--(height|width)"):
        ModelOptions(height=height, width=width)


def test_tiny_digits_refuses_sd3_options():
    with pytest.raises(ModelError, match="tiny-digits has a fixed 16x16"):
        load_preset("tiny-digits", options=ModelOptions(height=256))
    with pytest.raises(ModelError, match="different options"):
        load_preset("sd3-medium@1024x1024", options=ModelOptions(height=256, width=256))
