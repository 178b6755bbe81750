""" TokenMixup: attention-guided token-level data augmentation for transformers

The method, independent of any model (Choi, Choi & Kim, NeurIPS 2022):
- `settings`: every TokenMixup setting declared once, its validator and the paper's recipes as presets;
- `functional`: the equations as pure tensor functions;
- `ScoreNet`, `HorizontalTokenMixup`: the difficulty-gated mixing between samples (HTM);
- `VerticalTokenMixup`, `vertical_attention`: the attention to earlier blocks' salient tokens (VTM);
- `TokenMixupOutput`, `HTMStatistics`: what a model returns when called with targets.
"""
from .functional import (
    HorizontalMix, assign_partners, attention_saliency, horizontal_mix, manifold_mix, mix_targets, pair_gain,
    replacement_mask, saliency_gain, select_salient_tokens, soft_cross_entropy)
from .horizontal import HorizontalTokenMixup, HorizontalTokenMixupResult
from .output import HTMStatistics, HTMStatisticsMeter, TokenMixupOutput, flat_statistics
from .saliency import attention_rollout, gradient_saliency, random_saliency
from .scorenet import ScoreNet
from .settings import (
    SETTINGS, ModelContext, Preset, Setting, TokenMixupConfig, check_settings, resolve_settings)
from .targets import as_soft_target, one_hot_target
from .vertical import (
    VerticalAttentionOutput, VerticalTokenMixup, attention_weights, self_attention_weights, split_qkv,
    vertical_attention)

__version__ = '0.1.0'

__all__ = [
    'HorizontalMix', 'assign_partners', 'attention_saliency', 'horizontal_mix', 'manifold_mix', 'mix_targets',
    'pair_gain', 'replacement_mask', 'saliency_gain', 'select_salient_tokens', 'soft_cross_entropy',
    'HorizontalTokenMixup', 'HorizontalTokenMixupResult', 'HTMStatistics', 'HTMStatisticsMeter', 'TokenMixupOutput',
    'flat_statistics', 'attention_rollout', 'gradient_saliency', 'random_saliency', 'ScoreNet',
    'SETTINGS', 'ModelContext', 'Preset', 'Setting', 'TokenMixupConfig', 'check_settings',
    'resolve_settings', 'as_soft_target', 'one_hot_target',
    'VerticalAttentionOutput', 'VerticalTokenMixup', 'attention_weights', 'self_attention_weights', 'split_qkv',
    'vertical_attention',
]
