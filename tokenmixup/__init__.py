""" TokenMixup: attention-guided token-level data augmentation for transformers

The method, independent of any model (Choi, Choi & Kim, NeurIPS 2022):
- `functional`: the equations as pure tensor functions;
- `ScoreNet`, `HorizontalTokenMixup`: the difficulty-gated mixing between samples (HTM);
- `vertical_attention`: the cross-attention to earlier blocks' salient tokens (VTM);
- `TokenMixupOutput`: what a model returns when called with targets.
"""
from .functional import (
    HorizontalMix, assign_partners, attention_saliency, horizontal_mix, mix_targets, pair_gain,
    replacement_mask, saliency_gain, select_salient_tokens, soft_cross_entropy)
from .horizontal import HorizontalTokenMixup, HorizontalTokenMixupResult
from .output import TokenMixupOutput
from .saliency import attention_rollout, gradient_saliency, random_saliency
from .scorenet import ScoreNet
from .targets import as_soft_target, one_hot_target
from .vertical import (
    VerticalAttentionOutput, attention_weights, self_attention_weights, split_qkv, vertical_attention)

__version__ = '0.1.0'

__all__ = [
    'HorizontalMix', 'assign_partners', 'attention_saliency', 'horizontal_mix', 'mix_targets', 'pair_gain',
    'replacement_mask', 'saliency_gain', 'select_salient_tokens', 'soft_cross_entropy',
    'HorizontalTokenMixup', 'HorizontalTokenMixupResult', 'TokenMixupOutput',
    'attention_rollout', 'gradient_saliency', 'random_saliency', 'ScoreNet',
    'as_soft_target', 'one_hot_target',
    'VerticalAttentionOutput', 'attention_weights', 'self_attention_weights', 'split_qkv', 'vertical_attention',
]
