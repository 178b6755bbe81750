"""The model zoo: CCT family, ViT variants, TokenMixup defaults and the model protocol (docs/design.md §2.3, §3, §5).

Small models (cct_2_3x2, cct_4_3x2, ViT-Ti) carry the behavioural tests; the checks that must hold
for every name (eval parity with the base model) run over all 41, the large ones marked slow.
"""
import copy
import fnmatch
import functools
import math
import re

import pytest
import timm
import torch
import torch.nn.functional as F

from conftest import variant_base_name
from models.cct import checkpoint_filter_fn as cct_checkpoint_filter_fn
from tokenmixup import HTMStatistics, TokenMixupOutput
from tokenmixup.settings import SETTING_NAMES

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

CCT_DEPTHS = {
    'cct_2_3x2': 2, 'cct_4_3x2': 4, 'cct_6_3x1': 6, 'cct_6_3x2': 6, 'cct_7_3x1': 7, 'cct_7_3x2': 7,
    'cct_7_7x2_224': 7, 'cct_14_7x2_224': 14,
}
VIT_BASES = ('vit_tiny_patch16_224', 'vit_small_patch16_224', 'vit_base_patch16_224')
CCT_NAMES = [base + suffix for base in CCT_DEPTHS for suffix in ('', '_htm', '_vtm', '_htm_vtm')]
VIT_NAMES = [base + suffix for base in VIT_BASES for suffix in ('_htm', '_vtm', '_htm_vtm')]
ALL_NAMES = CCT_NAMES + VIT_NAMES
SLOW_NAMES = ('vit_small_*', 'vit_base_*', 'cct_14_*')


def _marked(name: str):
    slow = any(fnmatch.fnmatch(name, pattern) for pattern in SLOW_NAMES)
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _on_meta(name: str, **kwargs) -> torch.nn.Module:
    """A ViT built without memory for its weights: for counting parameters and reading settings."""
    with torch.device('meta'):
        return timm.create_model(name, **kwargs)


def _images(batch_size: int, size: int = 32) -> torch.Tensor:
    return torch.randn(batch_size, 3, size, size)


def _no_dropout(name: str, **kwargs) -> torch.nn.Module:
    """A model whose train mode is deterministic (no attention dropout, no stochastic depth)."""
    return timm.create_model(name, drop_path_rate=0., attn_drop_rate=0., **kwargs)


# ---------------------------------------------------------------------------------------------
# parameter counts (docs/design.md §5.1, §5.2)

def test_cct_7_3x1_has_3_783_269_parameters_with_100_classes():
    assert _num_params(timm.create_model('cct_7_3x1', num_classes=100)) == 3_783_269


def test_cct_7_3x1_htm_has_the_papers_3_81m_parameters():
    """SeqPool 257 + Linear 25,700 on top of CCT-7/3x1: 3,809,226 (TokenMixup paper Table 1: 3.81M)."""
    assert _num_params(timm.create_model('cct_7_3x1_htm', num_classes=100)) == 3_809_226


def test_vtm_adds_no_parameters():
    """VTM attends with the block's own weights (Eq. 13): cct_7_3x1_vtm has exactly cct_7_3x1's parameters."""
    assert _num_params(timm.create_model('cct_7_3x1_vtm', num_classes=100)) == \
        _num_params(timm.create_model('cct_7_3x1', num_classes=100))


def test_cct_2_3x2_has_283_723_parameters_with_10_classes():
    assert _num_params(timm.create_model('cct_2_3x2', num_classes=10)) == 283_723


def test_vit_base_htm_has_timms_vit_base_parameters_plus_769_000():
    """86,567,656 + 769,000 = 87,336,656 (paper Table 2: 87.3M): the ScoreNet is one Linear(768, 1000)."""
    base = _num_params(_on_meta('vit_base_patch16_224'))
    assert base == 86_567_656
    assert _num_params(_on_meta('vit_base_patch16_224_htm', num_classes=1000)) == base + 769_000 == 87_336_656


# ---------------------------------------------------------------------------------------------
# CCT architecture (docs/design.md §5.1)

@pytest.mark.parametrize('name, size, num_tokens, dim', [
    ('cct_7_3x1', 32, 256, 256),
    ('cct_2_3x2', 32, 64, 128),
    ('cct_7_7x2_224', 224, 196, 256),
])
def test_cct_tokenizer_gives_the_official_token_count(name, size, num_tokens, dim):
    """32x32 with 3x1 gives 256 tokens, 3x2 gives 64, and 224x224 with 7x2 gives 196."""
    model = timm.create_model(name).eval()
    with torch.no_grad():
        features = model.forward_features(_images(1, size))
    assert features.shape == (1, num_tokens, dim)


def test_cct_sine_pos_embed_is_a_fixed_non_persistent_buffer():
    """pos_embed='sine' is fixed: not a parameter, not saved in the state dict (it is rebuilt)."""
    model = timm.create_model('cct_2_3x2', pos_embed='sine')
    assert 'pos_embed' not in dict(model.named_parameters())
    assert 'pos_embed' in dict(model.named_buffers())
    assert 'pos_embed' not in model.state_dict()
    assert not model.pos_embed.requires_grad


def test_cct_sine_pos_embed_is_sin_cos_of_position_over_10000_power():
    """PE[p, i] = sin(p / 10000^(2 (i // 2) / D)) on even channels i, cos(...) on odd channels."""
    model = timm.create_model('cct_2_3x2', pos_embed='sine')
    num_tokens, dim = 64, 128
    expected = torch.empty(num_tokens, dim, dtype=torch.float64)
    for p in range(num_tokens):
        for i in range(dim):
            angle = p / 10000 ** (2 * (i // 2) / dim)
            expected[p, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    assert model.pos_embed.shape == (1, num_tokens, dim)
    # angles reach 63 rad, so float32 angles (as in the official code) are exact to a few 1e-6 only
    torch.testing.assert_close(model.pos_embed[0].double(), expected, rtol=0, atol=1e-5)


def test_cct_learnable_pos_embed_is_a_parameter():
    model = timm.create_model('cct_2_3x2')
    assert isinstance(model.pos_embed, torch.nn.Parameter)
    assert 'pos_embed' in model.state_dict()


def test_cct_7_3x1_default_tag_is_the_cifar100_release():
    """cct_7_3x1's default weights `.c100_300e`: 100 classes, CIFAR-100 mean/std."""
    cfg = timm.create_model('cct_7_3x1').pretrained_cfg
    assert cfg['tag'] == 'c100_300e'
    assert cfg['num_classes'] == 100
    assert cfg['url'].endswith('cct_7_3x1_32_cifar100_300epochs.pth')
    assert tuple(cfg['mean']) == CIFAR100_MEAN and tuple(cfg['std']) == CIFAR100_STD


def test_cct_7_3x1_c10_tag_is_the_cifar10_release():
    """`.c10_300e`: 10 classes, CIFAR-10 mean/std 0.4914/0.4822/0.4465, 0.2470/0.2435/0.2616."""
    model = timm.create_model('cct_7_3x1.c10_300e')
    cfg = model.pretrained_cfg
    assert model.num_classes == cfg['num_classes'] == 10
    assert cfg['url'].endswith('cct_7_3x1_32_cifar10_300epochs.pth')
    assert tuple(cfg['mean']) == CIFAR10_MEAN and tuple(cfg['std']) == CIFAR10_STD


def test_cct_14_7x2_224_default_tag_is_the_imagenet_release():
    cfg = timm.models.get_pretrained_cfg('cct_14_7x2_224')
    assert cfg.tag == 'in1k'
    assert cfg.url.endswith('cct_14_7x2_224_imagenet.pth')


@pytest.mark.parametrize('name', CCT_NAMES)
def test_cct_default_cfg_has_fixed_input_size_and_dataset_normalisation(name):
    """Every CCT name has a default cfg with fixed_input_size (the positional embedding fixes the token
    count); 224 models use ImageNet mean/std, 32x32 models CIFAR statistics at 32x32."""
    cfg = timm.models.get_pretrained_cfg(name)
    assert cfg.fixed_input_size is True
    assert cfg.first_conv == 'tokenizer.stages.0.conv'
    if '_224' in name:
        assert cfg.input_size == (3, 224, 224)
        assert tuple(cfg.mean) == IMAGENET_MEAN and tuple(cfg.std) == IMAGENET_STD
    else:
        assert cfg.input_size == (3, 32, 32)
        assert (tuple(cfg.mean), tuple(cfg.std)) in ((CIFAR100_MEAN, CIFAR100_STD), (CIFAR10_MEAN, CIFAR10_STD))


@pytest.mark.parametrize('name', [n for n in CCT_NAMES if '_224' not in n])
def test_cct_32x32_default_cfg_uses_cifar100_mean_std(name):
    """docs/design.md §5.1: mean/std are CIFAR-100's (0.5071/0.4867/0.4408, 0.2675/0.2565/0.2761) for the 32x32
    models; only the `.c10_300e` weights name CIFAR-10's."""
    cfg = timm.models.get_pretrained_cfg(name)
    assert tuple(cfg.mean) == CIFAR100_MEAN and tuple(cfg.std) == CIFAR100_STD


# ---------------------------------------------------------------------------------------------
# TokenMixup defaults (docs/design.md §5.3), read from model.tokenmixup_cfg

def test_cct_htm_defaults_follow_the_cifar100_recipe():
    """cct_*_htm: HTM in front of block 2, tau 2.0 (CE), rho 0.005, SeqPool ScoreNet, lambda 0.001,
    not detached, mean saliency."""
    cfg = timm.create_model('cct_7_3x1_htm').tokenmixup_cfg
    assert cfg.htm_layers == (2,)
    assert cfg.vtm_layers == ()
    assert (cfg.tau, cfg.rho, cfg.scorenet_lambda) == (2.0, 0.005, 0.001)
    assert cfg.scorenet_pool == 'attn'
    assert cfg.scorenet_detach is False
    assert cfg.saliency == 'mean'


def test_cct_vtm_defaults_to_block_2_with_kappa_80_at_256_tokens():
    cfg = timm.create_model('cct_7_3x1_vtm').tokenmixup_cfg
    assert cfg.vtm_layers == (2,) and cfg.htm_layers == ()
    assert cfg.kappa == 80
    assert cfg.saliency == 'mean'


def test_cct_vtm_kappa_scales_with_tokens_20_at_64():
    """kappa = round(80 * T / 256): 20 for the 64 tokens of a 3x2 tokenizer."""
    assert timm.create_model('cct_7_3x2_vtm').tokenmixup_cfg.kappa == 20


def test_cct_htm_vtm_defaults_htm_block_3_vtm_block_2_kappa_3():
    cfg = timm.create_model('cct_7_3x1_htm_vtm').tokenmixup_cfg
    assert cfg.htm_layers == (3,)
    assert cfg.vtm_layers == (2,)
    assert cfg.kappa == 3
    assert (cfg.tau, cfg.rho, cfg.scorenet_lambda, cfg.scorenet_pool) == (2.0, 0.005, 0.001, 'attn')


def test_shallow_cct_clamps_default_blocks_to_depth_minus_1():
    """cct_2_3x2_htm_vtm: default blocks 3 and 2 become min(b, 1), so HTM and VTM share block 1."""
    cfg = timm.create_model('cct_2_3x2_htm_vtm').tokenmixup_cfg
    assert cfg.htm_layers == (1,)
    assert cfg.vtm_layers == (1,)


@pytest.mark.parametrize('base', VIT_BASES)
def test_vit_htm_defaults_follow_the_imagenet_recipe(base):
    """vit_*_htm: HTM at block 3, tau 1.0, rho 0.01, CLS-pooled detached ScoreNet with lambda 1.0,
    CLS saliency."""
    cfg = _on_meta(base + '_htm').tokenmixup_cfg
    assert cfg.htm_layers == (3,) and cfg.vtm_layers == ()
    assert (cfg.tau, cfg.rho, cfg.scorenet_lambda) == (1.0, 0.01, 1.0)
    assert cfg.scorenet_pool == 'cls'
    assert cfg.scorenet_detach is True
    assert cfg.saliency == 'cls'


@pytest.mark.parametrize('base', VIT_BASES)
def test_vit_vtm_defaults_to_block_3_with_kappa_3(base):
    cfg = _on_meta(base + '_vtm').tokenmixup_cfg
    assert cfg.vtm_layers == (3,) and cfg.htm_layers == ()
    assert cfg.kappa == 3
    assert cfg.saliency == 'cls'


@pytest.mark.parametrize('base', VIT_BASES)
def test_vit_htm_vtm_defaults_htm_block_3_vtm_block_4_kappa_3(base):
    cfg = _on_meta(base + '_htm_vtm').tokenmixup_cfg
    assert cfg.htm_layers == (3,)
    assert cfg.vtm_layers == (4,)
    assert cfg.kappa == 3
    assert (cfg.tau, cfg.rho, cfg.scorenet_lambda, cfg.scorenet_pool) == (1.0, 0.01, 1.0, 'cls')


# every TokenMixup setting, a non-default value for it, and the model to give it to
SETTINGS = {
    'htm_layers': ('cct_4_3x2', (1, 3)),
    'vtm_layers': ('cct_4_3x2', (1, 3)),
    'tau': ('cct_4_3x2', 0.5),
    'rho': ('cct_4_3x2', 0.02),
    'kappa': ('cct_4_3x2', 7),
    'scorenet_lambda': ('cct_4_3x2', 0.25),
    'scorenet_pool': ('cct_4_3x2', 'avg'),
    'scorenet_detach': ('cct_4_3x2', True),
    'saliency': ('vit_tiny_patch16_224_htm', 'mean'),
    'vtm_detach': ('cct_4_3x2', True),
    'mask_reference': ('cct_4_3x2', 'first'),
    'difficulty_gating': ('cct_4_3x2', False),
    'pairing': ('cct_4_3x2', 'random'),
    'token_selection': ('cct_4_3x2', 'random'),
    'label_mixing': ('cct_4_3x2', 'count'),
    'mixing': ('cct_4_3x2', 'manifold'),
    'manifold_alpha': ('cct_4_3x2', 0.5),
}


def test_settings_table_covers_every_tokenmixup_kwarg():
    assert set(SETTINGS) == set(SETTING_NAMES)


@pytest.mark.parametrize('setting', sorted(SETTINGS))
def test_every_setting_is_a_create_model_kwarg(setting):
    """docs/design.md §5.3: every default is a keyword argument of timm.create_model."""
    name, value = SETTINGS[setting]
    kwargs = {setting: value}
    if setting not in ('htm_layers', 'vtm_layers'):
        kwargs.setdefault('htm_layers', (1,))  # so that the HTM settings have a module to reach
    model = timm.create_model(name, **kwargs)
    assert getattr(model.tokenmixup_cfg, setting) == value


def test_htm_kwargs_reach_the_htm_module():
    """create_model('cct_7_3x1', htm_layers=(1,), tau=0.5) builds HTM in front of block 1 with tau 0.5."""
    model = timm.create_model('cct_7_3x1', htm_layers=(1,), tau=0.5, rho=0.02, scorenet_lambda=0.25)
    assert list(model.htm.keys()) == ['1']
    config = model.htm['1'].config
    assert (config.tau, config.rho, config.scorenet_lambda) == (0.5, 0.02, 0.25)
    assert any(name.startswith('htm.1.scorenet.') for name, _ in model.named_parameters())


def test_empty_htm_layers_disables_htm():
    """htm_layers=() turns a _htm variant into its base: no HTM module, no ScoreNet parameter."""
    model = timm.create_model('cct_7_3x1_htm', htm_layers=())
    assert model.tokenmixup_cfg.htm_layers == ()
    assert len(model.htm) == 0
    assert not [name for name, _ in model.named_parameters() if 'scorenet' in name]


def test_empty_vtm_layers_disables_vtm():
    """vtm_layers=() makes train mode plain: the train-mode output equals the base model's."""
    torch.manual_seed(0)
    model = _no_dropout('cct_2_3x2_vtm', vtm_layers=()).train()
    base = _no_dropout('cct_2_3x2').train()
    base.load_state_dict(model.state_dict())
    x = _images(2)
    with torch.no_grad():
        assert torch.equal(model(x), base(x))


# ---------------------------------------------------------------------------------------------
# validation at construction (docs/design.md §5.3): ValueError naming the argument

@pytest.mark.parametrize('name, kwargs, argument', [
    ('cct_2_3x2', dict(htm_layers=(2,)), 'htm_layers'),          # outside the 2 blocks
    ('cct_2_3x2', dict(htm_layers=(-1,)), 'htm_layers'),
    ('cct_2_3x2', dict(vtm_layers=(2,)), 'vtm_layers'),
    ('vit_tiny_patch16_224_vtm', dict(vtm_layers=(12,)), 'vtm_layers'),
    ('cct_2_3x2', dict(vtm_layers=(0,)), 'vtm_layers'),          # VTM needs an earlier block
    ('cct_4_3x2', dict(htm_layers=(1, 1)), 'htm_layers'),        # duplicated within one list
    ('cct_4_3x2', dict(vtm_layers=(2, 3, 2)), 'vtm_layers'),
    ('cct_2_3x2', dict(htm_layers=2), 'htm_layers'),             # not a tuple
    ('cct_2_3x2', dict(tau=-1.0), 'tau'),
    ('cct_2_3x2', dict(rho=-0.01), 'rho'),
    ('cct_2_3x2', dict(scorenet_lambda=-0.001), 'scorenet_lambda'),
    ('cct_2_3x2', dict(kappa=0), 'kappa'),
    ('cct_2_3x2', dict(kappa=65), 'kappa'),                       # T = 64
    ('vit_tiny_patch16_224_vtm', dict(kappa=197), 'kappa'),       # T = 196 (the CLS token is not mixable)
    ('cct_2_3x2', dict(scorenet_pool='max'), 'scorenet_pool'),
    ('cct_2_3x2', dict(saliency='max'), 'saliency'),
    ('cct_2_3x2', dict(mask_reference='last'), 'mask_reference'),
    ('cct_2_3x2', dict(saliency='cls'), 'saliency'),              # CCT has no CLS token
    ('cct_2_3x2', dict(scorenet_pool='cls'), 'scorenet_pool'),
    ('cct_2_3x2', dict(vtm_detach=1), 'vtm_detach'),
    ('cct_2_3x2', dict(vtm_detach='yes'), 'vtm_detach'),
])
def test_invalid_setting_raises_value_error_naming_the_argument(name, kwargs, argument):
    with pytest.raises(ValueError, match=rf'\b{re.escape(argument)}\b'):
        timm.create_model(name, **kwargs)


@pytest.mark.parametrize('name, kappa', [('cct_2_3x2_vtm', 64), ('vit_tiny_patch16_224_vtm', 196)])
def test_kappa_equal_to_the_token_count_is_allowed(name, kappa):
    """1 <= kappa <= T is the valid range; T excludes prefix tokens."""
    assert timm.create_model(name, kappa=kappa).tokenmixup_cfg.kappa == kappa


def test_htm_and_vtm_may_share_a_block():
    """docs/design.md §5.3: HTM mixes in front of the block, which then runs as a VTM block."""
    model = timm.create_model('cct_4_3x2', htm_layers=(2,), vtm_layers=(2,), num_classes=10, tau=1e9).train()
    out = model(_images(4), torch.arange(4))
    assert out.logits.shape == (4, 10)
    assert out.stats[2].easy_samples == 4


# ---------------------------------------------------------------------------------------------
# the model protocol (docs/design.md §3)

@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_model_x_returns_logits_in_train_and_eval(mode):
    """model(x) returns a logits tensor exactly like timm, in both modes (HTM needs targets)."""
    model = timm.create_model('cct_2_3x2_htm_vtm', num_classes=10).train(mode == 'train')
    logits = model(_images(2))
    assert type(logits) is torch.Tensor
    assert logits.shape == (2, 10)


def test_model_x_target_returns_tokenmixup_output():
    """model(x, target) returns TokenMixupOutput with (B, C) float target, a 0-dim aux_loss and the
    HTMStatistics of each HTM block, keyed by block index."""
    model = timm.create_model('cct_4_3x2_htm', num_classes=10).train()
    out = model(_images(4), torch.randn(4, 10).softmax(dim=-1))
    assert isinstance(out, TokenMixupOutput)
    assert out.logits.shape == (4, 10)
    assert out.target.shape == (4, 10) and out.target.is_floating_point()
    assert out.aux_loss.ndim == 0 and out.aux_loss.is_floating_point()
    assert list(out.stats) == [2]
    assert isinstance(out.stats[2], HTMStatistics)
    scalars = [value for name, value in out.stats[2]._asdict().items() if name not in ('mask', 'partner')]
    assert all(isinstance(value, torch.Tensor) and value.ndim == 0 for value in scalars)


def test_hard_labels_are_one_hot_encoded():
    """(B,) int64 labels become (B, C) one-hot targets (nothing is easy at tau=0, so nothing mixes)."""
    model = timm.create_model('cct_2_3x2_htm', num_classes=10, tau=0.0).train()
    labels = torch.tensor([3, 0, 9, 3])
    out = model(_images(4), labels)
    assert out.target.dtype == torch.float32
    assert torch.equal(out.target, F.one_hot(labels, 10).float())


def test_eval_returns_one_hot_target_zero_aux_loss_and_no_stats():
    """In eval mode the target comes back unchanged (one-hot of the labels), aux_loss is exactly 0 and
    stats is empty."""
    model = timm.create_model('cct_2_3x2_htm_vtm', num_classes=10, tau=1e9).eval()
    labels = torch.tensor([1, 2, 3, 4])
    out = model(_images(4), labels)
    assert torch.equal(out.target, F.one_hot(labels, 10).float())
    assert out.aux_loss.ndim == 0 and out.aux_loss.item() == 0.0
    assert out.stats == {}


def test_eval_returns_soft_target_unchanged():
    model = timm.create_model('vit_tiny_patch16_224_htm', num_classes=10, tau=1e9).eval()
    target = torch.randn(2, 10).softmax(dim=-1)
    out = model(_images(2, 224), target)
    assert torch.equal(out.target, target)
    assert out.aux_loss.item() == 0.0


@pytest.mark.parametrize('name, size', [('cct_2_3x2_htm', 32), ('vit_tiny_patch16_224_htm_vtm', 224)])
def test_num_classes_0_builds_and_model_x_target_raises_value_error(name, size):
    """With num_classes=0 HTM is off; model(x) gives features, model(x, target) raises ValueError."""
    model = timm.create_model(name, num_classes=0).train()
    features = model(_images(2, size))
    assert features.shape == (2, model.num_features)
    with pytest.raises(ValueError, match='num_classes'):
        model(_images(2, size), torch.tensor([0, 1]))


def _model_for_names(name: str) -> torch.nn.Module:
    return _on_meta(name) if name.startswith('vit_') else timm.create_model(name)


def _base_for_names(name: str) -> torch.nn.Module:
    return _model_for_names(variant_base_name(name))


NAME_CHECK_MODELS = [n for n in ALL_NAMES if n.startswith(('cct_2_3x2', 'cct_7_3x1', 'vit_'))]


@pytest.mark.parametrize('name', NAME_CHECK_MODELS)
def test_every_parameter_tokenmixup_adds_has_scorenet_in_its_name(name):
    """The variant's parameters are the base's plus ScoreNet parameters, each named '*scorenet*'."""
    variant = dict(_model_for_names(name).named_parameters())
    base = dict(_base_for_names(name).named_parameters())
    assert set(base) <= set(variant)
    added = set(variant) - set(base)
    assert all('scorenet' in key for key in added), sorted(added)
    assert bool(added) == ('_htm' in name)
    for key in base:
        assert variant[key].shape == base[key].shape, key


@pytest.mark.parametrize('name', NAME_CHECK_MODELS)
def test_tokenmixup_adds_no_buffers(name):
    variant = {key: tuple(b.shape) for key, b in _model_for_names(name).named_buffers()}
    base = {key: tuple(b.shape) for key, b in _base_for_names(name).named_buffers()}
    assert variant == base


def test_tokenmixup_adds_no_buffers_to_a_sine_embedding_cct():
    variant = timm.create_model('cct_2_3x2_htm_vtm', pos_embed='sine')
    base = timm.create_model('cct_2_3x2', pos_embed='sine')
    assert [key for key, _ in variant.named_buffers()] == [key for key, _ in base.named_buffers()] == ['pos_embed']


def _default_htm_block(name: str) -> int:
    """docs/design.md §5.3: CCT _htm block 2, _htm_vtm block 3, clamped to depth - 1; ViT block 3."""
    if name.startswith('vit_'):
        return 3
    depth = CCT_DEPTHS[variant_base_name(name)]
    return min(2 if name.endswith('_htm') else 3, depth - 1)


@pytest.mark.parametrize('name', [n for n in ALL_NAMES if '_htm' in n])
def test_htm_cfg_classifier_names_head_and_scorenet_head(name):
    """So that timm drops both when num_classes changes (docs/design.md §3)."""
    cfg = timm.models.get_pretrained_cfg(name)
    assert tuple(cfg.classifier) == ('head', f'htm.{_default_htm_block(name)}.scorenet.head')


@pytest.mark.parametrize('name, size, kwargs', [
    ('cct_7_3x1_htm', 32, {}),
    ('cct_4_3x2', 32, dict(htm_layers=(1, 3))),
    ('vit_tiny_patch16_224_htm_vtm', 224, {}),
])
def test_reset_classifier_rebuilds_head_and_every_scorenet_head(name, size, kwargs):
    model = timm.create_model(name, **kwargs)
    model.reset_classifier(7)
    assert model.num_classes == 7
    assert model.get_classifier().out_features == 7
    assert len(model.htm) >= 1
    for htm in model.htm.values():
        assert htm.scorenet.head.out_features == 7
    out = model.train()(_images(2, size), torch.tensor([0, 6]))
    assert out.logits.shape == (2, 7) and out.target.shape == (2, 7)


# ---------------------------------------------------------------------------------------------
# eval parity: every variant computes its base model's function (docs/design.md §2.3, §5.2; §9 measure "1.00")

@functools.lru_cache(maxsize=1)
def _base_reference(base_name: str, num_classes: int):
    """The base model (timm's own for a ViT), one input batch and its eval logits."""
    torch.manual_seed(1)
    base = timm.create_model(base_name, num_classes=num_classes).eval()
    size = base.pretrained_cfg['input_size']
    x = torch.randn(1 if size[-1] > 32 else 2, *size)
    with torch.no_grad():
        logits = base(x)
    return base.state_dict(), x, logits


@pytest.mark.parametrize('name', [_marked(n) for n in ALL_NAMES])
def test_variant_loads_base_weights_and_gives_identical_eval_logits(name):
    """Loading the base model's weights leaves only ScoreNet keys missing, and the eval logits are
    bit-identical: TokenMixup is inactive in eval mode and adds nothing to the forward."""
    variant = timm.create_model(name).eval()
    state_dict, x, base_logits = _base_reference(variant_base_name(name), variant.num_classes)
    result = variant.load_state_dict(state_dict, strict=False)
    assert result.unexpected_keys == []
    assert all('scorenet' in key for key in result.missing_keys), result.missing_keys
    assert bool(result.missing_keys) == ('_htm' in name)
    with torch.no_grad():
        logits = variant(x)
    assert torch.equal(logits, base_logits)


# ---------------------------------------------------------------------------------------------
# pretrained weights: timm's ViT checkpoints, official CCT checkpoints

@pytest.fixture(scope='module')
def vit_tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(2)
    state_dict = timm.create_model('vit_tiny_patch16_224').state_dict()
    path = tmp_path_factory.mktemp('vit') / 'vit_tiny_patch16_224.pth'
    torch.save(state_dict, path)
    return path, state_dict


@pytest.mark.parametrize('suffix', ['_htm', '_vtm', '_htm_vtm'])
def test_timm_vit_weights_load_with_only_scorenet_fresh(vit_tiny_checkpoint, suffix):
    """docs/design.md §5.2: timm's weights load into the variant; every non-ScoreNet weight equals the file's."""
    path, saved = vit_tiny_checkpoint
    model = timm.create_model(
        'vit_tiny_patch16_224' + suffix, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    loaded = model.state_dict()
    assert {key for key in loaded if 'scorenet' not in key} == set(saved)
    for key, value in saved.items():
        assert torch.equal(loaded[key], value), key


def test_timm_vit_weights_load_into_a_10_class_variant_without_both_heads(vit_tiny_checkpoint):
    """With num_classes=10 timm drops the head and the ScoreNet head; the rest loads."""
    path, saved = vit_tiny_checkpoint
    model = timm.create_model(
        'vit_tiny_patch16_224_htm', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=10)
    loaded = model.state_dict()
    assert loaded['head.weight'].shape == (10, 192)
    assert loaded['htm.3.scorenet.head.weight'].shape == (10, 192)
    for key, value in saved.items():
        if not key.startswith('head.'):
            assert torch.equal(loaded[key], value), key


def test_timm_vit_weights_missing_a_trunk_key_fail_to_load(tmp_path, vit_tiny_checkpoint):
    """Only ScoreNet weights may be absent: everything else still loads strictly."""
    _, saved = vit_tiny_checkpoint
    broken = dict(saved)
    del broken['blocks.0.attn.qkv.weight']
    path = tmp_path / 'broken.pth'
    torch.save(broken, path)
    with pytest.raises(RuntimeError, match='blocks.0.attn.qkv.weight'):
        timm.create_model('vit_tiny_patch16_224_htm', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))



@pytest.fixture(scope='module')
def official_cct_checkpoint(tmp_path_factory, official_cct_layout):
    """A cct_7_3x1 (100 classes) saved in the official CCT key layout, its source model and an input."""
    torch.manual_seed(3)
    source = timm.create_model('cct_7_3x1').eval()
    official = official_cct_layout(source.state_dict())
    assert len(official) == len(source.state_dict())
    path = tmp_path_factory.mktemp('cct') / 'cct_7_3x1_32_cifar100_300epochs.pth'
    torch.save(official, path)
    x = _images(2)
    with torch.no_grad():
        logits = source(x)
    return path, x, logits


@pytest.mark.parametrize('name', ['cct_7_3x1', 'cct_7_3x1_htm'])
def test_official_cct_checkpoint_loads_and_gives_the_source_logits(official_cct_checkpoint, name):
    """checkpoint_filter_fn maps the official CCT key names; the HTM variant gets a fresh ScoreNet."""
    path, x, logits = official_cct_checkpoint
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        assert torch.equal(model(x), logits)


def test_official_cct_checkpoint_loads_into_a_10_class_variant_without_both_heads(official_cct_checkpoint):
    """With num_classes=10 timm drops the 100-class head (and the ScoreNet head); the rest loads."""
    path, _, _ = official_cct_checkpoint
    saved = torch.load(path)
    model = timm.create_model('cct_7_3x1_htm', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              num_classes=10)
    loaded = model.state_dict()
    assert loaded['head.weight'].shape == (10, 256)
    assert loaded['htm.2.scorenet.head.weight'].shape == (10, 256)
    assert torch.equal(loaded['pos_embed'], saved['classifier.positional_emb'])
    assert torch.equal(loaded['blocks.6.mlp.fc2.weight'], saved['classifier.blocks.6.linear2.weight'])
    assert torch.equal(loaded['tokenizer.stages.0.conv.weight'], saved['tokenizer.conv_layers.0.0.weight'])


def test_cct_checkpoint_filter_leaves_our_own_layout_unchanged():
    """Our exports load through checkpoint_filter_fn: same keys, same tensors."""
    model = timm.create_model('cct_2_3x2_htm_vtm')
    state_dict = model.state_dict()
    filtered = cct_checkpoint_filter_fn(state_dict, model)
    assert list(filtered) == list(state_dict)
    for key, value in state_dict.items():
        assert filtered[key] is value or torch.equal(filtered[key], value), key


def test_cct_prune_intermediate_layers_as_timms_feature_getter_calls_it():
    """features_only=True (timm's FeatureGetterNet) calls prune_intermediate_layers(indices,
    prune_norm=True, prune_head=True): later blocks, the final norm and every classifier go."""
    model = timm.create_model('cct_7_3x1_htm')
    taken = model.prune_intermediate_layers(3, prune_norm=True, prune_head=True)
    assert list(taken) == [4, 5, 6]
    assert len(model.blocks) == 7
    assert isinstance(model.norm, torch.nn.Identity)
    assert model.num_classes == 0
    assert isinstance(model.get_classifier(), torch.nn.Identity)


# ---------------------------------------------------------------------------------------------
# HTM through a model (docs/design.md §2.2)

def test_htm_with_tau_0_finds_no_easy_sample_and_leaves_targets():
    """Easy iff CE < tau: at tau = 0 no sample is easy, nothing is mixed, the target is the one-hot."""
    torch.manual_seed(0)
    model = timm.create_model('cct_2_3x2_htm', num_classes=10, tau=0.0).train()
    labels = torch.arange(8)
    out = model(_images(8), labels)
    assert out.stats[1].easy_samples == 0
    assert out.stats[1].mixed_samples == 0
    assert torch.equal(out.target, F.one_hot(labels, 10).float())


def test_htm_with_huge_tau_and_rho_0_replaces_tokens_and_mixes_labels():
    """At tau = 1e9 every sample is easy; with rho = 0 every positive saliency gain replaces a token, so
    samples are mixed and (with 8 distinct labels) their targets change (Eq. 11)."""
    torch.manual_seed(0)
    model = timm.create_model('cct_2_3x2_htm', num_classes=10, tau=1e9, rho=0.0).train()
    labels = torch.arange(8)
    out = model(_images(8), labels)
    one_hot = F.one_hot(labels, 10).float()
    assert out.stats[1].easy_samples == 8
    assert out.stats[1].mixed_samples > 0
    changed = (out.target - one_hot).abs().sum(dim=-1) > 1e-6
    assert changed.any()
    torch.testing.assert_close(out.target.sum(dim=-1), torch.ones(8))


# ---------------------------------------------------------------------------------------------
# VTM through a model (docs/design.md §2.3)

VTM_MODELS = [('cct_2_3x2_vtm', 32), ('cct_7_3x1_vtm', 32), ('vit_tiny_patch16_224_vtm', 224)]


@pytest.mark.parametrize('name, size', VTM_MODELS)
def test_vtm_output_of_a_sample_does_not_depend_on_the_rest_of_the_batch(name, size):
    """Memory travels with the batch: in train mode model(x)[i] == model(x[i:i+1])[0]."""
    torch.manual_seed(0)
    model = _no_dropout(name).train()
    x = _images(3, size)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name, size', VTM_MODELS)
def test_vtm_permuting_the_batch_permutes_the_train_output(name, size):
    torch.manual_seed(0)
    model = _no_dropout(name).train()
    x = _images(3, size)
    order = torch.tensor([2, 0, 1])
    with torch.no_grad():
        torch.testing.assert_close(model(x[order]), model(x)[order], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name, size', VTM_MODELS)
def test_vtm_is_active_in_training(name, size):
    """The same weights and input give different logits in train mode (VTM) and eval mode (plain)."""
    torch.manual_seed(0)
    model = _no_dropout(name)
    x = _images(2, size)
    with torch.no_grad():
        train_logits = model.train()(x)
        eval_logits = model.eval()(x)
    assert not torch.allclose(train_logits, eval_logits, rtol=1e-4, atol=1e-5)


def _block0_grads(model: torch.nn.Module, x: torch.Tensor):
    model.zero_grad()
    logits = model(x)
    logits.square().mean().backward()
    return logits.detach(), {key: p.grad.clone() for key, p in model.named_parameters() if key.startswith('blocks.0.')}


def test_vtm_memory_gradient_flows_unless_vtm_detach():
    """vtm_detach=False lets the gradient flow into the memory (tokens of block 1's input, which block 0
    computes); vtm_detach=True stops it: same logits, different block-0 gradients."""
    torch.manual_seed(0)
    flowing = _no_dropout('cct_4_3x2_vtm', vtm_detach=False).train()
    detached = _no_dropout('cct_4_3x2_vtm', vtm_detach=True).train()
    detached.load_state_dict(flowing.state_dict())
    assert flowing.tokenmixup_cfg.vtm_layers == (2,)
    x = _images(2)
    logits_flowing, grads_flowing = _block0_grads(flowing, x)
    logits_detached, grads_detached = _block0_grads(detached, x)
    torch.testing.assert_close(logits_flowing, logits_detached)
    assert any(not torch.allclose(grads_flowing[key], grads_detached[key]) for key in grads_flowing)


@pytest.mark.parametrize('name', ['cct_2_3x2_htm_vtm', 'cct_4_3x2_vtm'])
def test_grad_checkpointing_leaves_train_mode_tokenmixup_unchanged(name):
    """set_grad_checkpointing() changes memory, not results: the same train-mode logits and gradients
    with VTM (and HTM) active."""
    torch.manual_seed(0)
    plain = _no_dropout(name, num_classes=10).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing()
    x, labels = _images(4), torch.tensor([0, 1, 2, 3])
    results = []
    for model in (plain, checkpointed):
        out = model(x, labels)
        (out.logits.mean() + out.aux_loss).backward()
        results.append((out.logits.detach(), {key: p.grad for key, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for key, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][key], msg=key)


def test_tokenmixup_runs_under_bfloat16_autocast():
    """docs/design.md §3: AMP autocast sees one ordinary call; targets and aux_loss stay float32."""
    model = timm.create_model('cct_2_3x2_htm_vtm', num_classes=10, tau=1e9).train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(_images(4), torch.tensor([0, 1, 2, 3]))
    assert out.logits.shape == (4, 10)
    assert out.target.dtype == torch.float32 and out.aux_loss.dtype == torch.float32
    assert torch.isfinite(out.logits.float()).all()
    (out.logits.float().mean() + out.aux_loss).backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# torch.compile (docs/design.md §3: one ordinary call)

@pytest.mark.slow
# the Hungarian solver is a graph break
@pytest.mark.filterwarnings('ignore:Dynamo does not know how to trace the builtin')
def test_compiled_training_step_runs_with_finite_loss():
    """A compiled train step: soft-target CE on out.target plus out.aux_loss, then an SGD step.

    backend='aot_eager' traces forward and backward like inductor does, without inductor's C++ code
    generation (a first step takes minutes on two CPU cores with inductor).
    """
    torch.manual_seed(0)
    model = timm.create_model('cct_2_3x2_htm_vtm', num_classes=10, tau=1e9).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = copy.deepcopy(model.state_dict())

    def step(x, labels):
        out = model(x, labels)
        loss = torch.sum(-out.target * F.log_softmax(out.logits, dim=-1), dim=-1).mean() + out.aux_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()

    loss = torch.compile(step, backend='aot_eager')(_images(4), torch.tensor([0, 1, 2, 3]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert not torch.equal(model.state_dict()['head.weight'], before['head.weight'])


def test_timms_private_feature_take_indices_behaves_as_cct_relies_on():
    """`models/cct.py` imports timm's private `feature_take_indices` (no public name): pin the contract it
    uses for forward_intermediates and prune_intermediate_layers: (sorted indices to take, the last one)."""
    from timm.models._features import feature_take_indices
    assert feature_take_indices(7, None) == (list(range(7)), 6)
    assert feature_take_indices(7, 3) == ([4, 5, 6], 6)  # an int: the last n blocks
    assert feature_take_indices(7, [0, 2]) == ([0, 2], 2)
    assert feature_take_indices(7, [-1]) == ([6], 6)  # negative indices count from the end


@pytest.mark.parametrize('name', ['cct_7_3x1_htm.c100_300e', 'cct_7_3x1_vtm.c10_300e', 'cct_14_7x2_224_htm_vtm.in1k',
                                  'vit_base_patch16_224_htm.orig_in21k_ft_in1k', 'deit_small_patch16_224_vtm.fb_in1k'])
def test_variant_tags_of_third_party_base_weights_say_so(name):
    """Nobody should mistake cct_7_3x1_htm.c100_300e for weights trained with HTM: timm's description says what
    they are; the bases' own tags need no such warning."""
    description = timm.models.get_pretrained_cfg(name).description
    assert 'not trained with TokenMixup' in description and 'ScoreNet starts fresh' in description
    assert name.split('.')[1] in description
    assert not timm.models.get_pretrained_cfg('cct_7_3x1.c100_300e').description


@pytest.mark.parametrize('name', ['cct_2_3x2_htm_vtm', 'vit_tiny_patch16_224_htm_vtm', 'tokenmixup_vit'])
def test_forward_takes_every_default_positionally(name):
    """torch.onnx's legacy exporter (timm's onnx_export.py default) appends the default of every forward parameter
    to the inputs, positionally: so forward has no keyword-only parameters, and with those defaults it is the
    plain eval forward."""
    import inspect
    kwargs = dict(img_size=32) if name.startswith('cct') else dict(img_size=32, patch_size=16)
    if name == 'tokenmixup_vit':
        kwargs.update(base_model='deit_tiny_patch16_224', htm_layers=(1,))
    model = timm.create_model(name, num_classes=10, **kwargs).eval()
    parameters = list(inspect.signature(model.forward).parameters.values())
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters), parameters
    x = torch.randn(2, 3, 32, 32)
    defaults = [p.default for p in parameters[1:]]
    with torch.no_grad():
        assert torch.equal(model(x, *defaults), model(x))


@pytest.mark.parametrize('name', ['cct_2_3x2_htm_vtm', 'vit_tiny_patch16_224_htm_vtm'])
def test_torch_export_of_the_eval_model_gives_its_logits(name):
    kwargs = dict(img_size=32) if name.startswith('vit') else {}
    model = timm.create_model(name, num_classes=10, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-6)
