"""Which weight-quantization methods exist: the one place every choice of method comes from.

A method is one module that provides a `WeightMethod`: its config (a frozen dataclass that
extends `taq_run.weights.GridConfig`, each field's help in its `metadata`) and its per-block
entry function. Packages register methods through the `taq.weight_methods` entry-point group
(name -> `module:OBJECT`), as presets register through `taq.presets`; from the registry come
the stage commands and their flags, `taq run`'s stages and `--weights`, `taq eval`'s
variants and claims, the report's rows, `taq sweep`'s weight points, and the methods
`taq-infer` and `taq export` offer. Every method writes the same `weights/<method>` layout
through `taq_run.weights`, so readers need no method's code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib.metadata import entry_points

from taq_run.weights import GridConfig

ENTRY_POINTS = "taq.weight_methods"


class WeightMethodError(ValueError):
    """An unknown method name, or a registered method that breaks the contract."""


@dataclass(frozen=True)
class WeightMethod:
    """One weight-quantization method.

    `quantize_block(mmdit, block_name, data, config) -> taq_run.weights.BlockWeights`
    quantizes one block from its cached FP inputs and outputs (`data`, the block I/O cache);
    it must depend only on those and `config` (which carries `seed + block index` where the
    config has a seed), so results are the same whatever the number of ranks.
    """

    name: str  # weights/<name>, the value of --weights
    label: str  # how evaluation, report and sweep name it ("GPTQ W4")
    config: type[GridConfig]
    quantize_block: Callable
    summary: str  # the stage command's help
    order: int = 50  # position in every list of methods (cheapest first)
    target_db: float = 0.0  # the PSNR margin over RTN `taq eval` claims for it
    subcommand: str | None = None  # its `taq-adaround` subcommand (None: its name)

    def __post_init__(self) -> None:
        if not issubclass(self.config, GridConfig):
            raise WeightMethodError(
                f"weight method {self.name!r}: its config {self.config.__name__} must extend "
                "taq_run.weights.GridConfig"
            )

    @property
    def command(self) -> str:
        """The stage command that runs it alone (on the store's block I/O cache)."""
        return f"taq-adaround {self.subcommand or self.name}"

    def flags(self) -> list[str]:
        """Its config's field names: the flags it takes."""
        return [f.name for f in fields(self.config) if f.init]


def weight_methods() -> dict[str, WeightMethod]:
    """Every installed method, by name, cheapest first (`order`, then name)."""
    found = []
    for entry in entry_points(group=ENTRY_POINTS):
        method = entry.load()
        if not isinstance(method, WeightMethod) or method.name != entry.name:
            raise WeightMethodError(
                f"entry point {entry.name} = {entry.value} in {ENTRY_POINTS} must name a "
                f"WeightMethod called {entry.name!r}"
            )
        found.append(method)
    return {m.name: m for m in sorted(found, key=lambda m: (m.order, m.name))}


def installed_names() -> list[str]:
    """The installed methods' names, without importing them (for a reader's help text)."""
    return sorted(entry.name for entry in entry_points(group=ENTRY_POINTS))


def weight_method(name: str) -> WeightMethod:
    """The installed method `name`; an unknown name is refused with the installed ones."""
    methods = weight_methods()
    if name not in methods:
        raise WeightMethodError(
            f"weight method {name!r} is not installed: pick one of {', '.join(methods) or '(none)'}"
        )
    return methods[name]


def parse_methods(text: str) -> tuple[str, ...]:
    """`--weights rtn,gptq`: the installed methods named, in registry order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise WeightMethodError("--weights lists no method: give at least one")
    for name in names:
        weight_method(name)
    return tuple(name for name in weight_methods() if name in names)
