""" TokenMixup wiring shared by the zoo's transformers

The method lives in `tokenmixup`; this file plugs it into a transformer's block loop, once for every
model family (docs/design.md §4):
- `tokenmixup_attention` / `tokenmixup_attention_map`: a block's attention sub-layer (a timm
  `Attention` and its pre-norm) with vertical memory, and its probabilities for saliency;
- `TokenMixupMixin`: the settings of a model (resolved from `tokenmixup.settings`), the block loop
  (HTM in front of chosen blocks, VTM memory collected from the blocks before a VTM block) and the
  `model(x, target)` protocol;
- `tokenmixup_init_signature`: the generated signature that lists every setting as a keyword argument;
- `tagged_cfgs`: the pretrained tags of a registered name, the one mechanism both families register with.

Blocks used with the mixin provide `forward(x)`, `forward_with_memory(x, memory, attention_rows)`
returning `(x, attn)`, and `attention_map(x, cls_only)`.
"""
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import Attention
from timm.models import checkpoint, checkpoint_seq

from tokenmixup import (
    SETTINGS, HorizontalTokenMixup, HTMStatistics, ModelContext, TokenMixupConfig, TokenMixupOutput,
    VerticalTokenMixup, as_soft_target, resolve_settings, self_attention_weights, split_qkv, vertical_attention)
from tokenmixup.settings import settings_signature

from .presets import get_preset

__all__ = [
    'TokenMixupMixin', 'BlocksOutput', 'tokenmixup_attention', 'tokenmixup_attention_map',
    'check_attention_supported', 'fill_scorenet_weights', 'scorenet_classifier', 'preset_classifiers',
    'tokenmixup_init_signature', 'base_weights_description', 'tagged_cfgs',
]


def scorenet_classifier(block: int) -> str:
    """State-dict prefix of the ScoreNet classifier of the HTM layer in front of `block`."""
    return f'htm.{block}.scorenet.head'


def preset_classifiers(head: str, preset: Optional[str], depth: int):
    """The pretrained cfg's `classifier` of a variant: its head plus the ScoreNet classifiers of its preset."""
    recipe = get_preset(preset)
    htm_blocks = recipe.layers(depth).get('htm_layers', ()) if recipe is not None else ()
    return (head,) + tuple(scorenet_classifier(block) for block in htm_blocks) if htm_blocks else head


def base_weights_description(source: str) -> str:
    """The pretrained cfg `description` of a variant's tag that loads its base's weights."""
    return f'{source} weights of the base model, not trained with TokenMixup; the ScoreNet starts fresh'


def tagged_cfgs(
        name: str,
        inherited: Mapping[str, Dict[str, Any]],
        shipped: Mapping[str, Dict[str, Any]],
        published: Mapping[str, Dict[str, Any]],
) -> Dict[str, Dict[str, Any]]:
    """The pretrained cfgs of the registered model `name`, keyed `name.tag` in timm's order (its first is the
    default tag).

    Args:
        name: the registered name.
        inherited: tag -> cfg of the weights it takes from its base (timm's, an official release's), in order.
        shipped: tag -> cfg of weights trained here and shipped in the package; one replaces the inherited tag of
            the same name, the others follow the inherited tags.
        published: tag -> cfg of checkpoints published on the Hub (`PUBLISHED_CFGS`), after all of those.

    Raises:
        ValueError when a published tag would shadow an inherited or shipped one: that would silently change
        what an existing name loads.
    """
    cfgs = {f'{name}.{tag}': shipped.get(tag, cfg) for tag, cfg in inherited.items()}
    for tag, cfg in shipped.items():
        cfgs.setdefault(f'{name}.{tag}', cfg)
    for tag, cfg in published.items():
        if f'{name}.{tag}' in cfgs:
            raise ValueError(f'PUBLISHED_CFGS: {name}.{tag} is already registered; give the published checkpoint a '
                             'tag of its own')
        cfgs[f'{name}.{tag}'] = cfg
    return cfgs


def tokenmixup_init_signature(init: Callable, base: Optional[Callable] = None):
    """The signature of a model's `__init__(..., tokenmixup_preset=None, **settings)`, every setting spelled out."""
    return settings_signature(init, SETTINGS, base=base)


def tokenmixup_attention(
        attn: nn.Module,
        norm: nn.Module,
        x: torch.Tensor,
        memory: Optional[torch.Tensor],
        attention_rows: Optional[str],
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The attention sub-layer `attn(norm(x))` of a block, attending also to `memory` (Eq. 13).

    Args:
        attn: a timm `Attention` (fused `qkv`, `q_norm`, `k_norm`, `attn_drop`, `norm`, `proj`, `proj_drop`).
        norm: the block's pre-norm.
        x: (B, N, D) tokens entering the block; memory: (B, M, D) VTM memory or None.
        attention_rows: None, 'all' or 'cls' (see `tokenmixup.vertical_attention`).

    Returns:
        (B, N, D) sub-layer output (before the residual) and the requested probabilities or None.
    """
    q_proj, k_proj, v_proj = split_qkv(attn.qkv.weight, attn.qkv.bias)
    result = vertical_attention(
        x, memory, attn.num_heads, q_proj, k_proj, v_proj,
        norm=norm, q_norm=attn.q_norm, k_norm=attn.k_norm, scale=attn.scale,
        dropout_p=attn.attn_drop.p if attn.training else 0.0, attention_rows=attention_rows)
    return attn.proj_drop(attn.proj(attn.norm(result.x))), result.attn


def tokenmixup_attention_map(attn: nn.Module, norm: nn.Module, x: torch.Tensor, cls_only: bool) -> torch.Tensor:
    """(B, H, Q, N) self-attention probabilities of a block's timm `Attention` on x (Q = 1 if cls_only)."""
    q_proj, k_proj, _ = split_qkv(attn.qkv.weight, attn.qkv.bias)
    return self_attention_weights(
        x, attn.num_heads, q_proj, k_proj,
        norm=norm, q_norm=attn.q_norm, k_norm=attn.k_norm, scale=attn.scale, cls_only=cls_only)


def check_attention_supported(blocks: Sequence[nn.Module]) -> None:
    """Every block must follow the block protocol (module docstring) around a plain timm `Attention`.

    TokenMixup re-runs a block's attention sub-layer from its weights (`tokenmixup_attention`), so the
    block class decides how that sub-layer is wired: a block that lacks `forward_with_memory` or
    `attention_map` (timm's post-norm `ResPostBlock`, its parallel blocks, ...) is refused even when its
    attention is a fused-qkv `Attention`. The attention must be exactly timm's `Attention` without a gate
    (not `DiffAttention`, `AttentionRope`, ...). Raises ValueError naming the block and what it lacks.
    """
    for index, block in enumerate(blocks):
        missing = [name for name in ('forward_with_memory', 'attention_map')
                   if not callable(getattr(block, name, None))]
        if missing:
            raise ValueError(
                f'block {index} is a {type(block).__name__}, which lacks {" and ".join(missing)}: TokenMixup needs '
                'blocks that implement its block protocol (docs/design.md §4), such as models.TokenMixupBlock '
                "(timm's pre-norm Block)")
        attn = getattr(block, 'attn', None)
        if type(attn) is not Attention or getattr(attn, 'gate', None) is not None:
            found = 'gated Attention' if type(attn) is Attention else type(attn).__name__
            raise ValueError(f"block {index} has {found} attention: TokenMixup needs timm's fused-qkv Attention "
                             '(timm.layers.Attention, no gate), whose weights it re-runs with a memory')


class BlocksOutput(NamedTuple):
    """x: (B, N, D) tokens after the blocks; target: (B, C) or None; aux_loss: scalar; stats: HTM block
    index -> `HTMStatistics`."""
    x: torch.Tensor
    target: Optional[torch.Tensor]
    aux_loss: torch.Tensor
    stats: Dict[int, HTMStatistics]


class TokenMixupMixin:
    """Adds TokenMixup to a transformer classifier.

    The host model has `blocks` (an `nn.Sequential` of blocks following the protocol in the module
    docstring), `num_prefix_tokens`, `num_classes`, `grad_checkpointing`, `norm`, `forward_head` and
    `embed_tokens(x) -> (B, N, D)`, and calls `init_tokenmixup` at the end of its `__init__`.
    """
    tokenmixup_cfg: TokenMixupConfig
    htm: nn.ModuleDict
    vtm: Optional[VerticalTokenMixup]

    def init_tokenmixup(
            self,
            settings: Mapping[str, Any],
            preset: Optional[str],
            embed_dim: int,
            num_classes: int,
            num_tokens: int,
            has_class_token: bool,
    ) -> None:
        """Resolve the settings for this model (declared default < `preset` < `settings`) and build the
        HTM module of every HTM block and the VTM memory builder."""
        check_attention_supported(self.blocks)
        context = ModelContext(len(self.blocks), num_tokens, self.num_prefix_tokens, has_class_token, num_classes)
        config = resolve_settings(settings, context, get_preset(preset), owner=type(self).__name__)
        self.tokenmixup_cfg = config
        self.htm = nn.ModuleDict({
            str(index): HorizontalTokenMixup(
                embed_dim, num_classes, num_prefix_tokens=self.num_prefix_tokens, has_class_token=has_class_token,
                **config.scope('htm'))
            for index in config.htm_layers})
        self.vtm = VerticalTokenMixup(
            self.num_prefix_tokens, has_class_token, **config.scope('vtm')) if config.vtm_layers else None

    def scorenet_classifier_names(self) -> Tuple[str, ...]:
        """State-dict prefixes of the ScoreNet classifiers (dropped with the head on a class change)."""
        return tuple(scorenet_classifier(int(index)) for index in self.htm)

    def reset_scorenet_classifiers(self, num_classes: int) -> None:
        for htm in self.htm.values():
            htm.reset_classifier(num_classes)

    def forward_blocks(
            self,
            x: torch.Tensor,
            target: Optional[torch.Tensor] = None,
            return_mix: bool = False,
    ) -> BlocksOutput:
        """Run the blocks with TokenMixup where it is active.

        Args:
            x: (B, N, D) embedded tokens.
            target: (B, C) soft targets or None. HTM mixes only in training with targets; VTM is
                active in training. Otherwise this is exactly the base model's block loop.
            return_mix: the HTM statistics also carry each layer's replacement mask and partners.

        Returns:
            `BlocksOutput(x, target, aux_loss, stats)` with the (mixed) targets, the summed weighted
            ScoreNet losses and the `HTMStatistics` of each HTM block, keyed by block index.
        """
        config = self.tokenmixup_cfg
        aux_loss = x.new_zeros((), dtype=torch.float32)
        stats: Dict[int, HTMStatistics] = {}
        vtm_active = self.training and self.vtm is not None
        htm_active = any(htm.is_active(target) for htm in self.htm.values())
        if not (vtm_active or htm_active):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                return BlocksOutput(checkpoint_seq(self.blocks, x), target, aux_loss, stats)
            return BlocksOutput(self.blocks(x), target, aux_loss, stats)

        attention_rows = 'cls' if config.saliency == 'cls' else 'all'
        last_vtm = max(config.vtm_layers) if vtm_active else -1
        memory = []
        for index, block in enumerate(self.blocks):
            htm = self.htm[str(index)] if str(index) in self.htm else None
            if htm is not None and htm.is_active(target):
                saliency = None
                if htm.needs_saliency:
                    with torch.no_grad():
                        saliency = htm.compute_saliency(block.attention_map(x, cls_only=attention_rows == 'cls'))
                mixed = htm(x, target, saliency, return_mix=return_mix)
                x, target = mixed.x, mixed.target
                aux_loss = aux_loss + mixed.loss
                stats[index] = mixed.stats

            is_vtm = vtm_active and index in config.vtm_layers
            feeds_memory = index < last_vtm
            checkpointed = self.grad_checkpointing and not torch.jit.is_scripting()
            if is_vtm or feeds_memory:
                context = self.vtm.context(memory) if is_vtm else None
                rows = attention_rows if feeds_memory else None
                block_input = x
                if checkpointed:  # the memory is an input like x: its gradient comes through the recomputation
                    x, attn = checkpoint(block.forward_with_memory, x, context, rows)
                else:
                    x, attn = block.forward_with_memory(x, context, rows)
                if feeds_memory:
                    memory.append(self.vtm.memory_tokens(block_input, attn))
            elif checkpointed:
                x = checkpoint(block, x)
            else:
                x = block(x)
        return BlocksOutput(x, target, aux_loss, stats)

    def forward_tokenmixup(self, x: torch.Tensor, target: torch.Tensor, return_mix: bool = False) -> TokenMixupOutput:
        """`model(x, target)`: logits plus the targets to train against (docs/design.md §3)."""
        if self.num_classes == 0:
            raise ValueError('model(x, target) needs a classifier, but this model has num_classes=0')
        if not isinstance(target, torch.Tensor):
            raise TypeError(f'target must be a torch.Tensor: (B,) int64 class indices or (B, C) float soft targets, '
                            f'got {type(target).__name__}')
        if target.ndim == 0 or target.shape[0] != x.shape[0]:
            rows = f'{target.shape[0]} rows' if target.ndim else 'a scalar'
            raise ValueError(f'target must have one row per image: x has {x.shape[0]} images, target has {rows}')
        target = as_soft_target(target, self.num_classes)
        out = self.forward_blocks(self.embed_tokens(x), target, return_mix=return_mix)
        logits = self.forward_head(self.norm(out.x))
        return TokenMixupOutput(logits, out.target, out.aux_loss, out.stats)


def fill_scorenet_weights(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Give a checkpoint without ScoreNet weights (a base model's) the model's freshly initialised ones.

    Every other key still loads strictly; ScoreNet weights present in the checkpoint are kept.
    """
    state_dict = dict(state_dict)
    for name, value in model.state_dict().items():
        if 'scorenet' in name and name not in state_dict:
            state_dict[name] = value
    return state_dict
