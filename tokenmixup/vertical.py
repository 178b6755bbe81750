""" Vertical TokenMixup (paper Sec. 3.4, Eq. 12-13)

A VTM block attends from its own tokens to its own tokens plus the most salient tokens collected from
earlier blocks (the memory). Queries come from norm(x); keys and values from norm(concat(x, memory)),
projected with the block's own attention weights, so VTM adds no parameters and pretrained weights
load unchanged. The same helper, without memory, gives a plain self-attention whose probabilities can
be read for saliency. `VerticalTokenMixup` holds the VTM settings and builds the memory.
"""
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import attention_saliency, select_salient_tokens
from .settings import ModelContext, TokenMixupConfig, check_settings, settings_in_scope, settings_signature

__all__ = [
    'LinearWeights', 'VerticalAttentionOutput', 'VerticalTokenMixup', 'split_qkv', 'attention_weights',
    'self_attention_weights', 'vertical_attention']

LinearWeights = Tuple[torch.Tensor, Optional[torch.Tensor]]  # (weight (out, in), bias (out,) or None)
ATTENTION_ROWS = ('all', 'cls')


class VerticalAttentionOutput(NamedTuple):
    """x: (B, N, H * head_dim) attention output before the output projection; attn: the explicit
    attention probabilities (B, H, Q, N + M) without gradient when asked for (Q = N for 'all', 1 for
    'cls'), else None."""
    x: torch.Tensor
    attn: Optional[torch.Tensor]


def split_qkv(
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
) -> Tuple[LinearWeights, LinearWeights, LinearWeights]:
    """Split a fused (3 * E, D) qkv projection (timm's `Attention.qkv`) into q, k and v weights."""
    if weight.ndim != 2 or weight.shape[0] % 3:
        raise ValueError(f'weight must have shape (3 * E, D), got {tuple(weight.shape)}')
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f'bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}')
    q, k, v = weight.chunk(3, dim=0)
    if bias is None:
        return (q, None), (k, None), (v, None)
    q_bias, k_bias, v_bias = bias.chunk(3, dim=0)
    return (q, q_bias), (k, k_bias), (v, v_bias)


def attention_weights(q: torch.Tensor, k: torch.Tensor, scale: float, cls_only: bool = False) -> torch.Tensor:
    """Explicit softmax attention probabilities.

    Args:
        q: (B, H, N, head_dim) queries; k: (B, H, K, head_dim) keys.
        scale: logit scale (head_dim ** -0.5 in timm).
        cls_only: compute only query row 0 (O(K) per head instead of O(N K)).

    Returns:
        (B, H, Q, K) probabilities in float32, Q = 1 if cls_only else N. Without gradient (the saliency
        passes) the softmax runs in place in the logits' buffer: one (B, H, Q, K) tensor instead of two.
    """
    if q.ndim != 4 or k.ndim != 4 or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f'q and k must have shapes (B, H, N, d) and (B, H, K, d), got {tuple(q.shape)} and {tuple(k.shape)}')
    if cls_only:
        q = q[:, :, :1]
    logits = (q.float() * scale) @ k.float().transpose(-2, -1)
    if logits.requires_grad:
        return logits.softmax(dim=-1)
    logits = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim=-1, keepdim=True))


def _project(tokens: torch.Tensor, proj: LinearWeights, num_heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, head_dim)."""
    weight, bias = proj
    out = F.linear(tokens, weight, bias)
    batch_size, length, width = out.shape
    if width % num_heads:
        raise ValueError(f'projection width {width} is not divisible by num_heads={num_heads}')
    return out.view(batch_size, length, num_heads, width // num_heads).transpose(1, 2)


def _queries_and_keys(
        queries: torch.Tensor,
        context: torch.Tensor,
        num_heads: int,
        q_proj: LinearWeights,
        k_proj: LinearWeights,
        q_norm: Optional[Callable[[torch.Tensor], torch.Tensor]],
        k_norm: Optional[Callable[[torch.Tensor], torch.Tensor]],
        scale: Optional[float],
) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Per-head (B, H, Q, d) queries and (B, H, K, d) keys of normalised tokens, and the logit scale."""
    q = _project(queries, q_proj, num_heads)
    k = _project(context, k_proj, num_heads)
    if q_norm is not None:
        q = q_norm(q)
    if k_norm is not None:
        k = k_norm(k)
    return q, k, scale if scale is not None else q.shape[-1] ** -0.5


def self_attention_weights(
        x: torch.Tensor,
        num_heads: int,
        q_proj: LinearWeights,
        k_proj: LinearWeights,
        *,
        norm: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        q_norm: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        k_norm: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        scale: Optional[float] = None,
        cls_only: bool = False,
) -> torch.Tensor:
    """Self-attention probabilities of a block on x, without values or output (the HTM saliency pass).

    Args:
        x: (B, N, D) tokens entering the block (before its pre-norm).
        num_heads: H; q_proj, k_proj: (weight, bias) of the query and key projections.
        norm, q_norm, k_norm, scale: as in `vertical_attention`.
        cls_only: compute only query row 0, projecting only the first token's query.

    Returns:
        (B, H, Q, N) float32 probabilities, Q = 1 if cls_only else N.
    """
    if x.ndim != 3:
        raise ValueError(f'x must have shape (B, N, D), got {tuple(x.shape)}')
    tokens = norm(x) if norm is not None else x
    q, k, scale = _queries_and_keys(
        tokens[:, :1] if cls_only else tokens, tokens, num_heads, q_proj, k_proj, q_norm, k_norm, scale)
    return attention_weights(q, k, scale)


def vertical_attention(
        x: torch.Tensor,
        memory: Optional[torch.Tensor],
        num_heads: int,
        q_proj: LinearWeights,
        k_proj: LinearWeights,
        v_proj: LinearWeights,
        *,
        norm: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        q_norm: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        k_norm: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        scale: Optional[float] = None,
        dropout_p: float = 0.0,
        attention_rows: Optional[str] = None,
) -> VerticalAttentionOutput:
    """Cross-attention from a block's tokens to its tokens plus the vertical memory (Eq. 13).

    Args:
        x: (B, N, D) tokens entering the block (before its pre-norm).
        memory: (B, M, D) salient tokens of earlier blocks, or None / M = 0 for plain self-attention.
        num_heads: H.
        q_proj, k_proj, v_proj: (weight, bias) of the block's query, key and value projections
            (use `split_qkv` for a fused qkv Linear).
        norm: the block's pre-norm, applied to concat(x, memory); queries are its first N rows.
        q_norm, k_norm: optional per-head normalisation of queries and keys (timm's qk_norm).
        scale: logit scale; default head_dim ** -0.5.
        dropout_p: attention dropout probability (pass 0 in eval mode).
        attention_rows: None for the fused kernel only; 'all' to also return the full probabilities, 'cls'
            query row 0 only. The output comes from the fused kernel and the probabilities are computed
            again beside it, without gradient (they are read for saliency, never trained); except with
            'all', attention dropout and a CPU tensor, where the kernel would materialise them anyway and
            the output is computed from them explicitly.

    Returns:
        `VerticalAttentionOutput(x, attn)`, x of shape (B, N, H * head_dim) before the output
        projection, so that the caller applies the block's own projection and residual.
    """
    if x.ndim != 3:
        raise ValueError(f'x must have shape (B, N, D), got {tuple(x.shape)}')
    if memory is not None:
        if memory.ndim != 3 or memory.shape[0] != x.shape[0] or memory.shape[2] != x.shape[2]:
            raise ValueError(
                f'memory must have shape (B, M, D) = ({x.shape[0]}, M, {x.shape[2]}), got {tuple(memory.shape)}')
    if attention_rows is not None and attention_rows not in ATTENTION_ROWS:
        raise ValueError(f'attention_rows must be None or one of {ATTENTION_ROWS}, got {attention_rows!r}')
    num_tokens = x.shape[1]
    context = x if memory is None or memory.shape[1] == 0 else torch.cat([x, memory], dim=1)
    if norm is not None:
        context = norm(context)
    # queries of all rows, then the first N: a projection of the slice context[:, :N] would copy it and keep the
    # copy for backward, while the whole context is kept anyway for the keys and values
    q, k, scale = _queries_and_keys(context, context, num_heads, q_proj, k_proj, q_norm, k_norm, scale)
    q = q[:, :, :num_tokens]
    v = _project(context, v_proj, num_heads)

    attn = None
    if attention_rows == 'all' and dropout_p > 0 and q.device.type == 'cpu':
        # the CPU kernels of scaled_dot_product_attention cannot fuse dropout and materialise the probabilities
        # anyway: compute them once, explicitly, and read the saliency from the same tensor
        attn = attention_weights(q, k, scale)
        out = F.dropout(attn.to(v.dtype), p=dropout_p) @ v
        attn = attn.detach()
    else:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        if attention_rows is not None:  # for saliency only: recomputed without gradient, nothing kept for backward
            with torch.no_grad():
                attn = attention_weights(q, k, scale, cls_only=attention_rows == 'cls')
    out = out.transpose(1, 2).reshape(x.shape[0], num_tokens, v.shape[1] * v.shape[-1])  # explicit: B may be 0
    return VerticalAttentionOutput(out, attn)


class VerticalTokenMixup(nn.Module):
    """The VTM memory (Eq. 12): the kappa most salient tokens of every block before a VTM block.

    Holds no parameters. The block loop asks it for each feeding block's contribution (`memory_tokens`)
    and for the memory a VTM block attends to (`context`).

    Args:
        num_prefix_tokens: P, leading tokens that never enter the memory.
        has_class_token: whether token 0 is a CLS token (default: whenever P >= 1).
        **settings: the VTM settings of `tokenmixup.TokenMixupConfig` (kappa, saliency, vtm_detach),
            each defaulting to its declared default; held as `self.config`.
    """

    def __init__(self, num_prefix_tokens: int = 0, has_class_token: Optional[bool] = None, **settings: Any) -> None:
        super().__init__()
        context = ModelContext.from_prefix(num_prefix_tokens, has_class_token)
        values = check_settings(settings, owner='VerticalTokenMixup', scope='vtm')
        self.config = TokenMixupConfig(**values)  # the VTM settings given, the others at their declared defaults
        check_settings(self.config.scope('vtm'), context)
        self.num_prefix_tokens = num_prefix_tokens

    def extra_repr(self) -> str:
        return ', '.join(f'{name}={value!r}' for name, value in self.config.scope('vtm').items())

    def memory_tokens(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """One block's contribution: its kappa most salient input tokens.

        Args:
            x: (B, N, D) tokens the block received.
            attn: (B, H, Q, N + M) its attention probabilities (M memory columns of a VTM block are
                ignored: a block ranks its own tokens by its attention on its own N keys).

        Returns:
            (B, kappa, D), most salient first (gradient flows into x).
        """
        saliency = attention_saliency(attn[..., :x.shape[1]], self.num_prefix_tokens, self.config.saliency)
        return select_salient_tokens(x, saliency, self.config.kappa, self.num_prefix_tokens)

    def context(self, memory: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, L * kappa, D): the contributions of the L earlier blocks, detached with vtm_detach."""
        context = torch.cat(list(memory), dim=1)
        return context.detach() if self.config.vtm_detach else context


VerticalTokenMixup.__init__.__signature__ = settings_signature(  # type: ignore[attr-defined]
    VerticalTokenMixup.__init__, settings_in_scope('vtm'))
