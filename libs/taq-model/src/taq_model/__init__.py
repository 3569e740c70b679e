"""taq-model: the DiffusionKit MMDiT adapter (presets, conditioning, sampling, taxonomy).

Importing it has no side effects. Commands load the optimised BLAS before MLX through
`taq_runtime.launcher`; a Python program using taq as a library calls
`taq_runtime.blas.load_optimised_blas()` before its first `import mlx` (Linux CPU).
"""
