"""Make `diffusionkit.mlx` importable without torch, argmaxtools or coremltools.

DiffusionKit 0.5.2 imports `argmaxtools` (logging helpers and an Apple-Silicon context
class) and `diffusionkit.utils` (which imports torch) from its MLX path, although the
MLX code never uses them. We register tiny stand-ins for exactly those names before the
import. Nothing here touches DiffusionKit's model code.
"""

from __future__ import annotations

import logging
import os
import sys
import types


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__taq_stub__ = True
    return module


class AppleSiliconContextMixin:  # argmaxtools.test_utils stand-in, used only as a base class
    pass


class InferenceContextSpec:  # argmaxtools.test_utils stand-in, used only as a base class
    pass


def install_stubs() -> None:
    """Register the stand-ins, so that a later `import diffusionkit.mlx` works (cheap)."""
    # transformers (used only for SD3's T5 tokenizer) warns at import that torch is absent
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "argmaxtools" not in sys.modules:
        sys.modules["argmaxtools"] = _module("argmaxtools")
        sys.modules["argmaxtools.utils"] = _module(
            "argmaxtools.utils", get_logger=logging.getLogger
        )
        sys.modules["argmaxtools.test_utils"] = _module(
            "argmaxtools.test_utils",
            AppleSiliconContextMixin=AppleSiliconContextMixin,
            InferenceContextSpec=InferenceContextSpec,
        )
    if "diffusionkit.utils" not in sys.modules:
        sys.modules["diffusionkit.utils"] = _module(
            "diffusionkit.utils", bytes2gigabytes=lambda n: n / 1024**3
        )


def import_diffusionkit() -> types.ModuleType:
    """Return `diffusionkit.mlx`, importing it without its torch-only dependencies."""

    install_stubs()
    import diffusionkit.mlx as dk

    return dk
