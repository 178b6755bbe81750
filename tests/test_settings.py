"""The declaration of the TokenMixup settings, its validator and the presets (docs/design.md §2.4).

Each setting is declared once in `tokenmixup/settings.py`; the model constructors, the HTM/VTM modules,
train.py's flags, the checkpoint record and the model card are derived from it.
"""
import ast
import dataclasses
import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import timm

import models
from tokenmixup import HorizontalTokenMixup, VerticalTokenMixup
from models.presets import PRESETS, get_preset
from tokenmixup.settings import (
    SETTING_DEFAULTS, SETTING_NAMES, SETTINGS, ModelContext, Preset, Setting, TokenMixupConfig,
    check_settings, resolve_settings, settings_in_scope)

REPO_ROOT = Path(__file__).resolve().parents[1]
CCT_7 = ModelContext(depth=7, num_tokens=256)


# ---------------------------------------------------------------------------------------------
# the declaration

def test_every_setting_has_a_name_a_help_line_and_a_valid_default():
    assert len(set(SETTING_NAMES)) == len(SETTINGS)
    for setting in SETTINGS:
        assert setting.help and '\n' not in setting.help, setting.name
        assert check_settings({setting.name: setting.default})[setting.name] == setting.default


def test_config_has_one_field_per_setting_in_declaration_order_with_the_declared_default():
    assert tuple(field.name for field in dataclasses.fields(TokenMixupConfig)) == SETTING_NAMES
    assert dataclasses.asdict(TokenMixupConfig()) == dict(SETTING_DEFAULTS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TokenMixupConfig().tau = 1.0


def test_a_bad_declaration_is_refused():
    with pytest.raises(ValueError, match='kind'):
        Setting('x', 'colour', 1, 'help', scope='htm')
    with pytest.raises(ValueError, match='choices'):
        Setting('x', 'choice', 'a', 'help', scope='htm')
    with pytest.raises(ValueError, match='x must be an int >= 1'):
        Setting('x', 'count', 0, 'help', scope='htm')


def test_scopes_split_the_settings_between_the_htm_and_vtm_modules():
    htm = {setting.name for setting in settings_in_scope('htm')}
    vtm = {setting.name for setting in settings_in_scope('vtm')}
    assert {'tau', 'rho', 'scorenet_lambda', 'pairing', 'mixing'} <= htm
    assert vtm == {'kappa', 'saliency', 'vtm_detach'}
    assert htm & vtm == {'saliency'}
    model = {setting.name for setting in settings_in_scope('model')}
    assert model == {'htm_layers', 'vtm_layers'} and not model & (htm | vtm)
    assert model | htm | vtm == set(SETTING_NAMES)


def test_settings_in_effect_are_those_of_the_modules_the_model_has():
    """What the shipping check compares: a base model reads no setting, a VTM model only VTM's."""
    assert TokenMixupConfig(tau=0.6).in_effect() == TokenMixupConfig().in_effect() == dict(htm_layers=(), vtm_layers=())
    vtm = TokenMixupConfig(vtm_layers=(1,), tau=0.6).in_effect()
    assert vtm == dict(htm_layers=(), vtm_layers=(1,), kappa=3, saliency='mean', vtm_detach=False)
    assert TokenMixupConfig(htm_layers=(1,), tau=0.6).in_effect()['tau'] == 0.6
    both = TokenMixupConfig(htm_layers=(1,), vtm_layers=(1,)).in_effect()
    assert set(both) == set(SETTING_NAMES)


# ---------------------------------------------------------------------------------------------
# the validator

@pytest.mark.parametrize('name, value, expected', [
    ('kappa', np.int64(4), 4),
    ('tau', np.float32(1.5), 1.5),
    ('rho', np.float64(0.01), 0.01),
    ('scorenet_lambda', np.int32(1), 1.0),
    ('htm_layers', tuple(np.arange(2)), (0, 1)),
    ('htm_layers', np.arange(1, 3), (1, 2)),
    ('vtm_layers', [np.int64(2)], (2,)),
    ('scorenet_detach', np.bool_(True), True),
])
def test_numpy_scalars_are_accepted_like_python_numbers(name, value, expected):
    checked = check_settings({name: value})[name]
    assert checked == expected
    assert type(checked) is type(expected)
    assert all(type(index) is int for index in checked) if isinstance(checked, tuple) else True


@pytest.mark.parametrize('name, value', [
    ('tau', -1.0), ('tau', float('nan')), ('rho', float('inf')), ('tau', True), ('tau', '2'),
    ('kappa', 0), ('kappa', 2.0), ('kappa', True),
    ('htm_layers', 2), ('htm_layers', (1, 1)), ('htm_layers', (-1,)), ('vtm_layers', (0,)), ('htm_layers', (1.0,)),
    ('scorenet_pool', 'max'), ('saliency', 'MEAN'), ('vtm_detach', 1), ('pairing', 'greedy'),
    ('manifold_alpha', 0.0),
])
def test_bad_values_raise_value_error_naming_the_setting(name, value):
    with pytest.raises(ValueError, match=rf'^{name} '):
        check_settings({name: value})


def test_an_unknown_name_is_a_type_error_like_an_unexpected_keyword():
    with pytest.raises(TypeError, match="unexpected keyword argument 'taus'"):
        check_settings({'taus': 1.0})
    with pytest.raises(TypeError, match="HorizontalTokenMixup got an unexpected keyword argument 'kappa'"):
        HorizontalTokenMixup(8, 5, kappa=3)  # a VTM setting
    with pytest.raises(TypeError, match="VerticalTokenMixup got an unexpected keyword argument 'tau'"):
        VerticalTokenMixup(tau=1.0)


def test_checks_against_the_model_block_range_kappa_and_the_cls_token():
    with pytest.raises(ValueError, match=r'htm_layers must hold block indices in \[0, 6\]'):
        check_settings({'htm_layers': (7,)}, CCT_7)
    with pytest.raises(ValueError, match=r'kappa must be an int in \[1, T\] = \[1, 196\]'):
        check_settings({'kappa': 197}, ModelContext(depth=12, num_tokens=197, num_prefix_tokens=1))
    for name in ('saliency', 'scorenet_pool'):
        with pytest.raises(ValueError, match=f"{name}='cls' reads the CLS token"):
            check_settings({name: 'cls'}, CCT_7)
    # a model with prefix tokens but no CLS token (registers only) refuses 'cls' too
    with pytest.raises(ValueError, match="saliency='cls'"):
        check_settings({'saliency': 'cls'}, ModelContext(depth=12, num_tokens=260, num_prefix_tokens=4))
    assert check_settings({'saliency': 'cls'}, ModelContext(12, 197, 1, has_class_token=True)) == {'saliency': 'cls'}


def test_the_modules_check_their_settings_through_the_declaration(monkeypatch):
    """HorizontalTokenMixup, VerticalTokenMixup and the model constructors all call `check_settings`."""
    import tokenmixup.horizontal
    import tokenmixup.settings
    import tokenmixup.vertical
    seen = []
    original = tokenmixup.settings.check_settings

    def spy(values, *args, **kwargs):
        seen.append(set(values))
        return original(values, *args, **kwargs)

    for module in (tokenmixup.horizontal, tokenmixup.vertical, tokenmixup.settings):
        monkeypatch.setattr(module, 'check_settings', spy)
    HorizontalTokenMixup(8, 5, tau=1.0)
    assert {'tau'} in seen
    seen.clear()
    VerticalTokenMixup(kappa=4)
    assert {'kappa'} in seen
    seen.clear()
    timm.create_model('cct_2_3x2', rho=0.5)
    assert any('rho' in names for names in seen)


# ---------------------------------------------------------------------------------------------
# presets

@pytest.mark.parametrize('name', sorted(PRESETS))
def test_every_preset_is_valid_on_its_reference_model(name):
    context = CCT_7 if name.startswith('cct') else ModelContext(12, 197, 1, has_class_token=True)
    config = resolve_settings({}, context, get_preset(name))
    assert config.htm_layers or config.vtm_layers


def test_presets_are_the_paper_recipes():
    """docs/design.md §5.3: the CIFAR-100 CCT, CIFAR-10 CCT and ImageNet ViT settings."""
    vit = ModelContext(12, 197, 1, has_class_token=True)
    expected = {
        'cct_cifar100_htm': dict(htm_layers=(2,), vtm_layers=(), tau=2.0, rho=0.005, scorenet_lambda=0.001,
                                 scorenet_pool='attn', scorenet_detach=False, saliency='mean'),
        'cct_cifar100_vtm': dict(htm_layers=(), vtm_layers=(2,), kappa=80, saliency='mean'),
        'cct_cifar100_htm_vtm': dict(htm_layers=(3,), vtm_layers=(2,), kappa=3, tau=2.0, rho=0.005),
        'cct_cifar10_htm': dict(htm_layers=(2,), tau=1.0, rho=0.003),
        'cct_cifar10_vtm': dict(vtm_layers=(1,), kappa=5),
        'cct_cifar10_htm_vtm': dict(htm_layers=(2,), vtm_layers=(3,), kappa=3, tau=1.0, rho=0.004),
        'vit_imagenet_htm': dict(htm_layers=(3,), tau=1.0, rho=0.01, scorenet_lambda=1.0, scorenet_pool='cls',
                                 scorenet_detach=True, saliency='cls'),
        'vit_imagenet_vtm': dict(vtm_layers=(3,), kappa=3, saliency='cls'),
        'vit_imagenet_htm_vtm': dict(htm_layers=(3,), vtm_layers=(4,), kappa=3, tau=1.0, rho=0.01,
                                     scorenet_pool='cls', saliency='cls'),
        # the same recipes for ViTs without a CLS token (docs/design.md §5.2)
        'vit_imagenet_htm_gap': dict(htm_layers=(3,), tau=1.0, rho=0.01, scorenet_lambda=1.0, scorenet_pool='avg',
                                     scorenet_detach=True, saliency='mean'),
        'vit_imagenet_vtm_gap': dict(vtm_layers=(3,), kappa=3, saliency='mean'),
        'vit_imagenet_htm_vtm_gap': dict(htm_layers=(3,), vtm_layers=(4,), kappa=3, tau=1.0, rho=0.01,
                                         scorenet_pool='avg', saliency='mean'),
    }
    assert set(expected) == set(PRESETS)
    for name, values in expected.items():
        config = resolve_settings({}, vit if name.startswith('vit') else CCT_7, get_preset(name))
        assert {key: getattr(config, key) for key in values} == values, name


@pytest.mark.parametrize('num_tokens, kappa', [(256, 80), (64, 20), (16, 5), (1024, 320), (1, 1)])
def test_vtm_only_kappa_follows_the_token_count(num_tokens, kappa):
    """docs/design.md §5.3: round(80 * T / 256), at least 1."""
    config = resolve_settings({}, ModelContext(7, num_tokens), get_preset('cct_cifar100_vtm'))
    assert config.kappa == kappa


def test_block_indices_clamp_to_the_last_block_of_shallower_models():
    config = resolve_settings({}, ModelContext(2, 64), get_preset('cct_cifar100_htm_vtm'))
    assert (config.htm_layers, config.vtm_layers) == ((1,), (1,))
    assert PRESETS['cct_cifar100_htm_vtm'].layers(4) == {'htm_layers': (3,), 'vtm_layers': (2,)}


def test_precedence_is_declared_default_then_preset_then_explicit():
    config = resolve_settings({'rho': 0.5, 'vtm_layers': ()}, CCT_7, get_preset('cct_cifar10_htm_vtm'))
    assert config.rho == 0.5  # explicit over the preset's 0.004
    assert config.tau == 1.0  # the preset over the declared 2.0
    assert config.vtm_layers == ()
    assert config.scorenet_lambda == SETTING_DEFAULTS['scorenet_lambda']  # neither sets it
    with pytest.raises(ValueError, match='tokenmixup_preset must be one of'):
        resolve_settings({}, CCT_7, get_preset('cifar'))


@pytest.mark.parametrize('preset, classes, tau', [
    ('cct_cifar100_htm', 100, 2.0), ('cct_cifar100_htm', 10, 1.0), ('cct_cifar100_htm_vtm', 10, 1.0),
    ('cct_cifar10_htm', 10, 1.0), ('cct_cifar10_htm', 100, 2.0), ('cct_cifar10_htm_vtm', 1000, 3.0),
    ('cct_cifar100_htm', None, 2.0), ('vit_imagenet_htm', 10, 1.0)])
def test_cct_presets_scale_tau_with_the_log_of_the_class_count(preset, classes, tau):
    """The paper's two CCT recipes put tau at the same fraction of ln C (2.0 for 100 classes, 1.0 for 10): a
    CCT preset keeps that fraction for the model's class count; unknown counts and the ViT recipe keep tau."""
    reference = CCT_7 if preset.startswith('cct') else ModelContext(12, 197, 1, True)
    context = dataclasses.replace(reference, num_classes=classes)
    assert resolve_settings({}, context, get_preset(preset)).tau == pytest.approx(tau, abs=1e-4)
    assert resolve_settings({'tau': 0.7}, context, get_preset(preset)).tau == 0.7  # an explicit tau is never scaled


@pytest.mark.parametrize('classes', [10, 100, 37])
def test_registered_cct_variants_get_the_tau_of_their_class_count(classes):
    expected = 2.0 * math.log(classes) / math.log(100)
    for name in ('cct_7_3x1_htm', 'cct_2_3x2_htm_vtm'):
        assert timm.create_model(name, num_classes=classes).tokenmixup_cfg.tau == pytest.approx(expected, abs=1e-4)


def test_a_preset_with_bad_values_is_refused():
    with pytest.raises(ValueError, match='tau'):
        Preset('bad', 'negative tau', {'tau': -1.0})
    with pytest.raises(TypeError, match="preset 'bad' got an unexpected keyword argument"):
        Preset('bad', 'unknown name', {'taus': 1.0})


def test_registered_variants_use_their_preset_and_accept_another():
    cifar100 = dataclasses.replace(CCT_7, num_classes=100)
    expected = resolve_settings({}, cifar100, get_preset('cct_cifar100_htm'))
    assert timm.create_model('cct_7_3x1_htm').tokenmixup_cfg == expected
    model = timm.create_model('cct_7_3x1_htm', tokenmixup_preset='cct_cifar10_htm', num_classes=10)
    assert (model.tokenmixup_cfg.tau, model.tokenmixup_cfg.rho) == (1.0, 0.003)
    base = timm.create_model('cct_7_3x1', tokenmixup_preset='cct_cifar100_htm_vtm')
    assert base.tokenmixup_cfg.htm_layers == (3,) and base.tokenmixup_cfg.vtm_layers == (2,)


# ---------------------------------------------------------------------------------------------
# derived keyword arguments

@pytest.mark.parametrize('model_class', [models.CCT, models.VisionTransformerTokenMixup])
def test_model_signatures_list_every_setting_with_its_declared_default(model_class):
    parameters = inspect.signature(model_class).parameters
    for setting in SETTINGS:
        assert parameters[setting.name].default == setting.default, setting.name
        assert parameters[setting.name].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters['tokenmixup_preset'].default is None
    assert 'kwargs' not in parameters and 'settings' not in parameters


def test_vit_signature_also_lists_timms_vision_transformer_arguments():
    parameters = inspect.signature(models.VisionTransformerTokenMixup).parameters
    for name in ('img_size', 'patch_size', 'embed_dim', 'depth', 'num_heads', 'class_token', 'reg_tokens'):
        assert name in parameters


def test_module_signatures_list_their_scope():
    htm = inspect.signature(HorizontalTokenMixup).parameters
    assert {setting.name for setting in settings_in_scope('htm')} <= set(htm)
    assert 'kappa' not in htm
    assert set(inspect.signature(VerticalTokenMixup).parameters) >= {'kappa', 'saliency', 'vtm_detach'}


def test_an_unknown_model_kwarg_is_still_refused():
    with pytest.raises(TypeError, match="unexpected keyword argument 'taus'"):
        timm.create_model('cct_2_3x2_htm', taus=1.0)


# ---------------------------------------------------------------------------------------------
# each default appears once in the source

def _source_files():
    for folder in ('tokenmixup', 'models', 'hub', 'tokenmixup_tools'):
        yield from (REPO_ROOT / folder).glob('*.py')
    yield from REPO_ROOT.glob('*.py')


def test_no_source_file_restates_a_setting_default():
    """Outside the declaration, no function parameter named after a setting has a literal default and no
    call passes a setting its declared default as a literal: defaults are looked up, not repeated."""
    # the declaration, and the recipes, whose values are stated (a ViT-without-CLS recipe sets the 'mean' saliency
    # over the CLS recipe it extends)
    exempt = (REPO_ROOT / 'tokenmixup' / 'settings.py', REPO_ROOT / 'models' / 'presets.py')
    offences = []
    for path in _source_files():
        if path in exempt:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args.posonlyargs + node.args.args
                pairs = list(zip(arguments[len(arguments) - len(node.args.defaults):], node.args.defaults))
                pairs += [(arg, default) for arg, default in zip(node.args.kwonlyargs, node.args.kw_defaults)
                          if default is not None]
                for arg, default in pairs:
                    if arg.arg in SETTING_DEFAULTS and _literal(default) == SETTING_DEFAULTS[arg.arg]:
                        offences.append(f'{path.name}:{node.lineno} {node.name}({arg.arg}=...)')
            elif isinstance(node, ast.keyword) and node.arg in SETTING_DEFAULTS:
                if _literal(node.value) == SETTING_DEFAULTS[node.arg]:
                    offences.append(f'{path.name}:{node.value.lineno} {node.arg}={_literal(node.value)!r}')
    assert offences == []


class _NotALiteral:
    """What `_literal` returns for an expression that is not a literal: equal to no default."""


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return _NotALiteral
