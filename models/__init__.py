""" The TokenMixup model zoo for timm

Importing this package registers its models with timm's registry, so that `timm.create_model(name)`
finds them: the CCT family (`cct_*`) and TokenMixup variants of timm's ViTs (`vit_*_htm`, `vit_*_vtm`,
`vit_*_htm_vtm`).
"""
from .cct import CCT
from .vit_tokenmixup import TokenMixupBlock, VisionTransformerTokenMixup

__all__ = ['CCT', 'TokenMixupBlock', 'VisionTransformerTokenMixup']
