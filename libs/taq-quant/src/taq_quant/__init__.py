"""taq-quant: quantizer math shared by training and inference (no optimiser code)."""

from taq_quant.export import (
    check_exportable,
    dequantize_linear_weight,
    export_quantized_linear,
    mlx_group_size,
    pack_codes,
    unpack_codes,
)
from taq_quant.fake_quant import activation_scale, code_range, fake_quant, round_ste
from taq_quant.quantizer import (
    QuantGrid,
    WeightQuantConfig,
    dequantize_codes,
    init_grid,
    minmax_grid,
    mse_grid,
    quantize_codes,
    rtn_quantize,
)
from taq_quant.rounding import (
    RoundingSchedule,
    floor_codes,
    hard_codes,
    hard_quantize,
    init_rounding_logits,
    rectified_sigmoid,
    rounding_regularizer,
    soft_quantize,
)

__all__ = [
    "check_exportable",
    "QuantGrid",
    "RoundingSchedule",
    "WeightQuantConfig",
    "activation_scale",
    "code_range",
    "dequantize_codes",
    "dequantize_linear_weight",
    "export_quantized_linear",
    "fake_quant",
    "floor_codes",
    "hard_codes",
    "hard_quantize",
    "init_grid",
    "init_rounding_logits",
    "minmax_grid",
    "mlx_group_size",
    "mse_grid",
    "pack_codes",
    "quantize_codes",
    "rectified_sigmoid",
    "round_ste",
    "rounding_regularizer",
    "rtn_quantize",
    "soft_quantize",
    "unpack_codes",
]
