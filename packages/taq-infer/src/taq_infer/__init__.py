"""taq-infer: run taq's quantized MMDiT for real (packed W4) with simulated activation quant."""

import taq_model  # noqa: F401  (loads an optimised BLAS before MLX)
from taq_model.compat import install_stubs

from taq_infer.activations import ActivationQuant, StepContext
from taq_infer.loading import load_quantized
from taq_infer.model import (
    ActivationPlan,
    InferenceError,
    QuantizedModel,
    WeightSet,
    load_weight_set,
    model_bytes,
    rtn_weight_set,
    sampling_parameters,
)
from taq_infer.packed import PackedLinear

install_stubs()  # `import diffusionkit.mlx` works after `import taq_infer` (no argmaxtools/torch)

__all__ = [
    "ActivationPlan",
    "ActivationQuant",
    "InferenceError",
    "PackedLinear",
    "QuantizedModel",
    "StepContext",
    "WeightSet",
    "load_quantized",
    "load_weight_set",
    "model_bytes",
    "rtn_weight_set",
    "sampling_parameters",
]
