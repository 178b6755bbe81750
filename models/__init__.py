""" The TokenMixup model zoo for timm

Importing this package registers its models with timm's registry, so that `timm.create_model(name)`
finds them: the CCT family (`cct_*`), the TokenMixup variants of the timm ViTs in
`vit_tokenmixup.VARIANT_BASES` (`{base}_htm`, `{base}_vtm`, `{base}_htm_vtm`), and `tokenmixup_vit`,
which adds TokenMixup to any other timm ViT (`create_tokenmixup_vit`).
"""
from .cct import CCT
from .vit_tokenmixup import (
    ANY_VIT_ARCHITECTURE, TokenMixupBlock, VisionTransformerTokenMixup, create_tokenmixup_vit, tokenmixup_model_args)

__all__ = [
    'CCT', 'TokenMixupBlock', 'VisionTransformerTokenMixup', 'create_tokenmixup_vit', 'tokenmixup_model_args',
    'ANY_VIT_ARCHITECTURE',
]
