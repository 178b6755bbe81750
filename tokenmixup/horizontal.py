""" Horizontal TokenMixup (paper Sec. 3.1-3.3, Alg. 1)

`HorizontalTokenMixup` sits in front of a transformer block. In training, given the tokens entering
that block, their targets and the block's attention saliency on them, it scores every sample with its
ScoreNet, mixes the easy ones with their Hungarian partners and returns the mixed tokens and targets,
the weighted ScoreNet loss and statistics. In eval mode it is the identity.
"""
from typing import Dict, NamedTuple, Optional

import torch
import torch.nn as nn

from .functional import (
    MASK_REFERENCES, SALIENCY_REDUCTIONS, _check_threshold, attention_saliency, horizontal_mix, pair_gain)
from .scorenet import ScoreNet
from .targets import as_soft_target

__all__ = ['HorizontalTokenMixup', 'HorizontalTokenMixupResult']


class HorizontalTokenMixupResult(NamedTuple):
    """x: (B, N, D) tokens; target: (B, C); loss: scalar weighted ScoreNet loss; stats: scalar tensors."""
    x: torch.Tensor
    target: torch.Tensor
    loss: torch.Tensor
    stats: Dict[str, torch.Tensor]


class HorizontalTokenMixup(nn.Module):
    """Difficulty-gated, saliency-guided token mixing between samples of a batch.

    Args:
        dim: D, token width.
        num_classes: C; 0 disables mixing (there is nothing to score against).
        tau: difficulty threshold on the ScoreNet cross-entropy; samples with CE < tau are easy.
            (The released code thresholds CE / 10 <= tau, so its tau 0.1 / 0.2 are 1.0 / 2.0 here.)
        rho: minimum per-token saliency gain for a token to be replaced (Eq. 6, 9).
        scorenet_lambda: weight of the mean ScoreNet loss in the returned loss.
        scorenet_pool: 'attn' (SeqPool), 'avg' or 'cls' pooling of the ScoreNet.
        scorenet_detach: the ScoreNet reads detached tokens, so its loss does not shape the trunk.
        saliency: 'mean' or 'cls' reduction of the attention map (see `attention_saliency`).
        mask_reference: 'own' (Eq. 9) or 'first' (the released code's mask); see `horizontal_mix`.
        num_prefix_tokens: P, leading tokens (CLS, ...) that are never mixed.
    """

    def __init__(
            self,
            dim: int,
            num_classes: int,
            tau: float = 2.0,
            rho: float = 0.005,
            scorenet_lambda: float = 0.001,
            scorenet_pool: str = 'attn',
            scorenet_detach: bool = False,
            saliency: str = 'mean',
            mask_reference: str = 'own',
            num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        self.tau = _check_threshold('tau', tau)
        self.rho = _check_threshold('rho', rho)
        self.scorenet_lambda = _check_threshold('scorenet_lambda', scorenet_lambda)
        if not isinstance(scorenet_detach, bool):
            raise ValueError(f'scorenet_detach must be a bool, got {scorenet_detach!r}')
        if saliency not in SALIENCY_REDUCTIONS:
            raise ValueError(f'saliency must be one of {SALIENCY_REDUCTIONS}, got {saliency!r}')
        if saliency == 'cls' and num_prefix_tokens < 1:
            raise ValueError("saliency='cls' needs a CLS token (num_prefix_tokens >= 1); use 'mean'")
        if mask_reference not in MASK_REFERENCES:
            raise ValueError(f'mask_reference must be one of {MASK_REFERENCES}, got {mask_reference!r}')
        self.scorenet_detach = scorenet_detach
        self.saliency = saliency
        self.mask_reference = mask_reference
        self.num_prefix_tokens = num_prefix_tokens
        self.scorenet = ScoreNet(dim, num_classes, pool=scorenet_pool, num_prefix_tokens=num_prefix_tokens)

    @property
    def num_classes(self) -> int:
        return self.scorenet.num_classes

    def reset_classifier(self, num_classes: int) -> None:
        """Rebuild the ScoreNet's classifier for `num_classes` (0 disables mixing)."""
        self.scorenet.reset_classifier(num_classes)

    def is_active(self, target: Optional[torch.Tensor]) -> bool:
        """Whether `forward` would mix: training mode with targets given and a classifier to score."""
        return self.training and target is not None and self.num_classes > 0

    def compute_saliency(self, attn: torch.Tensor) -> torch.Tensor:
        """(B, H, Q, N) attention probabilities of the consuming block -> (B, T) float32 saliency."""
        return attention_saliency(attn, self.num_prefix_tokens, self.saliency)

    def forward(self, x: torch.Tensor, target: torch.Tensor, saliency: torch.Tensor) -> HorizontalTokenMixupResult:
        """Mix the easy samples of a batch.

        Args:
            x: (B, N, D) tokens entering the consuming block.
            target: (B,) integer labels or (B, C) soft targets.
            saliency: (B, T) saliency of x's non-prefix tokens from the consuming block's attention.

        Returns:
            `HorizontalTokenMixupResult(x, target, loss, stats)`: in training the mixed tokens, the
            mixed (B, C) targets, scorenet_lambda * mean ScoreNet loss, and the statistics `easy`,
            `mixed` (samples with at least one replaced token), `replaced_tokens` (mean per mixed
            sample), `difficulty_min`, `difficulty_mean`, `gain_max`, `gain_mean` (gain of the chosen
            pairs of easy samples). In eval mode the inputs come back unchanged with a zero loss.
        """
        if not self.training:
            return HorizontalTokenMixupResult(x, target, x.new_zeros((), dtype=torch.float32), {})
        if self.num_classes == 0:
            raise ValueError('HorizontalTokenMixup has num_classes=0: targets cannot be mixed without a classifier')
        target = as_soft_target(target, self.num_classes)
        scorenet_input = x.detach() if self.scorenet_detach else x
        difficulty = self.scorenet.difficulty(scorenet_input, target)
        easy = difficulty.detach() < self.tau
        mixed = horizontal_mix(
            x, target, saliency, easy, self.rho,
            num_prefix_tokens=self.num_prefix_tokens, mask_reference=self.mask_reference)
        loss = self.scorenet_lambda * difficulty.mean()
        stats = self._statistics(difficulty.detach(), easy, saliency, mixed.mask, mixed.partner)
        return HorizontalTokenMixupResult(mixed.x, mixed.y, loss, stats)

    def _statistics(
            self,
            difficulty: torch.Tensor,
            easy: torch.Tensor,
            saliency: torch.Tensor,
            mask: torch.Tensor,
            partner: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """Scalar float32 tensors on the batch's device; nothing here waits for the device."""
        num_easy = easy.sum().float()
        num_mixed = mask.any(dim=-1).sum().float()
        gain = pair_gain(saliency, saliency[partner], self.rho)
        easy_gain = torch.where(easy, gain, torch.zeros_like(gain))
        return {
            'easy': num_easy,
            'mixed': num_mixed,
            'replaced_tokens': mask.sum().float() / num_mixed.clamp_min(1),
            'difficulty_min': difficulty.min(),
            'difficulty_mean': difficulty.mean(),
            'gain_max': easy_gain.max(),
            'gain_mean': easy_gain.sum() / num_easy.clamp_min(1),
        }
