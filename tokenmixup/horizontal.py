""" Horizontal TokenMixup (paper Sec. 3.1-3.3, Alg. 1)

`HorizontalTokenMixup` sits in front of a transformer block. In training, given the tokens entering
that block, their targets and the block's attention saliency on them, it scores every sample with its
ScoreNet, mixes the easy ones with their Hungarian partners and returns the mixed tokens and targets,
the weighted ScoreNet loss and the layer's statistics. In eval mode it is the identity. Its settings
(and the ablations of paper Tables 4 and 5) are declared in `tokenmixup.settings`.
"""
from typing import Any, NamedTuple, Optional

import torch
import torch.nn as nn

from .functional import attention_saliency, finite_samples, horizontal_mix, manifold_mix, pair_gain
from .output import HTMStatistics
from .scorenet import ScoreNet
from .settings import ModelContext, TokenMixupConfig, check_settings, settings_in_scope, settings_signature
from .targets import as_soft_target

__all__ = ['HorizontalTokenMixup', 'HorizontalTokenMixupResult']


class HorizontalTokenMixupResult(NamedTuple):
    """x: (B, N, D) tokens; target: (B, C); loss: scalar weighted ScoreNet loss; stats: the layer's
    `HTMStatistics` (None in eval mode)."""
    x: torch.Tensor
    target: torch.Tensor
    loss: torch.Tensor
    stats: Optional[HTMStatistics]


class HorizontalTokenMixup(nn.Module):
    """Difficulty-gated, saliency-guided token mixing between samples of a batch.

    Args:
        dim: D, token width.
        num_classes: C; 0 disables mixing (there is nothing to score against).
        num_prefix_tokens: P, leading tokens (CLS, ...) that are never mixed.
        has_class_token: whether token 0 is a CLS token (default: whenever P >= 1); 'cls' saliency and
            ScoreNet pooling need one.
        **settings: the HTM settings of `tokenmixup.TokenMixupConfig` (tau, rho, scorenet_lambda,
            scorenet_pool, scorenet_detach, saliency, mask_reference, difficulty_gating, pairing,
            token_selection, label_mixing, mixing, manifold_alpha), each defaulting to its declared
            default and checked by `check_settings`, held as `self.config`. tau is a cross-entropy threshold:
            the released code thresholds CE / 10 <= tau, so its tau 0.1 / 0.2 are 1.0 / 2.0 here.
    """

    def __init__(
            self,
            dim: int,
            num_classes: int,
            num_prefix_tokens: int = 0,
            has_class_token: Optional[bool] = None,
            **settings: Any,
    ) -> None:
        super().__init__()
        context = ModelContext.from_prefix(num_prefix_tokens, has_class_token)
        values = check_settings(settings, owner='HorizontalTokenMixup', scope='htm')
        self.config = TokenMixupConfig(**values)  # the HTM settings given, the others at their declared defaults
        check_settings(self.config.scope('htm'), context)
        self.num_prefix_tokens = num_prefix_tokens
        self.scorenet = ScoreNet(dim, num_classes, pool=self.config.scorenet_pool,
                                 num_prefix_tokens=num_prefix_tokens, has_class_token=context.has_class_token)

    @property
    def num_classes(self) -> int:
        return self.scorenet.num_classes

    def extra_repr(self) -> str:
        return ', '.join(f'{name}={value!r}' for name, value in self.config.scope('htm').items())

    def reset_classifier(self, num_classes: int) -> None:
        """Rebuild the ScoreNet's classifier for `num_classes` (0 disables mixing)."""
        self.scorenet.reset_classifier(num_classes)

    def is_active(self, target: Optional[torch.Tensor]) -> bool:
        """Whether `forward` would mix: training mode with targets given and a classifier to score."""
        return self.training and target is not None and self.num_classes > 0

    @property
    def needs_saliency(self) -> bool:
        """Whether `forward` reads saliency (manifold mixup does not)."""
        return self.config.mixing == 'token'

    def compute_saliency(self, attn: torch.Tensor) -> torch.Tensor:
        """(B, H, Q, N) attention probabilities of the consuming block -> (B, T) float32 saliency."""
        return attention_saliency(attn, self.num_prefix_tokens, self.config.saliency)

    def forward(
            self,
            x: torch.Tensor,
            target: torch.Tensor,
            saliency: Optional[torch.Tensor],
            return_mix: bool = False,
    ) -> HorizontalTokenMixupResult:
        """Mix the easy samples of a batch.

        Args:
            x: (B, N, D) tokens entering the consuming block.
            target: (B,) integer labels or (B, C) soft targets.
            saliency: (B, T) saliency of x's non-prefix tokens from the consuming block's attention
                (None when `needs_saliency` is False).
            return_mix: also return the replacement mask and the partners in the statistics.

        Returns:
            `HorizontalTokenMixupResult(x, target, loss, stats)`: in training the mixed tokens, the
            mixed (B, C) targets, scorenet_lambda * mean ScoreNet loss and the layer's
            `HTMStatistics`. In eval mode the inputs come back unchanged with a zero loss and no
            statistics.
        """
        if not self.training:
            return HorizontalTokenMixupResult(x, target, x.new_zeros((), dtype=torch.float32), None)
        if self.num_classes == 0:
            raise ValueError('HorizontalTokenMixup has num_classes=0: targets cannot be mixed without a classifier')
        config = self.config
        target = as_soft_target(target, self.num_classes)
        scorenet_input = x.detach() if config.scorenet_detach else x
        difficulty = self.scorenet.difficulty(scorenet_input, target)
        loss = config.scorenet_lambda * (difficulty.mean() if difficulty.shape[0] else difficulty.sum())  # 0 if empty
        finite = finite_samples(x, saliency)
        if config.mixing == 'manifold':
            easy = finite
            mixed = manifold_mix(x, target, config.manifold_alpha, num_prefix_tokens=self.num_prefix_tokens)
        else:
            if saliency is None:
                raise ValueError(f'saliency is needed with mixing={config.mixing!r}, got None')
            easy = difficulty.detach() < config.tau if config.difficulty_gating else torch.ones_like(finite)
            easy = easy & finite
            mixed = horizontal_mix(
                x, target, saliency, easy, config.rho, num_prefix_tokens=self.num_prefix_tokens,
                mask_reference=config.mask_reference, pairing=config.pairing, token_selection=config.token_selection,
                label_mixing=config.label_mixing)
        stats = self._statistics(difficulty.detach(), easy, finite, saliency, mixed.mask, mixed.partner, return_mix)
        return HorizontalTokenMixupResult(mixed.x, mixed.y, loss, stats)

    def _statistics(
            self,
            difficulty: torch.Tensor,
            easy: torch.Tensor,
            finite: torch.Tensor,
            saliency: Optional[torch.Tensor],
            mask: torch.Tensor,
            partner: torch.Tensor,
            return_mix: bool,
    ) -> HTMStatistics:
        """Scalar float32 tensors on the batch's device; nothing here waits for the device."""
        num_easy = easy.sum().float()
        num_mixed = mask.any(dim=-1).sum().float()
        if saliency is None:  # manifold mixup: no saliency, no gain
            gain = torch.zeros_like(difficulty)
        else:
            gain = pair_gain(saliency, saliency[partner], self.config.rho)
        easy_gain = torch.where(easy, gain, torch.zeros_like(gain))
        empty = difficulty.shape[0] == 0  # an empty batch: zeros, not reductions over nothing
        zero = difficulty.new_zeros(())
        return HTMStatistics(
            easy_samples=num_easy,
            mixed_samples=num_mixed,
            replaced_tokens=mask.sum().float() / num_mixed.clamp_min(1),
            difficulty=zero if empty else difficulty.mean(),
            difficulty_min=zero if empty else difficulty.min(),
            gain=easy_gain.sum() / num_easy.clamp_min(1),
            gain_max=zero if empty else easy_gain.max(),
            nonfinite_samples=(~finite).sum().float(),
            mask=mask if return_mix else mask.new_empty((0,)),
            partner=partner if return_mix else partner.new_empty((0,)),
        )


HorizontalTokenMixup.__init__.__signature__ = settings_signature(  # type: ignore[attr-defined]
    HorizontalTokenMixup.__init__, settings_in_scope('htm'))
