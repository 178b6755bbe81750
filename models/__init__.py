""" The TokenMixup model zoo for timm

Importing this package registers its models with timm's registry, so that
`timm.create_model(name)` finds them. The CCT family and the ViT variants arrive with the zoo issue;
for now the package only marks where they live.
"""
__all__ = []
