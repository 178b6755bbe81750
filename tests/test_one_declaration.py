"""A setting declared once reaches every consumer (docs/design.md §2.4, §7).

The test copies the sources, adds one field to `TokenMixupConfig` in `tokenmixup/settings.py` and nothing
else, and finds the new setting in `timm.create_model` (keyword argument, signature, HTM module), in
`train.py --help` and its parsed flags, in the checkpoint record and in the model card.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import train
from models.presets import PRESETS
from tokenmixup.settings import SETTINGS

REPO_ROOT = Path(__file__).resolve().parents[1]
# the configs of the paper's rows (the others are recipes for other datasets, shared by a study's arms)
PAPER_CONFIGS = sorted(path for path in (REPO_ROOT / 'configs').glob('*.yaml')
                       if path.stem.startswith(('cifar', 'imagenet')))
ANCHOR = '    manifold_alpha: float = setting('
DUMMY = "    dummy_setting: int = setting('count', 7, 'a setting that only this test declares', scope='htm')\n"

PROBE = r'''
import inspect, json, sys
import timm, torch
import models, tokenmixup, train
from hub.card import CardInputs, render_model_card
from tokenmixup_tools.checkpoints import describe_model

report = {'tokenmixup_file': tokenmixup.__file__}
model = timm.create_model('cct_2_3x2_htm', num_classes=10, dummy_setting=9)
report['config'] = model.tokenmixup_cfg.dummy_setting
report['module'] = model.htm['1'].config.dummy_setting
report['signature_default'] = inspect.signature(models.CCT).parameters['dummy_setting'].default
report['vit_signature'] = 'dummy_setting' in inspect.signature(models.VisionTransformerTokenMixup).parameters
try:
    timm.create_model('cct_2_3x2_htm', dummy_setting=0)
except ValueError as e:
    report['error'] = str(e)
args = train.parse_args(['--dummy-setting', '5'])
trained, record = train.build_model(args, num_classes=10)
report['flag'] = trained.tokenmixup_cfg.dummy_setting
report['record'] = record['model_kwargs'].get('dummy_setting')
report['help'] = train.build_parsers()[1].format_help()
card = render_model_card(CardInputs(
    repo_id='org/name', architecture='cct_2_3x2_htm', tag='digits', num_classes=10, param_count=1,
    input_size=(3, 32, 32), tokenmixup=record['model_kwargs'], model_args=record['model_kwargs'],
    data_config=dict(interpolation='bicubic', crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3)))
report['card'] = [line for line in card.splitlines() if 'dummy_setting' in line]
print(json.dumps(report))
'''


@pytest.fixture(scope='module')
def probe(tmp_path_factory) -> dict:
    copy = tmp_path_factory.mktemp('repo') / 'repo'
    shutil.copytree(REPO_ROOT, copy, ignore=shutil.ignore_patterns(
        '.git', 'output', 'tests', '__pycache__', '*.egg-info', 'build', 'dist', '.venv'))
    declaration = copy / 'tokenmixup' / 'settings.py'
    text = declaration.read_text()
    assert text.count(ANCHOR) == 1
    declaration.write_text(text.replace(ANCHOR, DUMMY + ANCHOR))
    env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS='1')
    completed = subprocess.run([sys.executable, '-c', PROBE], cwd=copy, env=env, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(report['tokenmixup_file']).resolve().is_relative_to(copy.resolve())  # the edited copy ran
    return report


def test_the_new_setting_is_a_create_model_keyword_that_reaches_the_htm_module(probe):
    assert probe['config'] == 9 and probe['module'] == 9
    assert probe['signature_default'] == 7 and probe['vit_signature']


def test_the_new_setting_is_validated_by_its_kind(probe):
    assert probe['error'].startswith('dummy_setting must be an int >= 1')


def test_the_new_setting_is_a_train_py_flag_with_its_help_and_default(probe):
    assert probe['flag'] == 5
    help_text = ' '.join(probe['help'].split())
    assert '--dummy-setting N' in help_text
    assert 'a setting that only this test declares (declared default: 7)' in help_text


def test_the_new_setting_is_in_the_checkpoint_record_and_the_card(probe):
    assert probe['record'] == 5
    assert probe['card'] and '5' in probe['card'][0] and 'a setting that only this test declares' in probe['card'][0]


# ---------------------------------------------------------------------------------------------
# train.py's flags as they are

def test_train_help_lists_every_setting_with_its_choices_and_default():
    help_text = ' '.join(train.build_parsers()[1].format_help().split())
    for setting in SETTINGS:
        flag = f'--{setting.name.replace("_", "-")}'
        assert flag in help_text, flag
        assert f'(declared default: {setting.default!r})' in help_text, setting.name
        if setting.choices:
            assert f'{flag} {{{",".join(setting.choices)}}}' in help_text, setting.name
    assert '--no-difficulty-gating' in help_text
    assert all(name in help_text for name in PRESETS)


def test_ablation_flags_and_presets_reach_the_model():
    args = train.parse_args(['--model', 'cct_2_3x2_htm', '--pairing', 'random', '--no-difficulty-gating',
                             '--label-mixing', 'count', '--tokenmixup-preset', 'cct_cifar10_htm'])
    model, record = train.build_model(args, num_classes=10)
    htm = model.htm['1']
    assert (htm.config.pairing, htm.config.difficulty_gating, htm.config.label_mixing) == ('random', False, 'count')
    assert (htm.config.tau, htm.config.rho) == (1.0, 0.003)  # from the preset
    assert record['model_kwargs']['pairing'] == 'random'
    assert 'tokenmixup_preset' not in record['model_kwargs']  # resolved into the settings
    with pytest.raises(SystemExit):
        train.parse_args(['--pairing', 'greedy'])


@pytest.mark.parametrize('config', PAPER_CONFIGS, ids=lambda path: path.stem)
def test_each_config_agrees_with_its_preset(config):
    """A config names its preset and spells it out; every value it spells out is the preset's (a baseline
    config names none and disables both parts)."""
    args = train.parse_args(['-c', str(config)])
    args.pretrained = False  # the ImageNet configs start from timm's weights, which the tests cannot download
    spelled = {setting.name: getattr(args, setting.name) for setting in SETTINGS
               if getattr(args, setting.name) is not None}
    model, _ = train.build_model(args, num_classes=args.num_classes)
    if config.stem.endswith('baseline'):
        assert args.tokenmixup_preset is None
        assert model.tokenmixup_cfg.htm_layers == () and model.tokenmixup_cfg.vtm_layers == ()
        return
    assert args.tokenmixup_preset in PRESETS
    without_values = train.parse_args(['--model', args.model, '--tokenmixup-preset', args.tokenmixup_preset])
    preset_model, _ = train.build_model(without_values, num_classes=args.num_classes)
    for name, value in spelled.items():
        assert json.dumps(getattr(preset_model.tokenmixup_cfg, name)) == json.dumps(
            tuple(value) if isinstance(value, list) else value), name
    assert model.tokenmixup_cfg == preset_model.tokenmixup_cfg
