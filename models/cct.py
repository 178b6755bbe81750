""" Compact Convolutional Transformers (CCT) with TokenMixup

CCT: `Escaping the Big Data Paradigm with Compact Transformers` (Hassani et al. 2021,
https://arxiv.org/abs/2104.05704). TokenMixup: `TokenMixup: Efficient Attention-guided Token-level
Data Augmentation for Transformers` (Choi, Choi & Kim, NeurIPS 2022, https://arxiv.org/abs/2210.07562),
whose CIFAR experiments use CCT-7/3x1.

This file holds the CCT architecture written timm-style (convolutional tokenizer, post-attention
norm blocks, SeqPool head), its pretrained configs pointing at the official CCT release, a filter that
maps the official checkpoints' key names, and the registered `cct_*` names with their `_htm`, `_vtm`
and `_htm_vtm` variants.
"""
import re
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import Attention, DropPath, Mlp, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
# timm has no public name for this helper of forward_intermediates; tests/test_zoo.py pins what we use of it
from timm.models._features import feature_take_indices

from tokenmixup import TokenMixupOutput
from .tokenmixup_layers import (
    TokenMixupMixin, base_weights_description, fill_scorenet_weights, preset_classifiers, tokenmixup_attention,
    tagged_cfgs, tokenmixup_attention_map, tokenmixup_init_signature)

__all__ = ['CCT', 'CCTBase', 'CCT_BASES']

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


class ConvTokenizer(nn.Module):
    """`num_layers` x [Conv2d(k x k, no bias), ReLU, MaxPool(3, 2, 1)], then flatten to tokens.

    Channels go in_chans -> conv_channels -> ... -> embed_dim. (B, C, H, W) -> (B, N, D).
    """

    def __init__(
            self,
            in_chans: int = 3,
            embed_dim: int = 256,
            kernel_size: int = 3,
            num_layers: int = 1,
            conv_channels: int = 64,
    ) -> None:
        super().__init__()
        self.stride = max(1, kernel_size // 2 - 1)
        self.padding = max(1, kernel_size // 2)
        self.kernel_size = kernel_size
        channels = [in_chans] + [conv_channels] * (num_layers - 1) + [embed_dim]
        self.stages = nn.Sequential(*[
            nn.Sequential(OrderedDict(
                conv=nn.Conv2d(
                    channels[i], channels[i + 1], kernel_size, stride=self.stride, padding=self.padding, bias=False),
                act=nn.ReLU(),
                pool=nn.MaxPool2d(3, stride=2, padding=1),
            ))
            for i in range(num_layers)])

    def feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        """Token grid (rows, cols) for an input of `img_size`."""
        size = list(img_size)
        for _ in self.stages:
            size = [(s + 2 * self.padding - self.kernel_size) // self.stride + 1 for s in size]
            size = [(s + 2 - 3) // 2 + 1 for s in size]
        return size[0], size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x).flatten(2).transpose(1, 2)


def sinusoidal_embedding(num_tokens: int, dim: int) -> torch.Tensor:
    """(1, N, D) fixed sine/cosine positional embedding of the CCT release."""
    position = torch.arange(num_tokens, dtype=torch.float64).unsqueeze(1)
    frequency = 10000.0 ** (-2.0 * torch.div(torch.arange(dim), 2, rounding_mode='floor') / dim)
    angles = position * frequency.to(torch.float64)
    embedding = torch.where(torch.arange(dim) % 2 == 0, angles.sin(), angles.cos())
    return embedding.to(torch.float32).unsqueeze(0)


class SeqPool(nn.Module):
    """Sequence pooling: softmax over tokens of Linear(D, 1), weighted sum. (B, N, D) -> (B, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.attention(x).softmax(dim=1)
        return (weights.transpose(1, 2) @ x).squeeze(1)


class CCTBlock(nn.Module):
    """CCT encoder block: x + attn(pre_norm(x)), then norm1 replaces the stream, then x + mlp(x)."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            mlp_ratio: float = 2.,
            proj_drop: float = 0.,
            attn_drop: float = 0.1,
            drop_path: float = 0.,
    ) -> None:
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=False, attn_drop=attn_drop, proj_drop=proj_drop)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def _finish(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop_path(attn_out))
        return x + self.drop_path(self.mlp(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(x, self.attn(self.pre_norm(x)))

    def forward_with_memory(
            self,
            x: torch.Tensor,
            memory: Optional[torch.Tensor],
            attention_rows: Optional[str],
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The block with its attention also reading `memory` (VTM); returns (x, attention probabilities)."""
        attn_out, attn = tokenmixup_attention(self.attn, self.pre_norm, x, memory, attention_rows)
        return self._finish(x, attn_out), attn

    def attention_map(self, x: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """(B, H, Q, N) self-attention probabilities on x."""
        return tokenmixup_attention_map(self.attn, self.pre_norm, x, cls_only)


class CCT(TokenMixupMixin, nn.Module):
    """Compact Convolutional Transformer with optional Horizontal and Vertical TokenMixup.

    Args:
        img_size: input size; fixed, since the learnable positional embedding fixes the token count.
        in_chans, num_classes: input channels and classes (0 for no classifier).
        global_pool: 'seq' (SeqPool) or '' (no pooling).
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        kernel_size, num_conv_layers, conv_channels: convolutional tokenizer.
        pos_embed: 'learnable' (trunc-normal std 0.2) or 'sine' (fixed).
        drop_rate: dropout before the classifier; pos_drop_rate: after the positional embedding;
        proj_drop_rate: MLP and attention-projection dropout; attn_drop_rate: attention dropout;
        drop_path_rate: stochastic depth, rising linearly over the blocks to this value.
        device, dtype: where and in which dtype to create the weights (timm's keywords; 'meta' builds
            without memory for them).
        tokenmixup_preset: a recipe of `models.presets.PRESETS` (e.g. 'cct_cifar100_htm'), adapted to this
            model; None keeps the declared defaults (no HTM, no VTM).
        **settings: the TokenMixup settings of `tokenmixup.SETTINGS` (htm_layers, vtm_layers, tau, ...),
            over the preset; `inspect.signature(CCT)` lists them with their defaults.
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 32,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'seq',
            embed_dim: int = 256,
            depth: int = 7,
            num_heads: int = 4,
            mlp_ratio: float = 2.,
            kernel_size: int = 3,
            num_conv_layers: int = 1,
            conv_channels: int = 64,
            pos_embed: str = 'learnable',
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.1,
            drop_path_rate: float = 0.1,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
            tokenmixup_preset: Optional[str] = None,
            **settings: Any,
    ) -> None:
        super().__init__()
        if global_pool not in ('seq', ''):
            raise ValueError(f"global_pool must be 'seq' or '', got {global_pool!r}")
        if pos_embed not in ('learnable', 'sine'):
            raise ValueError(f"pos_embed must be 'learnable' or 'sine', got {pos_embed!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.grad_checkpointing = False
        self.img_size = to_2tuple(img_size)

        with torch.device(device) if device is not None else nullcontext():  # e.g. 'meta': no memory for weights
            self.tokenizer = ConvTokenizer(in_chans, embed_dim, kernel_size, num_conv_layers, conv_channels)
            self.feat_size = self.tokenizer.feat_size(self.img_size)
            num_tokens = self.feat_size[0] * self.feat_size[1]
            if pos_embed == 'learnable':
                self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
            else:
                self.register_buffer('pos_embed', sinusoidal_embedding(num_tokens, embed_dim), persistent=False)
            self.pos_drop = nn.Dropout(pos_drop_rate)

            drop_path_rates = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
            self.blocks = nn.Sequential(*[
                CCTBlock(embed_dim, num_heads, mlp_ratio, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                         drop_path=drop_path_rates[i])
                for i in range(depth)])
            reduction = self.img_size[0] // self.feat_size[0]
            self.feature_info = [
                dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=reduction) for i in range(depth)]
            self.norm = nn.LayerNorm(embed_dim)
            self.seq_pool = SeqPool(embed_dim)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

            self.init_tokenmixup(
                settings, tokenmixup_preset, embed_dim=embed_dim, num_classes=num_classes, num_tokens=num_tokens,
                has_class_token=False)
            self.apply(self._init_weights)
            if isinstance(self.pos_embed, nn.Parameter):
                trunc_normal_(self.pos_embed, std=0.2)
        if dtype is not None:
            self.to(dtype)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'pos_embed'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^tokenizer|^pos_embed',
            blocks=[(r'^blocks\.(\d+)', None), (r'^htm\.(\d+)', None), (r'^norm', (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head (and every HTM ScoreNet's classifier) for `num_classes` classes."""
        if global_pool is not None:
            if global_pool not in ('seq', ''):
                raise ValueError(f"global_pool must be 'seq' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        reference = self.seq_pool.attention.weight  # survives prune_intermediate_layers, unlike the norm
        device, dtype = reference.device, reference.dtype
        self.head = nn.Linear(self.embed_dim, num_classes, device=device, dtype=dtype) if num_classes > 0 \
            else nn.Identity()
        self.reset_scorenet_classifiers(num_classes)

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, D) tokens entering the first block."""
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.img_size:
            height, width = self.img_size
            got = 'x'.join(str(size) for size in x.shape[-2:]) if x.ndim == 4 else f'shape {tuple(x.shape)}'
            raise ValueError(
                f'this CCT was built for {height}x{width} images (its positional embedding fixes the token count), '
                f'got {got}; build one for your size with timm.create_model(name, img_size=...)')
        return self.pos_drop(self.tokenizer(x) + self.pos_embed)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D) normalised tokens (VTM is active in training)."""
        return self.norm(self.forward_blocks(self.embed_tokens(x)).x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of chosen blocks, as timm's ViT returns them (plain blocks, no TokenMixup)."""
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x = self.embed_tokens(x)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for index, block in enumerate(blocks):
            x = block(x)
            if index in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        if output_fmt == 'NCHW':
            rows, cols = self.feat_size
            intermediates = [y.reshape(y.shape[0], rows, cols, -1).permute(0, 3, 1, 2).contiguous()
                             for y in intermediates]
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the blocks after the last wanted intermediate (and optionally the norm and head)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, D) -> (B, num_classes) logits, or the pooled (B, D) features with pre_logits."""
        if self.global_pool == 'seq':
            x = self.seq_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(
            self,
            x: torch.Tensor,
            target: Optional[torch.Tensor] = None,
            return_mix: bool = False,
    ) -> Union[torch.Tensor, TokenMixupOutput]:
        """Logits for `model(x)`; `TokenMixupOutput` for `model(x, target)` (docs/design.md §3), whose
        HTM statistics also carry each layer's mask and partners with `return_mix`."""
        if target is None:
            return self.forward_head(self.forward_features(x))
        return self.forward_tokenmixup(x, target, return_mix=return_mix)


CCT.__init__.__signature__ = tokenmixup_init_signature(CCT.__init__)


# Official CCT key names -> ours. The official TokenMixup fork's ScoreNet names are mapped too.
_OFFICIAL_KEY_RULES = (
    (r'^tokenizer\.conv_layers\.(\d+)\.0\.', r'tokenizer.stages.\1.conv.'),
    (r'^classifier\.positional_emb$', 'pos_embed'),
    (r'^classifier\.attention_pool\.', 'seq_pool.attention.'),
    (r'^classifier\.blocks\.(\d+)\.self_attn\.', r'blocks.\1.attn.'),
    (r'^classifier\.blocks\.(\d+)\.linear1\.', r'blocks.\1.mlp.fc1.'),
    (r'^classifier\.blocks\.(\d+)\.linear2\.', r'blocks.\1.mlp.fc2.'),
    (r'^classifier\.blocks\.(\d+)\.small_h_attention_pool\.', r'htm.\1.scorenet.attn_pool.'),
    (r'^classifier\.blocks\.(\d+)\.small_h_fc\.', r'htm.\1.scorenet.head.'),
    (r'^classifier\.blocks\.', 'blocks.'),
    (r'^classifier\.norm\.', 'norm.'),
    (r'^classifier\.fc\.', 'head.'),
)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: CCT) -> Dict[str, torch.Tensor]:
    """Map an official CCT (or TokenMixup fork) checkpoint to our key names; ours pass unchanged.

    A sine-embedding model keeps its own fixed embedding; a model with HTM gets fresh ScoreNet weights
    where the checkpoint has none, so everything else loads strictly.
    """
    for wrapper in ('state_dict', 'model'):
        if wrapper in state_dict and isinstance(state_dict[wrapper], dict):
            state_dict = state_dict[wrapper]
    mapped = {}
    for key, value in state_dict.items():
        for pattern, replacement in _OFFICIAL_KEY_RULES:
            new_key = re.sub(pattern, replacement, key)
            if new_key != key:
                key = new_key
                break
        mapped[key] = value
    if not isinstance(model.pos_embed, nn.Parameter):
        mapped.pop('pos_embed', None)
    return fill_scorenet_weights(mapped, model)


def _create_cct(variant: str, pretrained: bool = False, **kwargs) -> CCT:
    out_indices = kwargs.pop('out_indices', min(3, kwargs.get('depth', 7)))  # the last (up to) 3 blocks
    return build_model_with_cfg(
        CCT, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# pretrained configs

_CCT_RELEASE = 'http://ix.cs.uoregon.edu/~alih/compact-transformers/checkpoints/pretrained/'

# the TokenMixup preset of each variant suffix (docs/design.md §5.3): the CIFAR-100 recipe of CCT-7/3x1
_VARIANT_PRESETS = {'': None, '_htm': 'cct_cifar100_htm', '_vtm': 'cct_cifar100_vtm',
                    '_htm_vtm': 'cct_cifar100_htm_vtm'}


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url, 'num_classes': 100, 'input_size': (3, 32, 32), 'pool_size': None, 'crop_pct': 1.0,
        'interpolation': 'bicubic', 'fixed_input_size': True, 'mean': CIFAR100_MEAN, 'std': CIFAR100_STD,
        'first_conv': 'tokenizer.stages.0.conv', 'classifier': 'head', 'license': 'apache-2.0',
        **kwargs,
    }


def _cfg_224(url: str = '', **kwargs) -> Dict[str, Any]:
    return _cfg(url, **dict(dict(
        num_classes=1000, input_size=(3, 224, 224), crop_pct=0.875, mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD), **kwargs))


# weights trained here and shipped inside the package (models/weights/, docs/design.md §5.4): `name.tag` ->
# its safetensors file, loaded through timm's `file` source, so `pretrained=True` needs no network
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'


def shipped_weights_file(name: str) -> str:
    """The packaged safetensors file of a shipped `name.tag`."""
    return str(SHIPPED_WEIGHTS_DIR / f'{name}.safetensors')


_DIGITS = dict(num_classes=10)  # the embedded digits set, with the eval preprocessing the quickstart trains with
# Fashion-MNIST as configs/fashion_mnist_cct_2_3x2.yaml trains it: greyscale read as RGB, normalised by the training
# set's pixel mean and std (those of tokenmixup_tools.idx_datasets), 32x32 bicubic, no crop
_FASHION_MNIST = dict(num_classes=10, mean=(0.2860,) * 3, std=(0.3530,) * 3)

class CCTBase(NamedTuple):
    """A CCT architecture registered plain and with `_htm`, `_vtm` and `_htm_vtm` variants.

    name: the registered base name; title: for docstrings; args: its `CCT` keyword arguments (depth among them);
    make_cfg: the builder of its pretrained cfgs; tags: tag -> (where the weights come from, cfg overrides), the
    first being the default tag of the base and of every variant (which loads them with a fresh ScoreNet).
    """
    name: str
    title: str
    args: Mapping[str, Any]
    make_cfg: Callable[..., Dict[str, Any]]
    tags: Mapping[str, Tuple[str, Dict[str, Any]]]

    @property
    def depth(self) -> int:
        return int(self.args['depth'])

    def cfg(self, classifier: Any, overrides: Dict[str, Any]) -> Dict[str, Any]:
        """A pretrained cfg of this base or of a variant of it, whose heads `classifier` names."""
        return self.make_cfg(**dict(overrides, classifier=classifier))


def _cct_args(embed_dim: int, depth: int, kernel_size: int, num_conv_layers: int, **kwargs: Any) -> Dict[str, Any]:
    """The CCT sizes: D 128 with 2 heads and MLP ratio 1 (CCT-2, -4), 256 with 4 and 2 (CCT-6, -7), 384 with 6 and 3
    (CCT-14)."""
    heads, mlp_ratio = {128: (2, 1.), 256: (4, 2.), 384: (6, 3.)}[embed_dim]
    return dict(kwargs, embed_dim=embed_dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
                kernel_size=kernel_size, num_conv_layers=num_conv_layers)


CCT_BASES: Tuple[CCTBase, ...] = (
    CCTBase('cct_2_3x2', 'CCT-2/3x2, 32x32', _cct_args(128, 2, 3, 2), _cfg, {
        'digits': ('the shipped cct_2_3x2.digits', dict(_DIGITS, file=shipped_weights_file('cct_2_3x2.digits'))),
        'fashion_mnist': ('the shipped cct_2_3x2.fashion_mnist',
                          dict(_FASHION_MNIST, file=shipped_weights_file('cct_2_3x2.fashion_mnist'))),
    }),
    CCTBase('cct_4_3x2', 'CCT-4/3x2, 32x32', _cct_args(128, 4, 3, 2), _cfg, {}),
    CCTBase('cct_6_3x1', 'CCT-6/3x1, 32x32', _cct_args(256, 6, 3, 1), _cfg, {}),
    CCTBase('cct_6_3x2', 'CCT-6/3x2, 32x32', _cct_args(256, 6, 3, 2), _cfg, {}),
    CCTBase('cct_7_3x1', 'CCT-7/3x1, 32x32 (the CIFAR model of the TokenMixup paper, Table 1)',
            _cct_args(256, 7, 3, 1), _cfg, {
                'c100_300e': ('the official CCT release cct_7_3x1.c100_300e',
                              dict(url=_CCT_RELEASE + 'cct_7_3x1_32_cifar100_300epochs.pth')),
                'c10_300e': ('the official CCT release cct_7_3x1.c10_300e',
                             dict(url=_CCT_RELEASE + 'cct_7_3x1_32_cifar10_300epochs.pth', num_classes=10,
                                  mean=CIFAR10_MEAN, std=CIFAR10_STD)),
            }),
    CCTBase('cct_7_3x2', 'CCT-7/3x2, 32x32', _cct_args(256, 7, 3, 2), _cfg, {}),
    CCTBase('cct_7_7x2_224', 'CCT-7/7x2, 224x224', _cct_args(256, 7, 7, 2, img_size=224), _cfg_224, {}),
    CCTBase('cct_14_7x2_224', 'CCT-14/7x2, 224x224 (ImageNet)', _cct_args(384, 14, 7, 2, img_size=224), _cfg_224, {
        'in1k': ('the official CCT release cct_14_7x2_224.in1k',
                 dict(url=_CCT_RELEASE + 'cct_14_7x2_224_imagenet.pth')),
    }),
)

# TokenMixup weights trained here and shipped with the package, by registered name: they replace the tag of the
# same name that the variant would otherwise take from its base (with a fresh ScoreNet). Each file has a JSON
# record beside it (the train.py command, commit, seed and measured top-1), written by `python -m hub.ship`.
SHIPPED_CFGS: Dict[str, Dict[str, Dict[str, Any]]] = {
    'cct_2_3x2_htm_vtm': {'digits': dict(_DIGITS, file=shipped_weights_file('cct_2_3x2_htm_vtm.digits'))},
    'cct_2_3x2_vtm': {'fashion_mnist': dict(_FASHION_MNIST, file=shipped_weights_file('cct_2_3x2_vtm.fashion_mnist'))},
}


# TokenMixup checkpoints published on the Hugging Face Hub (`python -m hub.publish`), by registered name:
#     'cct_7_3x1_htm': {'c100_tokenmixup': dict(hf_hub_id='ORG/NAME', num_classes=100)},
# Each becomes the tag `name.tag`, loaded from the repo's model.safetensors the way timm loads its own
# weights (`hf_hub_id`); the cfg overrides the variant's (num_classes, input_size, mean, std, ...), and the
# variant's TokenMixup defaults must be the settings the checkpoint was trained with (`hf-hub:ORG/NAME`
# applies the repo's config.json for any settings). They come after the base's tags, which stay the
# default; on a name without any a published tag becomes the default. None are published yet.
PUBLISHED_CFGS: Dict[str, Dict[str, Dict[str, Any]]] = {}


def _variant_cfgs(
        published: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None,
        shipped: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None,
) -> Dict[str, Dict[str, Any]]:
    """Every registered `name.tag` cfg (`tagged_cfgs`): the base's tags, shipped TokenMixup weights, published tags;
    a name without any gets one untagged cfg."""
    published = PUBLISHED_CFGS if published is None else published
    shipped = SHIPPED_CFGS if shipped is None else shipped
    cfgs = {}
    for base in CCT_BASES:
        for suffix, preset in _VARIANT_PRESETS.items():
            name = base.name + suffix
            classifier = preset_classifiers('head', preset, base.depth)
            inherited = {
                tag: base.cfg(classifier, dict(overrides, description=base_weights_description(source)) if suffix
                              else overrides)
                for tag, (source, overrides) in base.tags.items()}
            tagged = tagged_cfgs(
                name, inherited,
                {tag: base.cfg(classifier, overrides) for tag, overrides in shipped.get(name, {}).items()},
                {tag: base.cfg(classifier, overrides) for tag, overrides in published.get(name, {}).items()})
            cfgs.update(tagged or {name: base.cfg(classifier, {})})
    return cfgs


default_cfgs = generate_default_cfgs(_variant_cfgs())


# ---------------------------------------------------------------------------------------------
# entrypoints: one per base and variant suffix, generated from CCT_BASES (docs/design.md §5.3)

_METHODS = {'': '', '_htm': ' + Horizontal TokenMixup', '_vtm': ' + Vertical TokenMixup',
            '_htm_vtm': ' + Horizontal and Vertical TokenMixup'}


def _cct_entrypoint(base: CCTBase, suffix: str, preset: Optional[str]) -> Callable[..., CCT]:
    """The registered entrypoint `{base.name}{suffix}`: the base's architecture with `preset`'s settings."""
    name = base.name + suffix

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> CCT:
        model_args = dict(base.args, tokenmixup_preset=preset) if preset else dict(base.args)
        return _create_cct(name, pretrained=pretrained, **dict(model_args, **kwargs))

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f'{base.title}{_METHODS[suffix]}' + (f' (the {preset!r} preset).' if preset else '.')
    return entrypoint


for _base in CCT_BASES:
    for _suffix, _preset in _VARIANT_PRESETS.items():
        _entrypoint = register_model(_cct_entrypoint(_base, _suffix, _preset))
        globals()[_entrypoint.__name__] = _entrypoint  # a module attribute per model name, as in timm's files
del _base, _suffix, _preset, _entrypoint
