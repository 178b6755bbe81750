"""Every registered name passes timm's model contract (timm tests/test_models.py, non-standard models).

timm holds ViT-like models ('vit_*', 'deit*', ...) to a contract of their own: a forward at the cfg's
input size, unchanged by gradient checkpointing; `num_features` / `head_hidden_size` that match what
`forward_features` / `forward_head(pre_logits=True)` return; `reset_classifier(0)` and
`num_classes=0` giving pooled features; cfg `classifier` / `first_conv` naming real weights; a backward
that reaches every parameter; `forward_intermediates` and `features_only=True` feature maps. docs/design.md §3
says these "behave as in timm", so our 65 names (8 CCT bases with their TokenMixup variants, and the
_htm, _vtm and _htm_vtm variants of the 11 timm ViTs of `models.vit_tokenmixup.VARIANT_BASES`) are held
to the same contract here, restated for this zoo. `tokenmixup_vit` (TokenMixup in any other timm ViT)
needs a `base_model` and is tested in tests/test_any_vit.py.

Tests that need the same model share one instance per name (module-scoped fixtures; pytest runs all
tests of one name together); a test that changes a model works on a copy. Only the CCT names below
CCT-14 and the ViT-Ti/16 variants run by default; every larger ViT (ViT-S and up, DeiT, DeiT III, the
register ViT-M) and CCT-14 is marked slow: on two CPU cores they take seconds per forward, and the
ViT-Ti cases already hold the one ViT class they share to the contract.
"""
import copy
import fnmatch
import math
from typing import NamedTuple

import pytest
import timm
import torch

import models  # registers the zoo with timm
from tokenmixup import TokenMixupOutput

CCT_BASES = ('cct_2_3x2', 'cct_4_3x2', 'cct_6_3x1', 'cct_6_3x2', 'cct_7_3x1', 'cct_7_3x2', 'cct_7_7x2_224',
             'cct_14_7x2_224')
VIT_BASES = ('vit_tiny_patch16_224', 'vit_small_patch16_224', 'vit_base_patch16_224', 'vit_base_patch16_384',
             'vit_large_patch16_224', 'vit_medium_patch16_reg4_gap_256', 'deit_tiny_patch16_224',
             'deit_small_patch16_224', 'deit_base_patch16_224', 'deit3_small_patch16_224', 'deit3_base_patch16_224')
EXPECTED_NAMES = sorted(
    [base + suffix for base in CCT_BASES for suffix in ('', '_htm', '_vtm', '_htm_vtm')]
    + [base + suffix for base in VIT_BASES for suffix in ('_htm', '_vtm', '_htm_vtm')])
NAMES = timm.list_models(module=['cct', 'vit_tokenmixup'], exclude_filters=[models.ANY_VIT_ARCHITECTURE])
FAST_NAMES = ('cct_*', 'vit_tiny_*')
SLOW_NAMES = ('cct_14_*',)


def _marked(name: str):
    slow = not any(fnmatch.fnmatch(name, pattern) for pattern in FAST_NAMES) or \
        any(fnmatch.fnmatch(name, pattern) for pattern in SLOW_NAMES)
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


def _input(model: torch.nn.Module, batch_size: int) -> torch.Tensor:
    """A random batch at the model's cfg input size (fixed for every model here)."""
    return torch.randn(batch_size, *model.pretrained_cfg['input_size'])


def _has_scorenet(model: torch.nn.Module) -> bool:
    return any('scorenet' in name for name, _ in model.named_parameters())


class Reference(NamedTuple):
    """A default-built model in eval mode, one input, forward_features(x) and
    forward_head(forward_features(x)) (timm's forward(x)); shared by the tests of one name, never modified."""
    model: torch.nn.Module
    x: torch.Tensor
    logits: torch.Tensor
    features: torch.Tensor


@pytest.fixture(scope='module', params=[_marked(name) for name in NAMES])
def name(request) -> str:
    return request.param


@pytest.fixture(scope='module')
def reference(name: str) -> Reference:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    x = _input(model, batch_size=1)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    return Reference(model, x, logits, features)


def test_the_zoo_registers_65_names():
    """8 CCT bases x {'', _htm, _vtm, _htm_vtm} + 11 ViT bases x {_htm, _vtm, _htm_vtm}."""
    assert sorted(NAMES) == EXPECTED_NAMES
    assert len(NAMES) == 65


def test_model_forward(name, reference):
    """An eval forward at the cfg input size gives (1, num_classes) logits without NaN; gradient
    checkpointing leaves the output unchanged."""
    num_classes = reference.model.pretrained_cfg['num_classes']
    model = copy.deepcopy(reference.model)
    model.set_grad_checkpointing()
    outputs = model(reference.x)  # with autograd on, so that the checkpointed path really runs
    assert outputs.shape == (1, num_classes)
    assert not torch.isnan(outputs).any(), 'output included NaNs'
    assert torch.allclose(outputs, reference.logits, rtol=1e-4, atol=1e-5), 'output changed with checkpointing'


def test_model_default_cfgs_non_std(name, reference):
    """num_classes >= 0, num_features > 0, head_hidden_size > 0; forward_features ends in num_features;
    forward_head(pre_logits=True) gives (B, head_hidden_size); after reset_classifier(0) the forward
    gives pooled features of that shape."""
    model = copy.deepcopy(reference.model)
    assert model.num_classes >= 0
    assert model.num_features > 0
    assert model.head_hidden_size > 0

    assert reference.features.shape[-1] == model.num_features
    with torch.no_grad():
        pre_logits = model.forward_head(reference.features, pre_logits=True)
    assert pre_logits.shape == (1, model.head_hidden_size)

    model.reset_classifier(0)
    assert model.num_classes == 0
    with torch.no_grad():
        outputs = model(reference.x)
    assert outputs.shape == (1, model.head_hidden_size)
    assert outputs.shape == pre_logits.shape


def test_model_created_without_classifier_forwards_pooled_features(name, reference):
    """create_model(name, num_classes=0) builds and its forward gives (B, num_features)."""
    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    assert model.num_classes == 0
    with torch.no_grad():
        outputs = model(reference.x)
    assert outputs.shape == (1, model.num_features)


def test_model_cfg_classifier_and_first_conv_name_weights(name, reference):
    """Every cfg['classifier'] entry (a string or a tuple) and cfg['first_conv'] has '.weight' in the
    state dict: timm drops / adapts exactly these when num_classes / in_chans change."""
    state_dict = reference.model.state_dict()
    cfg = reference.model.pretrained_cfg
    classifiers = cfg['classifier']
    classifiers = (classifiers,) if isinstance(classifiers, str) else classifiers
    assert isinstance(classifiers, (tuple, list)) and classifiers
    for classifier in classifiers:
        assert classifier + '.weight' in state_dict, f'{classifier} not in model params'
    first_convs = cfg['first_conv']
    first_convs = (first_convs,) if isinstance(first_convs, str) else first_convs
    for first_conv in first_convs:
        assert first_conv + '.weight' in state_dict, f'{first_conv} not in model params'


def test_model_backward(name):
    """In train mode with 42 classes and a batch of 2, the backward reaches every parameter: through
    model(x) where there is no ScoreNet, through model(x, labels)'s logits and aux_loss where there is."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=42).train()
    x = _input(model, batch_size=2)
    if _has_scorenet(model):
        out = model(x, torch.randint(0, 42, (2,)))
        assert isinstance(out, TokenMixupOutput)
        logits = out.logits
        (out.logits.mean() + out.aux_loss).backward()
    else:
        logits = model(x)
        logits.mean().backward()

    assert logits.shape == (2, 42)
    assert not torch.isnan(logits).any(), 'output included NaNs'
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f'no gradient for {no_grad}'


def test_model_forward_intermediates(name, reference):
    """forward_intermediates(x, output_fmt='NCHW') returns (final, [one (B, C, H, W) map per level]) with
    the feature_info channels and at most ceil(input / reduction) + 1 rows and columns; the
    intermediates_only call returns the same list and the final output equals forward_features."""
    model = reference.model
    feature_info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    channels, reductions = feature_info.channels(), feature_info.reduction()
    # one level per block (as timm's ViT); timm asks for >= 3 levels, which a 2-block CCT cannot have
    assert len(channels) == len(model.blocks)
    assert len(channels) >= min(3, len(model.blocks))

    with torch.no_grad():
        final, intermediates = model.forward_intermediates(reference.x, output_fmt='NCHW')
        only = model.forward_intermediates(reference.x, output_fmt='NCHW', intermediates_only=True)

    assert len(intermediates) == len(channels)
    height, width = reference.x.shape[-2:]
    for c, r, feature in zip(channels, reductions, intermediates):
        assert feature.ndim == 4 and feature.shape[0] == 1
        assert feature.shape[1] == c
        assert feature.shape[2] <= math.ceil(height / r) + 1
        assert feature.shape[3] <= math.ceil(width / r) + 1
        assert not torch.isnan(feature).any()
    assert len(only) == len(intermediates)
    for a, b in zip(only, intermediates):
        assert torch.equal(a, b)
    assert torch.allclose(final, reference.features)


def test_model_features_only(name, reference):
    """create_model(name, features_only=True) builds a feature extractor whose maps have the expected
    channels (the model's embedding width) and batch size."""
    extractor = timm.create_model(name, pretrained=False, features_only=True).eval()
    channels = extractor.feature_info.channels()
    reductions = extractor.feature_info.reduction()
    assert len(channels) >= 1
    assert all(c == reference.model.num_features for c in channels)
    with torch.no_grad():
        outputs = extractor(reference.x)
    assert len(outputs) == len(channels)
    height, width = reference.x.shape[-2:]
    for c, r, feature in zip(channels, reductions, outputs):
        assert feature.shape[:2] == (1, c)
        assert feature.shape[2] <= math.ceil(height / r) + 1
        assert feature.shape[3] <= math.ceil(width / r) + 1
