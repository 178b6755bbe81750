""" Vision Transformer variants with TokenMixup

ViT: `An Image is Worth 16x16 Words` (Dosovitskiy et al. 2020, https://arxiv.org/abs/2010.11929).
TokenMixup: Choi, Choi & Kim, NeurIPS 2022 (https://arxiv.org/abs/2210.07562), whose ImageNet runs
fine-tune ViT-B/16.

The variants subclass timm's `VisionTransformer`: same blocks, same state-dict keys, plus the HTM
ScoreNet's. timm's own base names (`vit_base_patch16_224`, ...) stay timm's; only the `_htm`, `_vtm`
and `_htm_vtm` names are registered here, with timm's pretrained weights as their default tags (the
ScoreNet starts fresh, everything else loads strictly).
"""
from dataclasses import asdict
from typing import Any, Dict, Optional, Union

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models.vision_transformer import Block, VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter_fn

from tokenmixup import SETTINGS, TokenMixupOutput
from .tokenmixup_layers import (
    TokenMixupMixin, fill_scorenet_weights, preset_classifiers, tokenmixup_attention, tokenmixup_attention_map,
    tokenmixup_init_signature)

__all__ = ['TokenMixupBlock', 'VisionTransformerTokenMixup']


class TokenMixupBlock(Block):
    """timm's pre-norm ViT block, able to attend to a VTM memory and to report its attention."""

    def forward_with_memory(
            self,
            x: torch.Tensor,
            memory: Optional[torch.Tensor],
            attention_rows: Optional[str],
    ):
        """The block with its attention also reading `memory` (VTM); returns (x, attention probabilities)."""
        attn_out, attn = tokenmixup_attention(self.attn, self.norm1, x, memory, attention_rows)
        x = x + self.drop_path1(self.ls1(attn_out))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, attn

    def attention_map(self, x: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """(B, H, Q, N) self-attention probabilities on x."""
        return tokenmixup_attention_map(self.attn, self.norm1, x, cls_only)


class VisionTransformerTokenMixup(TokenMixupMixin, VisionTransformer):
    """timm's VisionTransformer with optional Horizontal and Vertical TokenMixup.

    Args:
        tokenmixup_preset: a recipe of `tokenmixup.PRESETS` (the registered variants use
            'vit_imagenet_htm', 'vit_imagenet_vtm', 'vit_imagenet_htm_vtm'); None keeps the declared
            defaults (no HTM, no VTM).
        **kwargs: every `VisionTransformer` argument and every TokenMixup setting of
            `tokenmixup.SETTINGS`, over the preset; `inspect.signature` lists them all.
    """

    def __init__(self, *, tokenmixup_preset: Optional[str] = None, **kwargs: Any) -> None:
        settings = {name: kwargs.pop(name) for name in [s.name for s in SETTINGS] if name in kwargs}
        block_fn = kwargs.setdefault('block_fn', TokenMixupBlock)
        if not (isinstance(block_fn, type) and issubclass(block_fn, TokenMixupBlock)):
            raise ValueError(f'block_fn must be TokenMixupBlock or a subclass of it, got {block_fn!r}')
        super().__init__(**kwargs)
        self.init_tokenmixup(
            settings, tokenmixup_preset, embed_dim=self.embed_dim, num_classes=self.num_classes,
            num_tokens=self.patch_embed.num_patches + self.num_prefix_tokens, has_class_token=self.has_class_token)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head (and every HTM ScoreNet's classifier) for `num_classes` classes."""
        super().reset_classifier(num_classes, global_pool)
        self.reset_scorenet_classifiers(num_classes)

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, D) tokens entering the first block."""
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)

    def forward_features(
            self,
            x: torch.Tensor,
            attn_mask: Optional[torch.Tensor] = None,
            is_causal: bool = False,
    ) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) normalised tokens (VTM is active in training)."""
        if attn_mask is not None or is_causal:
            return super().forward_features(x, attn_mask=attn_mask, is_causal=is_causal)
        return self.norm(self.forward_blocks(self.embed_tokens(x)).x)

    def forward(
            self,
            x: torch.Tensor,
            target: Optional[torch.Tensor] = None,
            *,
            attn_mask: Optional[torch.Tensor] = None,
            is_causal: bool = False,
            return_mix: bool = False,
    ) -> Union[torch.Tensor, TokenMixupOutput]:
        """Logits for `model(x)`; `TokenMixupOutput` for `model(x, target)` (docs/design.md §3), whose
        HTM statistics also carry each layer's mask and partners with `return_mix`."""
        if target is None:
            return self.forward_head(self.forward_features(x, attn_mask=attn_mask, is_causal=is_causal))
        if attn_mask is not None or is_causal:
            raise ValueError('attn_mask and is_causal are not supported together with a target')
        return self.forward_tokenmixup(x, target, return_mix=return_mix)


VisionTransformerTokenMixup.__init__.__signature__ = tokenmixup_init_signature(
    VisionTransformerTokenMixup.__init__, base=VisionTransformer.__init__)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: VisionTransformerTokenMixup) -> Dict[str, torch.Tensor]:
    """timm's ViT filter, then fresh ScoreNet weights where the checkpoint has none."""
    return fill_scorenet_weights(vit_checkpoint_filter_fn(state_dict, model), model)


def _create_vit_tokenmixup(variant: str, pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    out_indices = kwargs.pop('out_indices', 3)
    return build_model_with_cfg(
        VisionTransformerTokenMixup, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# pretrained configs: timm's weights of each base, default tag first, classifier incl. the ScoreNet's

_VARIANT_PRESETS = {'_htm': 'vit_imagenet_htm', '_vtm': 'vit_imagenet_vtm', '_htm_vtm': 'vit_imagenet_htm_vtm'}
_VIT_DEPTH = 12
_VIT_BASES = {  # our base name: timm's default tag for it (docs/design.md §5.2)
    'vit_tiny_patch16_224': 'augreg_in21k_ft_in1k',
    'vit_small_patch16_224': 'augreg_in21k_ft_in1k',
    'vit_base_patch16_224': 'orig_in21k_ft_in1k',
}


def _timm_cfg(base: str, tag: str, preset: str) -> Dict[str, Any]:
    cfg = asdict(get_pretrained_cfg(f'{base}.{tag}'))
    for key in ('architecture', 'tag'):
        cfg.pop(key, None)
    if cfg.get('num_classes'):
        cfg['classifier'] = preset_classifiers(cfg['classifier'], preset, _VIT_DEPTH)
    return cfg


# TokenMixup checkpoints published on the Hugging Face Hub (`python -m hub.publish`), by registered name:
#     'vit_base_patch16_224_htm': {'in1k_tokenmixup': dict(hf_hub_id='ORG/NAME')},
# Each becomes the tag `name.tag` after timm's default tag, loaded from the repo's model.safetensors the way
# timm loads its own weights (`hf_hub_id`); the cfg starts from the base's timm cfg and the entry overrides
# it. The variant's TokenMixup defaults must be the settings the checkpoint was trained with
# (`hf-hub:ORG/NAME` applies the repo's config.json for any settings). None are published yet.
PUBLISHED_CFGS: Dict[str, Dict[str, Dict[str, Any]]] = {}


def _variant_cfgs(published: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None) -> Dict[str, Dict[str, Any]]:
    published = PUBLISHED_CFGS if published is None else published
    cfgs = {}
    for base, default_tag in _VIT_BASES.items():
        for suffix, preset in _VARIANT_PRESETS.items():
            cfgs[f'{base}{suffix}.{default_tag}'] = _timm_cfg(base, default_tag, preset)
            for tag, overrides in published.get(f'{base}{suffix}', {}).items():
                source = dict(_timm_cfg(base, default_tag, preset), url='', hf_hub_id=None, custom_load=False)
                cfgs[f'{base}{suffix}.{tag}'] = dict(source, **overrides)
    return cfgs


default_cfgs = generate_default_cfgs(_variant_cfgs())

# the ImageNet ViT recipes of the paper (docs/design.md §5.3) are the presets of _VARIANT_PRESETS
_HTM_ARGS = dict(tokenmixup_preset=_VARIANT_PRESETS['_htm'])
_VTM_ARGS = dict(tokenmixup_preset=_VARIANT_PRESETS['_vtm'])
_HTM_VTM_ARGS = dict(tokenmixup_preset=_VARIANT_PRESETS['_htm_vtm'])


def _tiny_args() -> Dict[str, Any]:
    return dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)


def _small_args() -> Dict[str, Any]:
    return dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)


def _base_args() -> Dict[str, Any]:
    return dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)


@register_model
def vit_tiny_patch16_224_htm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-Ti/16 + Horizontal TokenMixup."""
    model_args = dict(_tiny_args(), **_HTM_ARGS)
    return _create_vit_tokenmixup('vit_tiny_patch16_224_htm', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_tiny_patch16_224_vtm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-Ti/16 + Vertical TokenMixup."""
    model_args = dict(_tiny_args(), **_VTM_ARGS)
    return _create_vit_tokenmixup('vit_tiny_patch16_224_vtm', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_tiny_patch16_224_htm_vtm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-Ti/16 + Horizontal and Vertical TokenMixup."""
    model_args = dict(_tiny_args(), **_HTM_VTM_ARGS)
    return _create_vit_tokenmixup('vit_tiny_patch16_224_htm_vtm', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_small_patch16_224_htm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-S/16 + Horizontal TokenMixup."""
    model_args = dict(_small_args(), **_HTM_ARGS)
    return _create_vit_tokenmixup('vit_small_patch16_224_htm', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_small_patch16_224_vtm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-S/16 + Vertical TokenMixup."""
    model_args = dict(_small_args(), **_VTM_ARGS)
    return _create_vit_tokenmixup('vit_small_patch16_224_vtm', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_small_patch16_224_htm_vtm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-S/16 + Horizontal and Vertical TokenMixup."""
    model_args = dict(_small_args(), **_HTM_VTM_ARGS)
    return _create_vit_tokenmixup('vit_small_patch16_224_htm_vtm', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_base_patch16_224_htm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-B/16 + Horizontal TokenMixup (paper Table 2: 87.3M parameters, 82.37 top-1)."""
    model_args = dict(_base_args(), **_HTM_ARGS)
    return _create_vit_tokenmixup('vit_base_patch16_224_htm', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_base_patch16_224_vtm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-B/16 + Vertical TokenMixup (paper Table 2: 82.30 top-1)."""
    model_args = dict(_base_args(), **_VTM_ARGS)
    return _create_vit_tokenmixup('vit_base_patch16_224_vtm', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_base_patch16_224_htm_vtm(pretrained: bool = False, **kwargs) -> VisionTransformerTokenMixup:
    """ViT-B/16 + Horizontal and Vertical TokenMixup (paper Table 2: 82.32 top-1)."""
    model_args = dict(_base_args(), **_HTM_VTM_ARGS)
    return _create_vit_tokenmixup('vit_base_patch16_224_htm_vtm', pretrained=pretrained, **dict(model_args, **kwargs))
