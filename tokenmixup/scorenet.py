""" ScoreNet: the difficulty predictor of Horizontal TokenMixup (paper Sec. 3.1, Eq. 1)

A pooling of the non-prefix tokens followed by one Linear layer to class logits. The difficulty of a
sample is the cross-entropy of that prediction against the sample's (soft) target.
"""
from typing import Optional

import torch
import torch.nn as nn

from .functional import soft_cross_entropy
from .settings import ModelContext, check_settings

__all__ = ['ScoreNet']


class ScoreNet(nn.Module):
    """Pool tokens and predict class logits; the prediction's loss measures sample difficulty.

    Args:
        dim: D, token width.
        num_classes: C; 0 builds no classifier (the ScoreNet then cannot score).
        pool: the `scorenet_pool` setting: 'attn' (SeqPool: softmax over tokens of a Linear(D, 1),
            weighted sum), 'avg' (mean of the non-prefix tokens) or 'cls' (the CLS token, token 0).
        num_prefix_tokens: P, leading tokens that 'attn' and 'avg' pooling skip.
        has_class_token: whether token 0 is a CLS token (default: whenever P >= 1); 'cls' needs one.
    """

    def __init__(
            self,
            dim: int,
            num_classes: int,
            pool: str = 'attn',
            num_prefix_tokens: int = 0,
            has_class_token: Optional[bool] = None,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f'dim must be an int >= 1, got {dim!r}')
        context = ModelContext.from_prefix(num_prefix_tokens, has_class_token)
        pool = check_settings({'scorenet_pool': pool}, context)['scorenet_pool']
        self.dim = dim
        self.pool = pool
        self.num_prefix_tokens = num_prefix_tokens
        self.attn_pool = nn.Linear(dim, 1) if pool == 'attn' else None
        self.num_classes = 0
        self.head: nn.Module = nn.Identity()
        self.reset_classifier(num_classes)
        if self.attn_pool is not None:
            nn.init.trunc_normal_(self.attn_pool.weight, std=0.02)
            nn.init.zeros_(self.attn_pool.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """Rebuild the final Linear for `num_classes` classes (0 removes it)."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f'num_classes must be an int >= 0, got {num_classes!r}')
        self.num_classes = num_classes
        if num_classes > 0:
            head = nn.Linear(self.dim, num_classes)
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)
            if isinstance(self.head, nn.Linear):  # keep the device and dtype of the weights it replaces
                head = head.to(device=self.head.weight.device, dtype=self.head.weight.dtype)
            self.head = head
        else:
            self.head = nn.Identity()

    def pool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens -> (B, D) pooled feature."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f'x must have shape (B, N, {self.dim}), got {tuple(x.shape)}')
        if self.pool == 'cls':
            return x[:, 0]
        tokens = x[:, self.num_prefix_tokens:]
        if self.pool == 'avg':
            return tokens.mean(dim=1)
        assert self.attn_pool is not None  # pool == 'attn'
        weights = self.attn_pool(tokens).softmax(dim=1)  # (B, T, 1)
        return (weights.transpose(1, 2) @ tokens).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens -> (B, C) logits."""
        return self.head(self.pool_tokens(x))

    def difficulty(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample difficulty (paper Eq. 1): soft cross-entropy of the prediction, (B,) float32."""
        if self.num_classes == 0:
            raise ValueError('the ScoreNet has no classifier (num_classes=0), so it cannot score difficulty')
        return soft_cross_entropy(self(x), target)

