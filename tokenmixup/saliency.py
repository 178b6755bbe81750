""" Saliency baselines for analysis and benchmarking

TokenMixup reads saliency from one attention map (`functional.attention_saliency`). These are the
alternatives the paper compares against (Sec. 5.1, Table 3), each returning (B, T) like
`attention_saliency`:
- `attention_rollout`: the full rollout over several blocks (Eq. 2);
- `gradient_saliency`: the input-gradient saliency of PuzzleMix / Co-Mixup, pooled to the token grid;
- `random_saliency`: random scores, the random-token baseline.
"""
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .functional import attention_saliency, soft_cross_entropy
from .settings import SETTING_DEFAULTS

__all__ = ['attention_rollout', 'gradient_saliency', 'random_saliency']


def attention_rollout(
        attns: Sequence[torch.Tensor],
        num_prefix_tokens: int = 0,
        reduce: str = SETTING_DEFAULTS['saliency'],
) -> torch.Tensor:
    """Saliency from the attention rollout over consecutive blocks (paper Eq. 2-3).

    With rows as queries (the convention of Eq. 3), the attention that block l+k's outputs pay to block
    l's input tokens is Phi(l+k) ... Phi(l+1) Phi(l): the later block multiplies from the left. Eq. 2
    is typeset with the factors in block order; this is the same rollout in the row-query convention.

    Args:
        attns: the (B, H, N, N) attention probabilities of consecutive blocks, first block first.
            Each map is averaged over heads before the product.
        num_prefix_tokens: P; reduce: 'mean' or 'cls', as in `attention_saliency`.

    Returns:
        (B, N - P) float32 saliency; with a single map it equals `attention_saliency`.
    """
    if len(attns) == 0:
        raise ValueError('attns must hold at least one (B, H, N, N) attention map, got none')
    rollout = None
    for index, attn in enumerate(attns):
        if not isinstance(attn, torch.Tensor) or attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
            shape = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
            raise ValueError(f'attns[{index}] must have shape (B, H, N, N), got {shape}')
        head_mean = attn.detach().mean(dim=1, dtype=torch.float32)
        if rollout is not None and head_mean.shape != rollout.shape:
            raise ValueError(
                f'attns[{index}] has {tuple(head_mean.shape[-2:])} tokens, expected {tuple(rollout.shape[-2:])}')
        rollout = head_mean if rollout is None else head_mean @ rollout
    assert rollout is not None  # attns holds at least one map
    return attention_saliency(rollout.unsqueeze(1), num_prefix_tokens, reduce)


def gradient_saliency(
        forward: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        target: torch.Tensor,
        grid_size: Tuple[int, int],
) -> torch.Tensor:
    """Gradient saliency pooled to the token grid (PuzzleMix / Co-Mixup style).

    The per-sample loss is the soft cross-entropy of `forward(images)` against `target`; the
    saliency of a pixel is the square root of the channel mean of its squared input gradient, then
    average-pooled to `grid_size` and flattened row-major, one value per token. Costs one forward and
    one backward pass; parameter gradients are not accumulated.

    Args:
        forward: maps (B, C_in, H, W) images to (B, C) logits.
        images: (B, C_in, H, W) inputs.
        target: (B, C) soft targets.
        grid_size: (rows, cols) of the token grid, e.g. (16, 16) for CCT-7/3x1 at 32x32.

    Returns:
        (B, rows * cols) float32 saliency.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f'images must have shape (B, C, H, W), got {shape}')
    if len(grid_size) != 2 or min(grid_size) < 1:
        raise ValueError(f'grid_size must be (rows, cols) of positive ints, got {grid_size!r}')
    with torch.enable_grad():
        inputs = images.detach().requires_grad_(True)
        loss = soft_cross_entropy(forward(inputs), target).sum()  # sample i's gradient is its own loss'
        (grad,) = torch.autograd.grad(loss, inputs)
    pixel_saliency = grad.float().pow(2).mean(dim=1, keepdim=True).sqrt()
    return F.adaptive_avg_pool2d(pixel_saliency, grid_size).flatten(1)


def random_saliency(
        batch_size: int,
        num_tokens: int,
        *,
        device: Optional[torch.device] = None,
        generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Random saliency, uniform then normalised so that each row sums to 1 like attention saliency.

    Returns:
        (batch_size, num_tokens) float32.
    """
    if batch_size < 0 or num_tokens < 1:
        raise ValueError(f'need batch_size >= 0 and num_tokens >= 1, got {batch_size} and {num_tokens}')
    scores = torch.rand(batch_size, num_tokens, device=device, generator=generator)
    return scores / scores.sum(dim=-1, keepdim=True)
