"""train.py end to end on the CPU, on data the tests write (issue: train.py and validate.py).

Runs are short (one or two epochs at a small image size) but go through the real script: timm's
datasets and loaders, the TokenMixup task, the checkpoint saver and the summary writer.
"""
import csv
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

import train
from tokenmixup_tools.cli import UsageError
from tokenmixup_tools.checkpoints import load_training_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
# the configs of the paper's rows (the others are recipes for other datasets, shared by a study's arms)
PAPER_CONFIGS = sorted(path for path in (REPO_ROOT / 'configs').glob('*.yaml')
                       if path.stem.startswith(('cifar', 'imagenet')))
QUICK = ['--batch-size', '64', '--workers', '0', '--img-size', '16', '--warmup-epochs', '0', '--log-interval', '1000',
         '--no-progress']


def _summary(run_dir: Path) -> list:
    with open(run_dir / 'summary.csv') as f:
        return list(csv.DictReader(f))


def _run(output: Path, *flags: str) -> Path:
    result = train.main([*QUICK, '--output', str(output), '--experiment', 'run', *flags])
    return Path(result['output_dir'])


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory) -> Path:
    """Three epochs of the quickstart model on the embedded digits."""
    return _run(tmp_path_factory.mktemp('digits'), '--epochs', '3', '--lr', '2e-3')


def test_embedded_digits_run_learns(digits_run):
    """The training loss falls and the validation top-1 rises well above chance (10%)."""
    rows = _summary(digits_run)
    assert [int(row['epoch']) for row in rows] == [0, 1, 2]
    assert float(rows[-1]['train_loss']) < float(rows[0]['train_loss'])
    assert float(rows[-1]['eval_top1']) > 50.0


def test_summary_has_timm_columns_and_the_tokenmixup_columns(digits_run):
    """timm's summary columns plus, per HTM block l, mixed samples, replaced tokens and difficulty."""
    with open(digits_run / 'summary.csv') as f:
        header = next(csv.reader(f))
    htm_block = 1  # cct_2_3x2_htm_vtm: HTM in front of block 1 (depth 2)
    for column in ('epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr',
                   f'train_htm{htm_block}_mixed_samples', f'train_htm{htm_block}_replaced_tokens',
                   f'train_htm{htm_block}_difficulty'):
        assert column in header
    rows = _summary(digits_run)
    assert 0.0 <= float(rows[-1][f'train_htm{htm_block}_mixed_samples']) <= 64.0
    assert float(rows[-1][f'train_htm{htm_block}_difficulty']) > 0.0


def test_a_finished_run_draws_its_curriculum(digits_run):
    """With matplotlib installed (the test extra), the run folder gets curriculum.png (visualize.py curriculum)."""
    from PIL import Image

    from tokenmixup_tools.figures import CURRICULUM_FIGURE_PX
    with Image.open(digits_run / 'curriculum.png') as image:
        assert image.format == 'PNG' and image.size == CURRICULUM_FIGURE_PX


def test_checkpoint_records_the_full_model_configuration(digits_run):
    """Checkpoints record name, classes and every model kwarg, and are never left half-written."""
    checkpoint = load_training_checkpoint(str(digits_run / 'last.pth.tar'))
    config = checkpoint['model_config']
    assert config['architecture'] == 'cct_2_3x2_htm_vtm'
    assert config['num_classes'] == 10
    kwargs = config['model_kwargs']
    assert kwargs['img_size'] == 16
    assert kwargs['htm_layers'] == [1] and kwargs['vtm_layers'] == [1]
    for key in ('tau', 'rho', 'kappa', 'scorenet_lambda', 'scorenet_pool', 'scorenet_detach', 'saliency',
                'vtm_detach', 'mask_reference'):
        assert key in kwargs
    assert checkpoint['epoch'] == 2
    assert {'state_dict', 'optimizer', 'lr_scheduler', 'args'} <= set(checkpoint)
    leftovers = [name for name in os.listdir(digits_run) if 'tmp' in name]
    assert leftovers == []


def test_checkpoints_load_with_plain_torch_load(digits_run):
    """The run arguments are stored as plain data, so torch.load's default weights_only=True reads every
    checkpoint file of the run; args.yaml holds the same arguments."""
    saved = [digits_run / name for name in sorted(os.listdir(digits_run)) if name.endswith('.pth.tar')]
    assert {path.name for path in saved} >= {'last.pth.tar', 'model_best.pth.tar', 'checkpoint-2.pth.tar'}
    for path in saved:
        checkpoint = torch.load(path)
        assert type(checkpoint['args']) is dict, path.name
    assert checkpoint['args']['model'] == 'cct_2_3x2_htm_vtm' and checkpoint['args']['scale'] == [0.85, 1.0]
    assert yaml.safe_load((digits_run / 'args.yaml').read_text()) == checkpoint['args']


def _write_image_folder(root: Path, num_classes: int = 3, per_class: int = 12) -> None:
    """An ImageFolder tree (train/ and validation/) of small PNGs whose class is their colour."""
    rng = np.random.default_rng(0)
    for split in ('train', 'validation'):
        for label in range(num_classes):
            folder = root / split / f'class_{label}'
            folder.mkdir(parents=True)
            for index in range(per_class):
                pixels = rng.integers(0, 40, size=(20, 20, 3), dtype=np.uint8)
                pixels[..., label] += 200
                Image.fromarray(pixels).save(folder / f'{index}.png')


def test_image_folder_dataset(tmp_path):
    """Any timm dataset works: an ImageFolder tree written by the test, classes counted from it."""
    _write_image_folder(tmp_path / 'data')
    run_dir = _run(tmp_path / 'out', '--dataset', '', '--data-dir', str(tmp_path / 'data'), '--epochs', '1',
                   '--batch-size', '12', '--model', 'cct_2_3x2_htm')
    checkpoint = load_training_checkpoint(str(run_dir / 'last.pth.tar'))
    assert checkpoint['model_config']['num_classes'] == 3
    assert len(_summary(run_dir)) == 1


def _write_cifar100(root: Path, per_split: dict) -> None:
    """A CIFAR-100 folder in torchvision's on-disk layout (cifar-100-python/{train,test,meta})."""
    folder = root / 'cifar-100-python'
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        entry = {
            'data': rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8),
            'fine_labels': [int(label) for label in rng.integers(0, 100, size=count)],
            'coarse_labels': [0] * count,
        }
        with open(folder / split, 'wb') as f:
            pickle.dump(entry, f)
    with open(folder / 'meta', 'wb') as f:
        pickle.dump({'fine_label_names': [f'class_{i}' for i in range(100)]}, f)


def test_cifar100_folder_in_torchvision_layout(tmp_path, monkeypatch):
    """`--dataset torch/cifar100` reads a folder the test wrote; torchvision's checksums are pointed at
    the test's files (the real files' checksums cannot match), the loading code is torchvision's own."""
    _write_cifar100(tmp_path / 'data', {'train': 128, 'test': 64})
    import hashlib
    folder = tmp_path / 'data' / 'cifar-100-python'
    digest = {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in ('train', 'test', 'meta')}
    cifar = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cifar, 'train_list', [['train', digest['train']]])
    monkeypatch.setattr(cifar, 'test_list', [['test', digest['test']]])
    monkeypatch.setattr(cifar, 'meta', dict(cifar.meta, md5=digest['meta']))
    run_dir = _run(tmp_path / 'out', '--dataset', 'torch/cifar100', '--data-dir', str(tmp_path / 'data'),
                   '--model', 'cct_2_3x2_vtm', '--img-size', '32', '--epochs', '1')
    checkpoint = load_training_checkpoint(str(run_dir / 'last.pth.tar'))
    assert checkpoint['model_config']['num_classes'] == 100
    assert len(_summary(run_dir)) == 1


def test_mixup_cutmix_and_htm_stack(tmp_path):
    """Input mixup/cutmix and HTM together: HTM mixes the already mixed soft targets (paper Sec. 3.5)."""
    run_dir = _run(tmp_path, '--epochs', '1', '--mixup', '0.8', '--cutmix', '1.0', '--tau', '100', '--rho', '0')
    row = _summary(run_dir)[-1]
    assert float(row['train_htm1_mixed_samples']) > 0
    assert float(row['train_htm1_replaced_tokens']) > 0
    assert np.isfinite(float(row['train_loss']))


def test_bf16_autocast_ema_and_gradient_clipping(tmp_path):
    """bf16 autocast on the CPU, model EMA and gradient-norm clipping run together."""
    run_dir = _run(tmp_path, '--epochs', '1', '--amp', '--amp-dtype', 'bfloat16', '--model-ema',
                   '--model-ema-decay', '0.9', '--clip-grad', '1.0')
    checkpoint = load_training_checkpoint(str(run_dir / 'last.pth.tar'))
    assert 'state_dict_ema' in checkpoint
    assert np.isfinite(float(_summary(run_dir)[-1]['train_loss']))


def test_yaml_config_sets_defaults_and_flags_override(tmp_path):
    """-c FILE works as in timm: its keys are defaults, the command line wins, unknown keys are refused."""
    config = tmp_path / 'run.yaml'
    config.write_text('lr: 0.0123\ntau: 1.5\nhtm_layers: [0]\nepochs: 7\n')
    args = train.parse_args(['-c', str(config), '--epochs', '2'])
    assert (args.lr, args.tau, args.htm_layers, args.epochs) == (0.0123, 1.5, [0], 2)
    assert train.parse_args([]).lr != 0.0123  # no state left behind by the previous parse
    config.write_text('learning_rate: 0.1\n')
    with pytest.raises(UsageError, match='learning_rate'):
        train.parse_args(['-c', str(config)])


@pytest.mark.parametrize('config', PAPER_CONFIGS, ids=lambda path: path.stem)
def test_paper_configs_parse_and_carry_the_official_settings(config):
    """Each paper row's config parses and states the recipe's key settings explicitly."""
    text = config.read_text()
    args = train.parse_args(['-c', str(config)])
    for key in ('lr', 'weight_decay', 'epochs', 'batch_size', 'opt', 'sched', 'smoothing', 'mixup', 'cutmix',
                'hflip', 'scale', 'mean', 'std', 'crop_pct', 'amp', 'seed', 'htm_layers', 'vtm_layers'):
        assert f'\n{key}:' in text, f'{config.name} does not set {key}'
    if config.stem.startswith('cifar'):
        assert args.epochs == 1500 and args.cooldown_epochs == 10 and args.batch_size == 128
        assert args.aa == 'rand-m9-mstd0.5-inc1' and args.reprob == 0.25 and args.seed == 42
    else:
        assert args.opt == 'sgd' and args.lr == 0.015 and args.clip_grad == 1.0 and args.epochs == 30
        assert args.mean == [0.5, 0.5, 0.5] and args.pretrained


def test_resume_after_a_killed_run_finishes_the_schedule(tmp_path):
    """A run killed (SIGKILL, from its own save hook, right after its first checkpoint) resumes from it: epoch,
    optimizer, scheduler restored, one summary without repeated epochs, and the final checkpoint at the last
    epoch."""
    flags = [*QUICK, '--output', str(tmp_path), '--experiment', 'run', '--epochs', '3']
    killer = (
        'import os, signal, sys, train\n'
        'save = train.AtomicCheckpointSaver.save_checkpoint\n'
        'def save_then_die(self, epoch, metric=None):\n'
        '    result = save(self, epoch, metric)\n'
        '    if epoch == 0:\n'
        '        os.kill(os.getpid(), signal.SIGKILL)\n'
        '    return result\n'
        'train.AtomicCheckpointSaver.save_checkpoint = save_then_die\n'
        'train.main(sys.argv[1:])\n')
    completed = subprocess.run([sys.executable, '-c', killer, *flags], cwd=REPO_ROOT, capture_output=True,
                               env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=600)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]
    run_dir = tmp_path / 'train' / 'run'
    assert [int(row['epoch']) for row in _summary(run_dir)] == [0]
    before = load_training_checkpoint(str(run_dir / 'last.pth.tar'))

    result = train.main([*QUICK, '--output', str(tmp_path), '--resume', str(run_dir / 'last.pth.tar'), '--epochs', '3'])
    assert Path(result['output_dir']) == run_dir
    assert [int(row['epoch']) for row in _summary(run_dir)] == [0, 1, 2]
    after = load_training_checkpoint(str(run_dir / 'last.pth.tar'))
    assert after['epoch'] == 2

    def optimizer_steps(checkpoint):
        return int(next(iter(checkpoint['optimizer']['state'].values()))['step'])

    steps_per_epoch = optimizer_steps(before) // (before['epoch'] + 1)
    assert optimizer_steps(after) == 3 * steps_per_epoch  # the optimizer went on from its saved state
    assert after['lr_scheduler']['t_initial'] == before['lr_scheduler']['t_initial']


@pytest.mark.slow
def test_torchrun_two_processes_gloo_write_one_summary(tmp_path):
    """`torchrun --nproc_per_node 2 train.py` on the CPU (gloo): one run folder, one summary row per epoch."""
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29531',
               str(REPO_ROOT / 'train.py'), *QUICK, '--batch-size', '32', '--output', str(tmp_path),
               '--experiment', 'ddp', '--epochs', '1', '--device', 'cpu']
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = _summary(tmp_path / 'train' / 'ddp')
    assert len(rows) == 1 and float(rows[0]['eval_top1']) >= 0
    assert 'process 1 of 2' in completed.stderr + completed.stdout


def test_tokenmixup_flags_map_to_model_kwargs_and_an_empty_list_disables():
    """--htm-layers with no value disables HTM (docs/design.md §3: an empty tuple); other flags reach the model."""
    args = train.parse_args(['--htm-layers', '--vtm-layers', '1', '--kappa', '4', '--no-vtm-detach',
                             '--mask-reference', 'first'])
    model, record = train.build_model(args, num_classes=10)
    settings = model.tokenmixup_cfg
    assert settings.htm_layers == () and settings.vtm_layers == (1,) and settings.kappa == 4
    assert settings.mask_reference == 'first' and settings.vtm_detach is False
    assert not any('scorenet' in name for name, _ in model.named_parameters())
    assert record['model_kwargs']['htm_layers'] == [] and record['model_kwargs']['kappa'] == 4


@pytest.mark.parametrize('links_work', [True, False], ids=['hard-link', 'copy'])
def test_checkpoint_duplicates_replace_the_target_whole(tmp_path, monkeypatch, links_work):
    """checkpoint-N / model_best copies of last.pth.tar go to a temp name and are renamed over the target,
    whether the filesystem allows hard links or not; no temp file is left behind."""
    if not links_work:
        def no_links(src, dst):
            raise OSError('no hard links here')
        monkeypatch.setattr(os, 'link', no_links)
    saver = train.AtomicCheckpointSaver.__new__(train.AtomicCheckpointSaver)
    saver.can_hardlink = True
    source, target = tmp_path / 'last.pth.tar', tmp_path / 'model_best.pth.tar'
    source.write_bytes(b'new checkpoint')
    target.write_bytes(b'old checkpoint')
    saver._duplicate(str(source), str(target))
    assert target.read_bytes() == b'new checkpoint'
    assert saver.can_hardlink is links_work
    assert sorted(path.name for path in tmp_path.iterdir()) == ['last.pth.tar', 'model_best.pth.tar']


def test_ablation_switches_train_end_to_end(tmp_path):
    """The paper's Table 4 switches work from train.py's command line and are recorded in the checkpoint."""
    run_dir = _run(tmp_path, '--epochs', '1', '--pairing', 'random', '--token-selection', 'random',
                   '--label-mixing', 'count', '--tau', '100')
    row = _summary(run_dir)[-1]
    assert float(row['train_htm1_mixed_samples']) > 0
    assert np.isfinite(float(row['train_loss']))
    kwargs = load_training_checkpoint(str(run_dir / 'last.pth.tar'))['model_config']['model_kwargs']
    assert (kwargs['pairing'], kwargs['token_selection'], kwargs['label_mixing']) == ('random', 'random', 'count')
