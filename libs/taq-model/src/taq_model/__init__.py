"""taq-model: the DiffusionKit MMDiT adapter (presets, conditioning, sampling, taxonomy).

Importing this package loads an optimised BLAS before MLX (see `blas.py`); every taq
member imports MLX through it.
"""

from taq_model.blas import load_optimised_blas

load_optimised_blas()
