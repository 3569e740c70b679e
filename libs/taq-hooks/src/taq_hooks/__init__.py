"""taq-hooks: proxies that record what MMDiT blocks and linear layers see."""

from taq_hooks.block_hook import BlockCall, BlockHook, hook_blocks, replay_block
from taq_hooks.layer_hook import HookedLayer, LayerCall, LayerObserver, hook_layers
from taq_hooks.proxy import HookSet, hooked_by

__all__ = [
    "BlockCall",
    "BlockHook",
    "HookSet",
    "HookedLayer",
    "LayerCall",
    "LayerObserver",
    "hook_blocks",
    "hook_layers",
    "hooked_by",
    "replay_block",
]
