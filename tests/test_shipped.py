"""The weights shipped inside the package: `cct_2_3x2_htm_vtm.digits` and `cct_2_3x2.digits` (the default tags),
`cct_2_3x2_vtm.fashion_mnist` and `cct_2_3x2.fashion_mnist`.

Each loads offline through timm's own `file` source from the installed package, matches the record beside it, and
reproduces the recorded top-1 exactly with validate.py: the digits tags on the embedded validation split, the
Fashion-MNIST tags on its 10,000 test images where the dataset is installed (Debian's dataset-fashion-mnist, or
FASHION_MNIST_DIR). The wheel carries the files.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import timm
import torch

import models
import validate
from models.cct import SHIPPED_CFGS, SHIPPED_WEIGHTS_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
DIGITS = ('cct_2_3x2_htm_vtm.digits', 'cct_2_3x2.digits')
FASHION_MNIST = ('cct_2_3x2_vtm.fashion_mnist', 'cct_2_3x2.fashion_mnist')
SHIPPED = DIGITS + FASHION_MNIST
# the dataset and split each tag's record was measured on
RECORDED_ON = {'digits': ('embedded/digits', 'validation'), 'fashion_mnist': ('torch/fashion_mnist', 'test')}
FASHION_MNIST_DIR = Path(os.environ.get('FASHION_MNIST_DIR', '/usr/share/datasets/fashion-mnist'))


def shipped_record(name: str) -> dict:
    return json.loads((SHIPPED_WEIGHTS_DIR / f'{name}.json').read_text())


@pytest.mark.parametrize('name', SHIPPED)
def test_shipped_file_is_package_data_and_matches_its_record(name):
    cfg = timm.models.get_pretrained_cfg(name)
    path = Path(cfg.file)
    assert path.parent == Path(models.__file__).resolve().parent / 'weights'
    record = shipped_record(name)
    assert record['file'] == path.name and record['name'] == name
    assert path.stat().st_size == record['bytes'] < 2 * 1024 * 1024
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record['sha256']
    assert 'python train.py' in record['command'] and record['seed'] == record['train_args']['seed']
    assert record['commit'] and len(record['commit']) == 40
    assert (record['dataset'], record['split']) == RECORDED_ON[name.split('.')[1]]
    assert 0 < record['top1'] <= 100


@pytest.mark.parametrize('name', DIGITS)
def test_digits_is_the_default_tag(name):
    architecture = name.split('.')[0]
    assert timm.models.get_pretrained_cfg(architecture).tag == 'digits'
    assert timm.create_model(architecture, pretrained=True).num_classes == 10  # loads the shipped file
    assert name in timm.list_pretrained(architecture)


def test_the_trained_tag_is_not_described_as_base_weights_but_the_others_are():
    assert not timm.models.get_pretrained_cfg('cct_2_3x2_htm_vtm.digits').description
    assert not timm.models.get_pretrained_cfg('cct_2_3x2_vtm.fashion_mnist').description
    assert SHIPPED_CFGS.keys() == {'cct_2_3x2_htm_vtm', 'cct_2_3x2_vtm'}
    inherited = [('cct_2_3x2_htm.digits', 'digits'), ('cct_2_3x2_vtm.digits', 'digits'),
                 ('cct_2_3x2_htm.fashion_mnist', 'fashion_mnist'), ('cct_2_3x2_htm_vtm.fashion_mnist', 'fashion_mnist')]
    for name, tag in inherited:  # base weights, fresh ScoreNet
        description = timm.models.get_pretrained_cfg(name).description
        assert 'not trained with TokenMixup' in description and f'cct_2_3x2.{tag}' in description
        assert Path(timm.models.get_pretrained_cfg(name).file).name == f'cct_2_3x2.{tag}.safetensors'


@pytest.mark.parametrize('name', FASHION_MNIST)
def test_fashion_mnist_tags_carry_the_recipes_preprocessing(name):
    """The tag's cfg is the eval transform of configs/fashion_mnist_cct_2_3x2.yaml: the dataset's mean and std on
    three channels, 32x32 bicubic without a crop, and it builds the model the run trained."""
    cfg = timm.models.get_pretrained_cfg(name)
    assert (cfg.num_classes, cfg.input_size, cfg.crop_pct, cfg.interpolation) == (10, (3, 32, 32), 1.0, 'bicubic')
    assert cfg.mean == (0.2860,) * 3 and cfg.std == (0.3530,) * 3
    train_args = shipped_record(name)['train_args']
    assert list(train_args['mean']) == [cfg.mean[0]] and list(train_args['std']) == [cfg.std[0]]
    assert train_args['model'] == name.split('.')[0] and train_args['input_img_mode'] == 'RGB'


def test_the_htm_vtm_tag_holds_its_own_trained_scorenet():
    trained = timm.create_model('cct_2_3x2_htm_vtm.digits', pretrained=True).state_dict()
    base = timm.create_model('cct_2_3x2.digits', pretrained=True).state_dict()
    assert any('scorenet' in key for key in trained)
    assert not torch.equal(trained['head.weight'], base['head.weight'])


@pytest.mark.parametrize('name', DIGITS)
def test_validate_reproduces_the_recorded_top1(name):
    record = shipped_record(name)
    row, = validate.main(['--model', name, '--pretrained'])
    assert row['top1'] == round(record['top1'], 4)
    assert row['top5'] == round(record['top5'], 4)


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                    reason=f'Fashion-MNIST is not installed in {FASHION_MNIST_DIR} (apt-get install '
                           'dataset-fashion-mnist, or set FASHION_MNIST_DIR)')
@pytest.mark.parametrize('name', FASHION_MNIST)
def test_validate_reproduces_the_recorded_fashion_mnist_test_top1(name):
    record = shipped_record(name)
    row, = validate.main(['--model', name, '--pretrained', '--dataset', 'torch/fashion_mnist',
                          '--data-dir', str(FASHION_MNIST_DIR)])  # the default split is the test set
    assert row['top1'] == round(record['top1'], 4)
    assert row['top5'] == round(record['top5'], 4)


def test_pretrained_loads_offline_in_a_fresh_process(tmp_path):
    """A new interpreter, no network, the working directory elsewhere: the installed package's files load."""
    code = ("import timm, models; m = timm.create_model('cct_2_3x2_htm_vtm.digits', pretrained=True); "
            "print(m.pretrained_cfg['file'])")
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().endswith('cct_2_3x2_htm_vtm.digits.safetensors')


@pytest.mark.slow
def test_the_wheel_carries_the_shipped_weights(tmp_path):
    source = tmp_path / 'source'
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        '.git', 'output', '__pycache__', '*.egg-info', 'build', 'dist', '.pytest_cache'))
    completed = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', str(tmp_path / 'dist'),
         str(source)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    wheel, = (tmp_path / 'dist').glob('*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SHIPPED:
        assert f'models/weights/{name}.safetensors' in names and f'models/weights/{name}.json' in names
    assert 'tokenmixup_tools/data/uci_digits.npz' in names


def test_shipping_compares_the_settings_the_model_reads():
    """hub.ship refuses a run whose model differs from the registered one in a setting it reads (kappa of a VTM
    model), and accepts one whose only difference is read by nothing (tau of a model without HTM)."""
    from hub.ship import check_registered_model
    from tokenmixup_tools.cli import UsageError
    check_registered_model('cct_2_3x2_vtm', timm.create_model('cct_2_3x2_vtm', tau=0.6))
    with pytest.raises(UsageError, match='TokenMixup settings'):
        check_registered_model('cct_2_3x2_vtm', timm.create_model('cct_2_3x2_vtm', kappa=5))
    with pytest.raises(UsageError, match='TokenMixup settings'):
        check_registered_model('cct_2_3x2_htm', timm.create_model('cct_2_3x2_htm', tau=0.6))
