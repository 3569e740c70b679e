import subprocess
import sys
from pathlib import Path


def test_diffusionkit_imports_without_torch():
    code = (
        "import sys; from taq_model.compat import import_diffusionkit; "
        "dk = import_diffusionkit(); from diffusionkit.mlx.mmdit import MMDiT; "
        "assert hasattr(dk, 'sample_euler'); "
        "bad = [m for m in ('torch', 'coremltools') if m in sys.modules]; "
        "print('loaded:', bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "loaded: []" in out.stdout


def test_lock_has_no_torch():
    lock = Path(__file__).resolve().parents[3] / "uv.lock"
    packages = [line for line in lock.read_text().splitlines() if line.startswith("name = ")]
    assert packages, "uv.lock lists no packages"
    for banned in ("torch", "argmaxtools", "coremltools"):
        assert f'name = "{banned}"' not in packages
