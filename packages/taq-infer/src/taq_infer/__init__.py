"""taq-infer: run taq's quantized MMDiT for real (packed W4) with simulated activation quant.

A program using taq-infer as a library imports it first: that loads the optimised BLAS
before MLX (Linux CPU) and makes `import diffusionkit.mlx` work without torch. Neither
imports MLX, and the names below load on first use, so `taq-infer` (`__main__.py`) and
`import taq_infer` both reach MLX only after the BLAS.
"""

import importlib

from taq_model.compat import install_stubs
from taq_runtime.blas import load_optimised_blas

load_optimised_blas()
install_stubs()

_EXPORTS = {
    "ActivationQuant": "activations",
    "StepContext": "activations",
    "load_quantized": "loading",
    "ActivationPlan": "model",
    "InferenceError": "model",
    "QuantizedModel": "model",
    "WeightSet": "model",
    "load_weight_set": "model",
    "model_bytes": "model",
    "rtn_weight_set": "model",
    "sampling_parameters": "model",
    "PackedLinear": "packed",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
