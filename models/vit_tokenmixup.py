""" Vision Transformer variants with TokenMixup

ViT: `An Image is Worth 16x16 Words` (Dosovitskiy et al. 2020, https://arxiv.org/abs/2010.11929); DeiT
(Touvron et al. 2021, https://arxiv.org/abs/2012.12877; DeiT III, https://arxiv.org/abs/2204.07118);
registers (Darcet et al. 2023, https://arxiv.org/abs/2309.16588). TokenMixup: Choi, Choi & Kim,
NeurIPS 2022 (https://arxiv.org/abs/2210.07562), whose ImageNet runs fine-tune ViT-B/16.

The models subclass timm's `VisionTransformer`: same blocks, same state-dict keys, plus the HTM
ScoreNet's. Two ways in, one builder (`_build_tokenmixup_vit`):
- the registered `{base}_htm`, `{base}_vtm` and `{base}_htm_vtm` variants of the timm ViTs in
  `VARIANT_BASES`, generated from that table, each with timm's pretrained weights of its base as its
  default tag (the ScoreNet starts fresh, everything else loads strictly);
- `create_tokenmixup_vit(name, ...)` for any other timm name that timm builds as a `VisionTransformer`
  with pre-norm `Block`s and fused-qkv `Attention`; `timm.create_model('tokenmixup_vit',
  base_model=name, ...)` is the same call under a registered name, the one checkpoints and Hub folders
  record.
Both read the base's architecture arguments from timm's own entrypoint (`read_timm_build`), so a model is
exactly its base plus the TokenMixup settings. timm's own names (`vit_base_patch16_224`, ...) stay timm's.
"""
import functools
import inspect
import sys
import threading
from dataclasses import asdict
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import Attention
from timm.models import (
    build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, is_model, model_entrypoint, register_model,
    split_model_name_tag)
from timm.models.vision_transformer import Block, VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter_fn

from tokenmixup import SETTINGS, TokenMixupOutput
from tokenmixup.settings import SETTING_NAMES
from .tokenmixup_layers import (
    TokenMixupMixin, base_weights_description, fill_scorenet_weights, preset_classifiers, tokenmixup_attention,
    tagged_cfgs, tokenmixup_attention_map, tokenmixup_init_signature)

__all__ = [
    'TokenMixupBlock', 'VisionTransformerTokenMixup', 'create_tokenmixup_vit', 'tokenmixup_model_args',
    'ANY_VIT_ARCHITECTURE', 'VariantBase', 'VARIANT_BASES', 'RECIPES', 'TimmBuild', 'read_timm_build',
    'check_vit_build', 'checkpoint_filter_fn',
]


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
        tokenmixup_preset: a recipe of `models.presets.PRESETS` (the registered variants use
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

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """timm's grouping, with each HTM module (its ScoreNet) in the group of the block it sits in front of."""
        matcher = dict(super().group_matcher(coarse))
        blocks = matcher['blocks']
        blocks = list(blocks) if isinstance(blocks, (list, tuple)) else [(blocks, None)]
        matcher['blocks'] = [blocks[0], (r'^htm\.(\d+)', None), *blocks[1:]]
        return matcher

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


# ---------------------------------------------------------------------------------------------
# reading a timm entrypoint's architecture, and refusing what TokenMixup cannot re-run

class TimmBuild(NamedTuple):
    """What a timm entrypoint hands to timm's `build_model_with_cfg`.

    model_cls: the model class it builds; variant: the name its pretrained cfgs are registered under;
    options: the builder's own arguments it gave (`pretrained_filter_fn`, `pretrained_strict`,
    `feature_cfg`, `pretrained_cfg`, ...); model_kwargs: the model constructor's arguments, i.e. the
    entrypoint's architecture arguments with the caller's keyword arguments over them.
    """
    model_cls: Callable[..., nn.Module]
    variant: str
    options: Dict[str, Any]
    model_kwargs: Dict[str, Any]


class _BuildRead(Exception):
    """Stops an entrypoint at its builder call, carrying what the builder was given."""

    def __init__(self, build: TimmBuild) -> None:
        super().__init__(build.variant)
        self.build = build


# one read_timm_build at a time: its replacement of timm's builder is seen by the whole process
_READ_LOCK = threading.Lock()


def read_timm_build(model_name: str, pretrained: bool = False, **kwargs: Any) -> TimmBuild:
    """What `timm.create_model(model_name, pretrained, **kwargs)` would build, read without building it.

    timm keeps each architecture's arguments in the body of its entrypoint (`model_args = dict(...)`), so
    the entrypoint itself is called, with `kwargs`. For the duration of that one call, and only then, the
    `build_model_with_cfg` of timm's model files is replaced by a function that records its arguments and
    stops the call; the originals are back before this returns. The call runs on the meta device, so an
    entrypoint that made tensors before reaching its builder would allocate nothing. Thread-safe: the
    replacement passes calls from any other thread through to timm's builder, and one read runs at a time.

    Args:
        model_name: a registered timm name without a tag.
        pretrained, **kwargs: what the entrypoint is called with.

    Raises:
        ValueError if the entrypoint returns without calling `build_model_with_cfg`.
    """
    entrypoint = model_entrypoint(model_name)
    signature = inspect.signature(build_model_with_cfg)
    var_keyword = next(p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD)

    reader = threading.get_ident()

    def read_call(*args: Any, **call_kwargs: Any) -> nn.Module:
        if threading.get_ident() != reader:  # another thread building a timm model meanwhile
            return build_model_with_cfg(*args, **call_kwargs)
        arguments = dict(signature.bind(*args, **call_kwargs).arguments)
        model_kwargs = dict(arguments.pop(var_keyword, {}))
        model_cls, variant = arguments.pop('model_cls'), arguments.pop('variant')
        arguments.pop('pretrained', None)
        raise _BuildRead(TimmBuild(model_cls, variant, arguments, model_kwargs))

    with _READ_LOCK:
        modules = [module for name, module in list(sys.modules.items())
                   if (name == 'timm.models' or name.startswith('timm.models.'))
                   and getattr(module, 'build_model_with_cfg', None) is build_model_with_cfg]
        for module in modules:
            module.build_model_with_cfg = read_call
        try:
            with torch.device('meta'):
                entrypoint(pretrained=pretrained, **kwargs)
        except _BuildRead as read:
            return read.build
        finally:
            for module in modules:
                module.build_model_with_cfg = build_model_with_cfg
    raise ValueError(f'{model_name!r}: its timm entrypoint does not build through timm.models.build_model_with_cfg, '
                     'so its architecture cannot be read; TokenMixup supports timm VisionTransformer names')


_NEEDS = ("TokenMixup re-runs each block's attention from its weights, so it needs timm's VisionTransformer "
          "whose blocks are all timm's pre-norm Block with its fused-qkv Attention")

# what the model classes timm builds instead of VisionTransformer have that TokenMixup cannot re-run
_CLASS_NOTES = {
    'VisionTransformerDistilled': 'two heads (a distillation token with its own head next to the CLS head)',
    'SwinTransformer': 'windowed attention in hierarchical stages',
    'SwinTransformerV2': 'windowed cosine attention in hierarchical stages',
    'Eva': 'its own attention with rotary position embeddings',
    'VisionTransformerRelPos': 'relative position biases inside its attention',
    'NaFlexVit': 'variable-resolution patch embedding and masks (set TIMM_USE_NAFLEXVIT=false)',
}
# ... and the block classes other than the pre-norm Block
_BLOCK_NOTES = {
    'ResPostBlock': 'post-norm residuals, x + norm1(attn(x)), where TokenMixup would wire a pre-norm attention',
    'ParallelScalingBlock': 'attention and MLP in parallel from one fused projection',
    'DiffParallelScalingBlock': 'differential attention and MLP in parallel',
    'ParallelThingsBlock': 'several attention and MLP branches in parallel',
}


def check_vit_build(model_name: str, build: TimmBuild) -> None:
    """ValueError, saying what is missing, unless `build` is timm's `VisionTransformer` with pre-norm
    `Block` blocks (or `TokenMixupBlock` subclasses) and the fused-qkv `Attention`."""
    name = getattr(build.model_cls, '__name__', repr(build.model_cls))
    if build.model_cls is not VisionTransformer:
        note = _CLASS_NOTES.get(name)
        raise ValueError(f'{model_name!r} is not supported: timm builds it as {name}'
                         + (f', which has {note}' if note else ', not VisionTransformer') + f'. {_NEEDS}')
    block_fn = build.model_kwargs.get('block_fn', Block)
    if not (block_fn is Block or (isinstance(block_fn, type) and issubclass(block_fn, TokenMixupBlock))):
        block = getattr(block_fn, '__name__', repr(block_fn))
        note = _BLOCK_NOTES.get(block)
        raise ValueError(f'{model_name!r} is not supported: its blocks are {block}'
                         + (f' ({note})' if note else '') + f', not the pre-norm Block. {_NEEDS}')
    attn_layer = build.model_kwargs.get('attn_layer', Attention)
    if not (attn_layer is Attention or attn_layer in ('', 'attn')):
        attn = (f'attn_layer={attn_layer!r}' if isinstance(attn_layer, str)
                else getattr(attn_layer, '__name__', repr(attn_layer)))
        raise ValueError(f'{model_name!r} is not supported: its attention is {attn}, not the fused-qkv Attention. '
                         f'{_NEEDS}')
    if build.options.get('model_cfg') is not None:
        raise ValueError(f'{model_name!r} is not supported: it is built from a model_cfg. {_NEEDS}')


# ---------------------------------------------------------------------------------------------
# the one builder of the registered variants and of create_tokenmixup_vit

def _filter_then_fill(filter_fn: Optional[Callable], state_dict: Dict[str, torch.Tensor],
                      model: VisionTransformerTokenMixup) -> Dict[str, torch.Tensor]:
    """The base's checkpoint filter (if it has one), then fresh ScoreNet weights where the checkpoint has none."""
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    return fill_scorenet_weights(state_dict, model)


def checkpoint_filter_fn(
        state_dict: Dict[str, torch.Tensor],
        model: VisionTransformerTokenMixup,
) -> Dict[str, torch.Tensor]:
    """timm's ViT filter, then fresh ScoreNet weights where the checkpoint has none."""
    return _filter_then_fill(vit_checkpoint_filter_fn, state_dict, model)


def _build_tokenmixup_vit(
        base: str,
        variant: Optional[str],
        pretrained: bool,
        kwargs: Dict[str, Any],
) -> VisionTransformerTokenMixup:
    """timm's `base` exactly as its entrypoint builds it (architecture, checkpoint filter, strictness,
    feature cfg), as a `VisionTransformerTokenMixup` with the TokenMixup settings in `kwargs`; its
    pretrained cfgs are looked up under `variant` (None: the base's own)."""
    kwargs = dict(kwargs)
    tokenmixup = {name: kwargs.pop(name) for name in (*SETTING_NAMES, 'tokenmixup_preset') if name in kwargs}
    build = read_timm_build(base, pretrained, **kwargs)
    check_vit_build(base, build)
    options = dict(build.options)
    options['pretrained_filter_fn'] = functools.partial(_filter_then_fill, options.get('pretrained_filter_fn'))
    model_kwargs = dict(build.model_kwargs)
    if model_kwargs.get('block_fn', Block) is Block:
        model_kwargs['block_fn'] = TokenMixupBlock
    return build_model_with_cfg(
        VisionTransformerTokenMixup, variant or build.variant, pretrained, **options, **model_kwargs, **tokenmixup)


def _is_zoo_model(name: str) -> bool:
    """Whether a registered name (without tag) is one of this package's models."""
    return model_entrypoint(name).__module__.split('.')[0] == __name__.split('.')[0]


def _name_scorenet_classifiers(model: nn.Module) -> nn.Module:
    """Add the model's ScoreNet heads to its pretrained cfg's `classifier` (docs/design.md §3), after the
    base's heads, so that timm drops them all when `num_classes` changes. A features_only wrapper has none."""
    if not isinstance(model, VisionTransformerTokenMixup):
        return model
    cfg = dict(model.pretrained_cfg)
    heads = cfg.get('classifier') or 'head'
    heads = tuple(head for head in ((heads,) if isinstance(heads, str) else heads) if 'scorenet' not in head)
    names = heads + model.scorenet_classifier_names()
    cfg['classifier'] = names[0] if len(names) == 1 else names
    model.pretrained_cfg = model.default_cfg = cfg
    return model


def create_tokenmixup_vit(
        model_name: str,
        pretrained: bool = False,
        *,
        tokenmixup_preset: Optional[str] = None,
        **kwargs: Any,
) -> VisionTransformerTokenMixup:
    """TokenMixup in any timm ViT: `model_name`'s architecture, exactly as timm builds it, plus HTM / VTM.

    `model_name` is a timm name (optionally `name.tag`) whose entrypoint builds timm's `VisionTransformer`
    with pre-norm `Block` blocks and fused-qkv `Attention` (`vit_small_patch8_224`, `vit_medium_patch16_gap_256`,
    `deit_small_patch16_224`, `vit_base_patch16_clip_224`, ...). Anything else is refused with a ValueError
    that says what it has instead: Swin's windowed stages, Eva (`vit_*_rope_reg*`), `vit_relpos_*`,
    post-norm `ResPostBlock` models (`vit_base_patch16_rpn_224`), parallel blocks, distilled two-head
    models (`deit_*_distilled_*`), non-ViT names.

    Args:
        model_name: the timm base; its tag (or `pretrained_cfg`) picks the weights, timm's default tag else.
        pretrained: load the base's timm weights: every weight strictly, the ScoreNet fresh. With a
            different `num_classes` timm drops the head and the ScoreNet heads, as for its own models.
        tokenmixup_preset: a recipe of `models.presets.PRESETS`; None: the declared defaults (no HTM and no
            VTM unless their layers are given, 'mean' saliency and a SeqPool ScoreNet, which suit models with
            and without a CLS token). The paper's ImageNet recipes are 'vit_imagenet_htm' (and _vtm,
            _htm_vtm) for models with a CLS token and 'vit_imagenet_htm_gap' (...) for models without.
        **kwargs: every TokenMixup setting (`htm_layers`, `vtm_layers`, `tau`, ...), over the preset, and
            every argument timm's entrypoint takes (`num_classes`, `img_size`, `drop_path_rate`,
            `pretrained_cfg_overlay`, `features_only`, ...), over the base's architecture arguments.

    Returns:
        A `VisionTransformerTokenMixup` whose eval forward is the base's (bit-identical logits with the
        same weights). `timm.create_model('tokenmixup_vit', base_model=model_name, **kwargs)` builds the
        same model under a registered name; checkpoints and Hub folders record it that way.
    """
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a timm model name such as 'vit_small_patch8_224', got {model_name!r}")
    base, tag = split_model_name_tag(model_name)
    if not is_model(base):
        raise ValueError(f'model_name {model_name!r} is not a registered timm model name (timm.list_models() '
                         'lists them)')
    if _is_zoo_model(base):
        raise ValueError(f'model_name {model_name!r} is a model of this zoo already: build it with '
                         f'timm.create_model({model_name!r}, ...)')
    if tag and kwargs.get('pretrained_cfg') is None:
        kwargs['pretrained_cfg'] = tag
    kwargs['tokenmixup_preset'] = tokenmixup_preset
    return _name_scorenet_classifiers(_build_tokenmixup_vit(base, None, pretrained, kwargs))


def _with_var_keyword(function: Callable) -> inspect.Signature:
    """`function`'s signature with every TokenMixup setting spelled out and its `**kwargs` kept: those go to
    timm's entrypoint, whose architecture defaults differ per base."""
    spelled = tokenmixup_init_signature(function)
    var_keyword = [p for p in inspect.signature(function).parameters.values() if p.kind is p.VAR_KEYWORD]
    return spelled.replace(parameters=[*spelled.parameters.values(), *var_keyword])


create_tokenmixup_vit.__signature__ = _with_var_keyword(create_tokenmixup_vit)


@register_model
def tokenmixup_vit(pretrained: bool = False, base_model: Optional[str] = None, **kwargs) -> VisionTransformerTokenMixup:
    """`create_tokenmixup_vit(base_model, pretrained, **kwargs)` under a registered name: the architecture that
    checkpoint records and Hub config.json files name for TokenMixup in a timm ViT outside the table
    (docs/design.md §5.2), with `base_model` among its model arguments."""
    if base_model is None:
        raise ValueError(f"{ANY_VIT_ARCHITECTURE} needs base_model, the timm ViT to add TokenMixup to, e.g. "
                         f"timm.create_model('{ANY_VIT_ARCHITECTURE}', base_model='vit_small_patch8_224', "
                         'htm_layers=(3,))')
    return create_tokenmixup_vit(base_model, pretrained=pretrained, **kwargs)


ANY_VIT_ARCHITECTURE = tokenmixup_vit.__name__


def tokenmixup_model_args(model_name: str, model_kwargs: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """The registered name and keyword arguments that build `model_name` with `model_kwargs`.

    A timm name that is not this zoo's, given TokenMixup settings or a `tokenmixup_preset`, becomes
    (`'tokenmixup_vit'`, kwargs + `base_model=model_name`): `create_tokenmixup_vit` under its registered
    name. Everything else (this zoo's names, `hf-hub:` / `local-dir:` sources, unknown names, calls
    without TokenMixup arguments) comes back unchanged. train.py and the checkpoint record use it.
    """
    kwargs = dict(model_kwargs)
    wanted = any(kwargs.get(name) is not None for name in (*SETTING_NAMES, 'tokenmixup_preset'))
    if not wanted or ':' in model_name or not is_model(model_name):
        return model_name, kwargs
    if _is_zoo_model(split_model_name_tag(model_name)[0]):
        return model_name, kwargs
    return ANY_VIT_ARCHITECTURE, dict(kwargs, base_model=model_name)


# ---------------------------------------------------------------------------------------------
# the registered variants: one table row per timm base (docs/design.md §5.2, §5.3)

class VariantBase(NamedTuple):
    """A timm ViT registered with `_htm`, `_vtm` and `_htm_vtm` variants.

    name: timm's base name; tag: the default pretrained tag (timm's default tag of the base, except
    `orig_in21k_ft_in1k` for ViT-B/16, the start of the paper's ImageNet runs); recipes: a key of
    `RECIPES`, 'cls' for models with a CLS token, 'gap' for models without; title: for docstrings.
    """
    name: str
    tag: str
    recipes: str
    title: str


# suffix -> preset of each recipe family (docs/design.md §5.3)
RECIPES: Dict[str, Dict[str, str]] = {
    'cls': {'_htm': 'vit_imagenet_htm', '_vtm': 'vit_imagenet_vtm', '_htm_vtm': 'vit_imagenet_htm_vtm'},
    'gap': {'_htm': 'vit_imagenet_htm_gap', '_vtm': 'vit_imagenet_vtm_gap', '_htm_vtm': 'vit_imagenet_htm_vtm_gap'},
}

VARIANT_BASES: Tuple[VariantBase, ...] = (
    VariantBase('vit_tiny_patch16_224', 'augreg_in21k_ft_in1k', 'cls', 'ViT-Ti/16'),
    VariantBase('vit_small_patch16_224', 'augreg_in21k_ft_in1k', 'cls', 'ViT-S/16'),
    VariantBase('vit_base_patch16_224', 'orig_in21k_ft_in1k', 'cls', 'ViT-B/16'),
    VariantBase('vit_base_patch16_384', 'augreg_in21k_ft_in1k', 'cls', 'ViT-B/16 at 384x384'),
    VariantBase('vit_large_patch16_224', 'augreg_in21k_ft_in1k', 'cls', 'ViT-L/16'),
    VariantBase('vit_medium_patch16_reg4_gap_256', 'sbb_in12k_ft_in1k', 'gap',
                'ViT-M/16 with 4 registers, no CLS token, average-pooled'),
    VariantBase('deit_tiny_patch16_224', 'fb_in1k', 'cls', 'DeiT-Ti/16'),
    VariantBase('deit_small_patch16_224', 'fb_in1k', 'cls', 'DeiT-S/16'),
    VariantBase('deit_base_patch16_224', 'fb_in1k', 'cls', 'DeiT-B/16'),
    VariantBase('deit3_small_patch16_224', 'fb_in1k', 'cls', 'DeiT III-S/16'),
    VariantBase('deit3_base_patch16_224', 'fb_in1k', 'cls', 'DeiT III-B/16'),
)
# every base has at least this many blocks, so the presets' block indices are theirs unclamped
_VIT_DEPTH = 12
_METHODS = {'_htm': 'Horizontal TokenMixup', '_vtm': 'Vertical TokenMixup',
            '_htm_vtm': 'Horizontal and Vertical TokenMixup'}
_PAPER_ROWS = {  # the paper's ImageNet rows (Table 2)
    'vit_base_patch16_224_htm': 'paper Table 2: 87.3M parameters, 82.37 top-1',
    'vit_base_patch16_224_vtm': 'paper Table 2: 82.30 top-1',
    'vit_base_patch16_224_htm_vtm': 'paper Table 2: 82.32 top-1',
}


def _timm_cfg(base: str, tag: str, preset: str) -> Dict[str, Any]:
    cfg = asdict(get_pretrained_cfg(f'{base}.{tag}'))
    for key in ('architecture', 'tag'):
        cfg.pop(key, None)
    if cfg.get('num_classes'):
        cfg['classifier'] = preset_classifiers(cfg['classifier'], preset, _VIT_DEPTH)
    cfg['description'] = base_weights_description(f"timm's {base}.{tag}")
    return cfg


# TokenMixup checkpoints published on the Hugging Face Hub (`python -m hub.publish`), by registered name:
#     'vit_base_patch16_224_htm': {'in1k_tokenmixup': dict(hf_hub_id='ORG/NAME')},
# Each becomes the tag `name.tag` after timm's default tag, loaded from the repo's model.safetensors the way
# timm loads its own weights (`hf_hub_id`); the cfg starts from the base's timm cfg and the entry overrides
# it. The variant's TokenMixup defaults must be the settings the checkpoint was trained with
# (`hf-hub:ORG/NAME` applies the repo's config.json for any settings). None are published yet.
PUBLISHED_CFGS: Dict[str, Dict[str, Dict[str, Any]]] = {}


def _variant_cfgs(published: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None) -> Dict[str, Dict[str, Any]]:
    """Every registered `name.tag` cfg (`tagged_cfgs`): timm's default tag of the base, then published tags."""
    published = PUBLISHED_CFGS if published is None else published
    cfgs = {}
    for base in VARIANT_BASES:
        for suffix, preset in RECIPES[base.recipes].items():
            name = base.name + suffix
            timm_cfg = _timm_cfg(base.name, base.tag, preset)
            hub_source = dict(timm_cfg, url='', hf_hub_id=None, custom_load=False, description=None)
            cfgs.update(tagged_cfgs(
                name, {base.tag: timm_cfg}, {},
                {tag: dict(hub_source, **overrides) for tag, overrides in published.get(name, {}).items()}))
    return cfgs


default_cfgs = generate_default_cfgs(_variant_cfgs())


def _variant_entrypoint(base: VariantBase, suffix: str, preset: str) -> Callable[..., VisionTransformerTokenMixup]:
    """The registered entrypoint `{base.name}{suffix}`: timm's base architecture plus `preset`'s settings."""
    name = base.name + suffix

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> VisionTransformerTokenMixup:
        kwargs.setdefault('tokenmixup_preset', preset)
        return _build_tokenmixup_vit(base.name, name, pretrained, kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    row = f' ({_PAPER_ROWS[name]})' if name in _PAPER_ROWS else ''
    entrypoint.__doc__ = (f'{base.title} + {_METHODS[suffix]}{row}: timm\'s {base.name} with the {preset!r} '
                          f'preset; default weights timm\'s {base.name}.{base.tag}.')
    return entrypoint


for _base in VARIANT_BASES:
    for _suffix, _preset in RECIPES[_base.recipes].items():
        _entrypoint = register_model(_variant_entrypoint(_base, _suffix, _preset))
        globals()[_entrypoint.__name__] = _entrypoint  # a module attribute per model name, as in timm's files
del _base, _suffix, _preset, _entrypoint
