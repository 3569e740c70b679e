"""taq-runtime: what every taq command shares, and nothing about models or stores.

- `launcher.launch("pkg.cli:main")`: every console script's first call; loads the
  optimised BLAS (`blas.py`) and only then imports the command, so MLX always finds it;
- `cli`: user errors as one line and exit code 2, progress bars, logging set-up,
  dataclass configs from flags;
- `doctor`: MLX version, device, BLAS and a measured GEMM rate;
- `png`: PNG files and image grids with the standard library (no pillow);
- `testing` and the `pytest11` plugin: fixtures and helpers shared by every member's tests.

Importing this package has no side effects and does not import MLX.
"""
