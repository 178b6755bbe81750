"""The tools' library (`tokenmixup_tools`) and how the tools are put together (docs/design.md §6.4).

No tool imports another, importing `hub.publish` builds no tool's parser, checkpoints of earlier
versions (run arguments stored as an `argparse.Namespace`) still load, atomic writers leave no
half-written file, and the wheel ships the library with its data.
"""
import argparse
import ast
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

import train  # tools at the repository root: setup.cfg puts the root on pytest's python path
import validate
from hub import publish
from tokenmixup_tools import checkpoints, datasets, files, runtime
from tokenmixup_tools.cli import UsageError
from tokenmixup_tools.evaluation import evaluate

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = REPO_ROOT / 'tokenmixup_tools'
SCRIPTS = sorted(REPO_ROOT.glob('*.py')) + sorted((REPO_ROOT / 'hub').glob('*.py'))


# ---------------------------------------------------------------------------------------------
# how the tools are put together

def _imported_top_level_names(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


@pytest.mark.parametrize('path', SCRIPTS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_no_script_imports_another_script(path):
    """train.py, validate.py and hub/ share code through tokenmixup_tools only."""
    scripts = {script.stem for script in REPO_ROOT.glob('*.py')} | {'hub'}
    own = 'hub' if path.parent.name == 'hub' else path.stem
    assert not _imported_top_level_names(path) & (scripts - {own})


def test_importing_hub_publish_or_validate_builds_no_parser():
    """`import hub.publish` neither imports another tool nor builds any argument parser; nor does `import
    validate` (its parser is built by `build_parser()`)."""
    code = (
        'import argparse, sys\n'
        'built = []\n'
        'init = argparse.ArgumentParser.__init__\n'
        'def counting_init(self, *args, **kwargs):\n'
        '    built.append(kwargs.get("description"))\n'
        '    init(self, *args, **kwargs)\n'
        'argparse.ArgumentParser.__init__ = counting_init\n'
        'import hub.publish\n'
        'print(built, "train" in sys.modules, "validate" in sys.modules)\n'
        'import validate\n'
        'print(built)\n')
    completed = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=120, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines() == ['[] False False', '[]']


def test_the_default_dataset_name_is_spelled_once_outside_the_tests():
    code = [path for path in sorted(REPO_ROOT.rglob('*.py')) if 'tests' not in path.relative_to(REPO_ROOT).parts]
    spelled = {str(path.relative_to(REPO_ROOT)): path.read_text().count('embedded/digits') for path in code}
    assert {path: count for path, count in spelled.items() if count} == {'tokenmixup_tools/datasets.py': 1}
    assert datasets.DEFAULT_DATASET == 'embedded/digits'


def test_models_holds_no_tool_code():
    """The checkpoint record and the embedded dataset live in tokenmixup_tools; models/ is the zoo."""
    for name in ('checkpoints.py', 'datasets.py', 'data'):
        assert not (REPO_ROOT / 'models' / name).exists(), name


def test_wheel_ships_every_tools_module_and_the_embedded_data(tmp_path):
    """`pip wheel .` (offline, no build isolation) holds tokenmixup_tools with data/uci_digits.npz.

    Built from a copy of the sources, so that no build/ folder of this checkout can leak into it."""
    source = tmp_path / 'src'
    source.mkdir()
    for name in ('setup.cfg', 'pyproject.toml', 'README.md', 'LICENSE'):
        shutil.copy2(REPO_ROOT / name, source / name)
    for name in ('tokenmixup', 'models', 'tokenmixup_tools'):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns('__pycache__'))
    env = dict(os.environ, PIP_NO_INDEX='1', PIP_DISABLE_PIP_VERSION_CHECK='1')
    completed = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', str(source), '--no-deps', '--no-build-isolation', '-q',
         '-w', str(tmp_path / 'dist')], capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    wheel, = (tmp_path / 'dist').glob('*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f'tokenmixup_tools/{path.name}' for path in TOOLS.glob('*.py')}
    expected |= {'tokenmixup_tools/data/uci_digits.npz', 'tokenmixup_tools/data/README.md'}
    assert expected <= names
    assert not any(name.startswith(('models/data/', 'models/checkpoints', 'models/datasets')) for name in names)


# ---------------------------------------------------------------------------------------------
# checkpoints: plain run arguments, and checkpoints of earlier versions

def _model_and_record(img_size: int = 8):
    model = timm.create_model('cct_2_3x2_htm_vtm', num_classes=10, img_size=img_size).eval()
    return model, checkpoints.describe_model(model, 'cct_2_3x2_htm_vtm', {'img_size': img_size})


@pytest.fixture
def legacy_checkpoint(tmp_path):
    """A checkpoint as earlier train.py versions wrote it: the run arguments as an argparse.Namespace."""
    model, record = _model_and_record()
    args = train.parse_args(['--epochs', '1', '--img-size', '8', '--interpolation', 'bilinear'])
    assert isinstance(args, argparse.Namespace)
    path = tmp_path / 'legacy.pth.tar'
    torch.save({'args': args, 'state_dict': model.state_dict(), 'model_config': record, 'arch': args.model,
                'epoch': 0}, path)
    return path


def test_a_legacy_checkpoint_needs_the_namespace_allowed_and_loads_as_a_dict(legacy_checkpoint):
    with pytest.raises(Exception, match='Namespace'):
        torch.load(legacy_checkpoint)  # weights_only=True: the reason new checkpoints store plain data
    run_args = checkpoints.load_training_checkpoint(str(legacy_checkpoint))['args']
    assert type(run_args) is dict and run_args['interpolation'] == 'bilinear' and run_args['epochs'] == 1


def test_validate_and_hub_publish_accept_a_legacy_checkpoint(legacy_checkpoint, tmp_path):
    """Both read the run's arguments from it: validate.py its eval preprocessing, hub.publish the recipe."""
    row, = validate.main(['--checkpoint', str(legacy_checkpoint)])
    assert (row['model'], row['img_size'], row['interpolation']) == ('cct_2_3x2_htm_vtm', 8, 'bilinear')
    local_dir = tmp_path / 'export'
    result = publish.main([str(legacy_checkpoint), '--repo-id', 'zoo-test/legacy', '--local-dir', str(local_dir),
                           '--no-push'])
    assert result['config']['pretrained_cfg']['tag'] == 'digits_1e'  # DATASET_EPOCHSe from the run's arguments
    assert result['config']['pretrained_cfg']['interpolation'] == 'bilinear'
    assert '| epochs | 1 |' in result['card']
    assert sorted(os.listdir(local_dir)) == ['README.md', 'config.json', 'model.safetensors']
    for name in os.listdir(local_dir):  # ordinary modes, although safetensors writes a private file
        assert (local_dir / name).stat().st_mode & 0o777 == files.ordinary_mode(), name


def test_save_training_checkpoint_stores_plain_run_arguments(tmp_path):
    args = argparse.Namespace(model='cct_2_3x2', scale=(0.85, 1.0), model_kwargs={'img_size': 8}, drop_path=None)
    path = tmp_path / 'checkpoint.pth.tar'
    checkpoints.save_training_checkpoint(str(path), {'args': args, 'epoch': 3})
    assert torch.load(path) == {'epoch': 3, 'args': {
        'model': 'cct_2_3x2', 'scale': [0.85, 1.0], 'model_kwargs': {'img_size': 8}, 'drop_path': None}}
    assert os.listdir(tmp_path) == ['checkpoint.pth.tar']
    with pytest.raises(ValueError, match=r'args\.device = device\(type=.cpu.\) is not plain data'):
        checkpoints.plain_run_arguments(argparse.Namespace(device=torch.device('cpu')))


def test_load_model_config_from_path_reads_a_folders_config_json(tmp_path):
    """The one private timm function used (`local-dir:` names): (pretrained_cfg, architecture, model_args)."""
    config = {'architecture': 'cct_2_3x2_htm', 'num_classes': 7, 'model_args': {'img_size': 16, 'tau': 1.5},
              'pretrained_cfg': {'tag': 'digits', 'input_size': [3, 16, 16]}}
    (tmp_path / 'config.json').write_text(json.dumps(config))
    pretrained_cfg, architecture, model_args = checkpoints.load_model_config_from_path(tmp_path)
    assert architecture == 'cct_2_3x2_htm' and model_args == {'img_size': 16, 'tau': 1.5}
    assert pretrained_cfg['tag'] == 'digits' and pretrained_cfg['num_classes'] == 7
    assert checkpoints.resolve_model_source(f'local-dir:{tmp_path}', {'kappa': 2}) == (
        'cct_2_3x2_htm', {'img_size': 16, 'tau': 1.5, 'kappa': 2})
    assert checkpoints.resolve_model_source('cct_2_3x2', {'kappa': 2}) == ('cct_2_3x2', {'kappa': 2})


def test_load_weights_names_the_keys_that_do_not_fit():
    model, _ = _model_and_record()
    state_dict = dict(model.state_dict())
    state_dict.pop('head.bias')
    with pytest.raises(ValueError, match=r'Missing key\(s\) in state_dict: "head.bias"'):
        checkpoints.load_weights(model, state_dict)


# ---------------------------------------------------------------------------------------------
# atomic files

def test_atomic_open_writes_an_ordinary_file_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / 'results.csv'
    with files.atomic_open(target) as f:
        f.write('old\n')
    assert target.read_text() == 'old\n'
    assert target.stat().st_mode & 0o777 == files.ordinary_mode()
    with pytest.raises(RuntimeError, match='interrupted'):
        with files.atomic_open(target) as f:
            f.write('half of the new')
            raise RuntimeError('interrupted')
    assert target.read_text() == 'old\n'
    assert os.listdir(tmp_path) == ['results.csv']
    with pytest.raises(ValueError, match="mode must be a write mode"):
        with files.atomic_open(target, 'a'):
            pass


@pytest.mark.parametrize('hard_link', [True, False])
def test_atomic_duplicate_links_or_copies(tmp_path, hard_link):
    source, target = tmp_path / 'last.pth.tar', tmp_path / 'model_best.pth.tar'
    source.write_bytes(b'new')
    target.write_bytes(b'old')
    assert files.atomic_duplicate(source, target, hard_link=hard_link) is hard_link
    assert target.read_bytes() == b'new'
    assert os.path.samefile(source, target) is hard_link
    assert sorted(os.listdir(tmp_path)) == ['last.pth.tar', 'model_best.pth.tar']


def test_replace_folder_swaps_a_whole_folder(tmp_path):
    staged, dest = tmp_path / 'staged', tmp_path / 'dest'
    staged.mkdir()
    dest.mkdir()
    (staged / 'new.txt').write_text('new')
    (dest / 'old.txt').write_text('old')
    files.replace_folder(staged, dest)
    assert sorted(os.listdir(tmp_path)) == ['dest'] and os.listdir(dest) == ['new.txt']
    assert dest.stat().st_mode & 0o777 == files.ordinary_mode(folder=True)


# ---------------------------------------------------------------------------------------------
# datasets, runtime and evaluation

def test_dataset_rules():
    assert datasets.dataset_num_classes(datasets.create_dataset_split(datasets.DEFAULT_DATASET, 'val')) == 10
    assert not datasets.needs_data_dir(datasets.DEFAULT_DATASET)
    assert not any(datasets.needs_data_dir(f'{prefix}/name') for prefix in ('hfds', 'hfids', 'tfds', 'wds'))
    assert datasets.needs_data_dir('') and datasets.needs_data_dir('torch/cifar100')
    with pytest.raises(UsageError, match='--data-dir'):
        datasets.create_dataset_split('torch/cifar100', 'train')
    with pytest.raises(UsageError, match="split must be 'train' or 'validation', got 'extra'"):
        datasets.create_dataset_split(datasets.DEFAULT_DATASET, 'extra')


def test_runtime_amp_setup():
    cpu = torch.device('cpu')
    assert runtime.default_device() in ('cuda', 'cpu')
    assert runtime.create_loss_scaler(cpu, enabled=True, dtype='float16') is None  # float16 scaling: CUDA only
    with runtime.create_autocast(cpu, enabled=True, dtype='bfloat16')():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
    with runtime.create_autocast(cpu, enabled=False)():
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ValueError, match="amp dtype must be one of .*got 'float8'"):
        runtime.amp_dtype('float8')


def test_evaluate_reports_loss_top1_and_top5_in_percent():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0]] * 4)
    targets = torch.tensor([0, 1, 4, 5])  # ranks 1, 2, 5 and 6
    model = torch.nn.Sequential()  # identity: the inputs are the logits
    metrics = evaluate(model, [(logits[:2], targets[:2]), (logits[2:], targets[2:])], torch.device('cpu'))
    assert metrics['top1'] == pytest.approx(25.0) and metrics['top5'] == pytest.approx(75.0)
    assert metrics['loss'] == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)
