""" TokenMixup wiring shared by the zoo's transformers

The method lives in `tokenmixup`; this file plugs it into a transformer's block loop, once for every
model family:
- `TokenMixupConfig`: the TokenMixup keyword arguments of `timm.create_model`, validated against
  the model they are given to;
- `tokenmixup_attention` / `tokenmixup_attention_map`: a block's attention sub-layer (a timm
  `Attention` and its pre-norm) with vertical memory, and its probabilities for saliency;
- `TokenMixupMixin`: the block loop (HTM in front of chosen blocks, VTM memory collected from the
  blocks before a VTM block) and the `model(x, target)` protocol.

Blocks used with the mixin provide `forward(x)`, `forward_with_memory(x, memory, attention_rows)`
returning `(x, attn)`, and `attention_map(x, cls_only)`.
"""
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.models._manipulate import checkpoint, checkpoint_seq

from tokenmixup import (
    HorizontalTokenMixup, TokenMixupOutput, as_soft_target, attention_saliency, select_salient_tokens,
    self_attention_weights, split_qkv, vertical_attention)
from tokenmixup.functional import MASK_REFERENCES, SALIENCY_REDUCTIONS
from tokenmixup.scorenet import SCORENET_POOLS

__all__ = [
    'TokenMixupConfig', 'TokenMixupMixin', 'BlocksOutput', 'tokenmixup_attention', 'tokenmixup_attention_map',
    'TOKENMIXUP_KWARGS', 'check_attention_supported', 'fill_scorenet_weights',
]


@dataclass(frozen=True)
class TokenMixupConfig:
    """TokenMixup settings of a model (SPEC 3.3). Block indices are 0-based; tau is a CE threshold.

    htm_layers: blocks with Horizontal TokenMixup in front of them; () disables HTM.
    vtm_layers: blocks that run as Vertical TokenMixup blocks (index >= 1); () disables VTM.
    tau, rho: difficulty and per-token saliency-gain thresholds of HTM.
    kappa: salient tokens each earlier block contributes to the VTM memory (1 <= kappa <= T).
    scorenet_lambda, scorenet_pool, scorenet_detach: the HTM ScoreNet's loss weight, pooling
        ('attn'|'avg'|'cls') and whether it reads detached tokens.
    saliency: 'mean' or 'cls' reduction of attention maps into saliency.
    vtm_detach: stop the gradient into the VTM memory.
    mask_reference: 'own' (Eq. 9) or 'first' (the released code's HTM mask).
    """
    htm_layers: Tuple[int, ...] = ()
    vtm_layers: Tuple[int, ...] = ()
    tau: float = 2.0
    rho: float = 0.005
    kappa: int = 3
    scorenet_lambda: float = 0.001
    scorenet_pool: str = 'attn'
    scorenet_detach: bool = False
    saliency: str = 'mean'
    vtm_detach: bool = False
    mask_reference: str = 'own'

    def validated(self, depth: int, num_tokens: int, num_prefix_tokens: int) -> 'TokenMixupConfig':
        """Check every setting against a model of `depth` blocks and `num_tokens` tokens (P prefix).

        Returns a copy with the layer lists as tuples; raises ValueError naming the bad argument.
        """
        htm_layers = _check_layers('htm_layers', self.htm_layers, depth, first_allowed=0)
        vtm_layers = _check_layers('vtm_layers', self.vtm_layers, depth, first_allowed=1)
        for name in ('tau', 'rho', 'scorenet_lambda'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
        num_mixable = num_tokens - num_prefix_tokens
        if isinstance(self.kappa, bool) or not isinstance(self.kappa, int) or not 1 <= self.kappa <= num_mixable:
            raise ValueError(f'kappa must be an int in [1, T] = [1, {num_mixable}] for this model, got {self.kappa!r}')
        for name, choices in (('scorenet_pool', SCORENET_POOLS), ('saliency', SALIENCY_REDUCTIONS),
                              ('mask_reference', MASK_REFERENCES)):
            if getattr(self, name) not in choices:
                raise ValueError(f'{name} must be one of {choices}, got {getattr(self, name)!r}')
        for name in ('scorenet_detach', 'vtm_detach'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} must be a bool, got {getattr(self, name)!r}')
        if num_prefix_tokens == 0:
            for name in ('scorenet_pool', 'saliency'):
                if getattr(self, name) == 'cls':
                    raise ValueError(f"{name}='cls' needs a CLS token, and this model has none; use 'attn'/'avg' "
                                     f"for scorenet_pool and 'mean' for saliency")
        return TokenMixupConfig(**dict(asdict(self), htm_layers=htm_layers, vtm_layers=vtm_layers))


TOKENMIXUP_KWARGS = tuple(TokenMixupConfig.__dataclass_fields__)


def _check_layers(name: str, layers: Any, depth: int, first_allowed: int) -> Tuple[int, ...]:
    if not isinstance(layers, (tuple, list)):
        raise ValueError(f'{name} must be a tuple of block indices such as (2,), or () to disable, got {layers!r}')
    for index in layers:
        if isinstance(index, bool) or not isinstance(index, int) or not first_allowed <= index < depth:
            raise ValueError(
                f'{name} must hold block indices in [{first_allowed}, {depth - 1}] for a {depth}-block model, '
                f'got {index!r}')
    repeated = sorted({index for index in layers if list(layers).count(index) > 1})
    if repeated:
        raise ValueError(f'{name} repeats block index {repeated[0]}: each block may appear once')
    return tuple(layers)


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
    """TokenMixup re-runs a block's attention from its weights: only plain timm `Attention` is supported."""
    for index, block in enumerate(blocks):
        attn = getattr(block, 'attn', None)
        if attn is None or not isinstance(getattr(attn, 'qkv', None), nn.Linear) or getattr(attn, 'gate', None) is not None:
            raise ValueError(f'block {index} has no plain fused-qkv attention, which TokenMixup needs')


class BlocksOutput(NamedTuple):
    """x: (B, N, D) tokens after the blocks; target: (B, C) or None; aux_loss: scalar; stats: tensors."""
    x: torch.Tensor
    target: Optional[torch.Tensor]
    aux_loss: torch.Tensor
    stats: Dict[str, torch.Tensor]


class TokenMixupMixin:
    """Adds TokenMixup to a transformer classifier.

    The host model has `blocks` (an `nn.Sequential` of blocks following the protocol in the module
    docstring), `num_prefix_tokens`, `num_classes`, `grad_checkpointing`, `norm`, `forward_head` and
    `embed_tokens(x) -> (B, N, D)`, and calls `init_tokenmixup` at the end of its `__init__`.
    """
    tokenmixup_cfg: TokenMixupConfig
    htm: nn.ModuleDict

    def init_tokenmixup(
            self,
            config: TokenMixupConfig,
            embed_dim: int,
            num_classes: int,
            num_tokens: int,
    ) -> None:
        """Validate `config` for this model and build one HTM module per HTM block."""
        check_attention_supported(self.blocks)
        config = config.validated(len(self.blocks), num_tokens, self.num_prefix_tokens)
        self.tokenmixup_cfg = config
        self.htm = nn.ModuleDict({
            str(index): HorizontalTokenMixup(
                embed_dim, num_classes, tau=config.tau, rho=config.rho, scorenet_lambda=config.scorenet_lambda,
                scorenet_pool=config.scorenet_pool, scorenet_detach=config.scorenet_detach,
                saliency=config.saliency, mask_reference=config.mask_reference,
                num_prefix_tokens=self.num_prefix_tokens)
            for index in config.htm_layers})

    def scorenet_classifier_names(self) -> Tuple[str, ...]:
        """State-dict prefixes of the ScoreNet classifiers (dropped with the head on a class change)."""
        return tuple(f'htm.{index}.scorenet.head' for index in self.htm)

    def reset_scorenet_classifiers(self, num_classes: int) -> None:
        for htm in self.htm.values():
            htm.reset_classifier(num_classes)

    def forward_blocks(self, x: torch.Tensor, target: Optional[torch.Tensor] = None) -> BlocksOutput:
        """Run the blocks with TokenMixup where it is active.

        Args:
            x: (B, N, D) embedded tokens.
            target: (B, C) soft targets or None. HTM mixes only in training with targets; VTM is
                active in training. Otherwise this is exactly the base model's block loop.

        Returns:
            `BlocksOutput(x, target, aux_loss, stats)` with the (mixed) targets, the summed weighted
            ScoreNet losses and the HTM statistics keyed `htm{block}_{name}`.
        """
        config = self.tokenmixup_cfg
        aux_loss = x.new_zeros((), dtype=torch.float32)
        stats: Dict[str, torch.Tensor] = {}
        vtm_active = self.training and len(config.vtm_layers) > 0
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
                with torch.no_grad():
                    attn = block.attention_map(x, cls_only=attention_rows == 'cls')
                mixed = htm(x, target, htm.compute_saliency(attn))
                x, target = mixed.x, mixed.target
                aux_loss = aux_loss + mixed.loss
                stats.update({f'htm{index}_{name}': value for name, value in mixed.stats.items()})

            is_vtm = vtm_active and index in config.vtm_layers
            feeds_memory = index < last_vtm
            if is_vtm or feeds_memory:
                context = None
                if is_vtm:
                    context = torch.cat(memory, dim=1)
                    context = context.detach() if config.vtm_detach else context
                block_input = x
                x, attn = block.forward_with_memory(x, context, attention_rows if feeds_memory else None)
                if feeds_memory:
                    # rank the block's own tokens by its attention on its own N key columns
                    own_attn = attn[..., :block_input.shape[1]]
                    saliency = attention_saliency(own_attn, self.num_prefix_tokens, config.saliency)
                    memory.append(select_salient_tokens(block_input, saliency, config.kappa, self.num_prefix_tokens))
            elif self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x)
            else:
                x = block(x)
        return BlocksOutput(x, target, aux_loss, stats)

    def forward_tokenmixup(self, x: torch.Tensor, target: torch.Tensor) -> TokenMixupOutput:
        """`model(x, target)`: logits plus the targets to train against (SPEC 2.4)."""
        if self.num_classes == 0:
            raise ValueError('model(x, target) needs a classifier, but this model has num_classes=0')
        target = as_soft_target(target, self.num_classes)
        out = self.forward_blocks(self.embed_tokens(x), target)
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
