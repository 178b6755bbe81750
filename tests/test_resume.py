"""Runs that resume exactly, run folders that never mix two runs, and a training loop that survives a
non-finite loss (README "Reliability"; docs/design.md §6.1).

Every run here is short (16x16 digits, batch 64, workers 0) and goes through the real `train.main`. A kill is
simulated by making the checkpoint saver raise right after (or right before) it saves a given epoch.
"""
import csv
import logging
import os
from pathlib import Path

import pytest
import torch

import train
from tokenmixup_tools.checkpoints import load_training_checkpoint
from tokenmixup_tools.cli import UsageError

QUICK = ['--batch-size', '64', '--workers', '0', '--img-size', '16', '--warmup-epochs', '0', '--log-interval', '1000',
         '--no-progress']
# mixup/cutmix draw from numpy, the augmentations from python's random, dropout and shuffling from torch
RECIPE = ['--epochs', '3', '--mixup', '0.8', '--cutmix', '1.0', '--tau', '100', '--pairing', 'random']

pytestmark = pytest.mark.usefixtures('one_torch_thread')


class Killed(Exception):
    """Stands for the process dying at a given point of a run."""


def _summary(run_dir: Path) -> list:
    with open(run_dir / 'summary.csv', newline='') as f:
        return list(csv.DictReader(f))


def _train(output: Path, *flags: str) -> Path:
    return Path(train.main([*QUICK, '--output', str(output), '--experiment', 'run', *flags])['output_dir'])


def _kill_at(monkeypatch, epoch: int, before_saving: bool = False) -> None:
    """Make the run die when it saves `epoch` (after writing that checkpoint, or just before it)."""
    original = train.AtomicCheckpointSaver.save_checkpoint

    def save_then_die(self, saved_epoch, metric=None):
        if saved_epoch == epoch and before_saving:
            raise Killed(f'killed before saving epoch {epoch}')
        result = original(self, saved_epoch, metric)
        if saved_epoch == epoch:
            raise Killed(f'killed after saving epoch {epoch}')
        return result

    monkeypatch.setattr(train.AtomicCheckpointSaver, 'save_checkpoint', save_then_die)


def _killed_run(tmp_path: Path, monkeypatch, epoch: int, *flags: str, before_saving: bool = False) -> Path:
    with monkeypatch.context() as patch:
        _kill_at(patch, epoch, before_saving)
        with pytest.raises(Killed):
            _train(tmp_path, *flags)
    return tmp_path / 'train' / 'run'


def _resume(run_dir: Path, *flags: str) -> dict:
    return train.main([*QUICK, '--resume', str(run_dir / 'last.pth.tar'), *flags])


# ---------------------------------------------------------------------------------------------
# exact resume

@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp('whole'), *RECIPE)


def test_a_killed_and_resumed_run_equals_the_uninterrupted_run(uninterrupted, tmp_path, monkeypatch):
    """Same per-epoch losses and metrics and the same final weights, bit for bit (CPU, fixed seed, workers 0),
    with nothing but --resume given again."""
    run_dir = _killed_run(tmp_path, monkeypatch, 0, *RECIPE)
    result = _resume(run_dir)
    assert Path(result['output_dir']) == run_dir
    resumed, whole = _summary(run_dir), _summary(uninterrupted)
    assert [row['epoch'] for row in resumed] == ['0', '1', '2']
    assert resumed == whole
    weights = load_training_checkpoint(str(run_dir / 'last.pth.tar'))['state_dict']
    expected = load_training_checkpoint(str(uninterrupted / 'last.pth.tar'))['state_dict']
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)


def test_a_run_killed_while_saving_has_one_summary_row_per_epoch(tmp_path, monkeypatch):
    """Killed after epoch 1's summary row but before its checkpoint: the resumed run redoes epoch 1 and the
    summary holds each epoch once."""
    run_dir = _killed_run(tmp_path, monkeypatch, 1, '--epochs', '3', before_saving=True)
    assert [row['epoch'] for row in _summary(run_dir)] == ['0', '1']
    assert load_training_checkpoint(str(run_dir / 'last.pth.tar'))['epoch'] == 0
    _resume(run_dir)
    assert [row['epoch'] for row in _summary(run_dir)] == ['0', '1', '2']


# ---------------------------------------------------------------------------------------------
# a resumed run continues the run that was saved

@pytest.fixture(scope='module')
def stopped_run(tmp_path_factory) -> Path:
    """A run with non-default settings (tau 1.0, 2 epochs), killed after its first epoch."""
    root = tmp_path_factory.mktemp('stopped')
    with pytest.MonkeyPatch.context() as patch:
        _kill_at(patch, 0)
        with pytest.raises(Killed):
            _train(root, '--tau', '1.0', '--epochs', '2', '--lr', '1e-3')
    return root / 'train' / 'run'


def test_resume_takes_the_saved_runs_arguments_as_defaults(stopped_run):
    args = train.parse_args(['--resume', str(stopped_run / 'last.pth.tar')])
    assert (args.tau, args.epochs, args.lr, args.img_size, args.batch_size) == (1.0, 2, 1e-3, 16, 64)


@pytest.mark.parametrize('flags, flag', [
    (['--model', 'cct_2_3x2'], '--model'),
    (['--tau', '2.0'], '--tau'),
    (['--htm-layers'], '--htm-layers'),
    (['--tokenmixup-preset', 'cct_cifar10_htm'], '--tokenmixup-preset'),
    (['--dataset', 'torch/cifar10'], '--dataset'),
    (['--img-size', '32'], '--img-size'),
])
def test_resume_refuses_a_change_of_model_tokenmixup_or_data(stopped_run, flags, flag):
    with pytest.raises(UsageError, match=rf'trained with {flag} .* would make it another run'):
        train.parse_args(['--resume', str(stopped_run / 'last.pth.tar'), *flags])


def test_a_config_given_on_resume_counts_as_flags(stopped_run, tmp_path):
    """-c FILE with --resume: its keys are checked like flags given on the command line."""
    config = tmp_path / 'c.yaml'
    config.write_text('tau: 3.0\n')
    with pytest.raises(UsageError, match='--tau'):
        train.parse_args(['-c', str(config), '--resume', str(stopped_run / 'last.pth.tar')])
    config.write_text('workers: 0\nlog_interval: 5\n')
    args = train.parse_args(['-c', str(config), '--resume', str(stopped_run / 'last.pth.tar')])
    assert args.tau == 1.0 and args.log_interval == 5


def test_resume_refuses_to_shorten_and_warns_when_it_extends(stopped_run, caplog):
    with pytest.raises(UsageError, match='can be extended, not shortened'):
        train.parse_args(['--resume', str(stopped_run / 'last.pth.tar'), '--epochs', '1'])
    with caplog.at_level(logging.WARNING):
        args = train.parse_args(['--resume', str(stopped_run / 'last.pth.tar'), '--epochs', '4', '--lr', '5e-4'])
    assert args.epochs == 4
    assert 'extending the run from 2 epochs' in caplog.text
    assert "--lr 0.0005 differs from the run's 0.001" in caplog.text


def test_an_extended_run_rebuilds_its_schedule_and_keeps_its_args_yaml(tmp_path, monkeypatch):
    run_dir = _killed_run(tmp_path, monkeypatch, 0, '--epochs', '2')
    args_yaml = (run_dir / 'args.yaml').read_bytes()
    _resume(run_dir, '--epochs', '3')
    assert [row['epoch'] for row in _summary(run_dir)] == ['0', '1', '2']
    checkpoint = load_training_checkpoint(str(run_dir / 'last.pth.tar'))
    assert checkpoint['lr_scheduler']['t_initial'] == 3 and checkpoint['args']['epochs'] == 3
    assert (run_dir / 'args.yaml').read_bytes() == args_yaml  # written once, when the run started


def test_resuming_a_finished_run_says_there_is_nothing_to_do(tmp_path, capsys):
    run_dir = _train(tmp_path, '--epochs', '1')
    rows = _summary(run_dir)
    result = _resume(run_dir)
    assert result['finished'] is True
    assert 'nothing to do: the run finished at epoch 0' in capsys.readouterr().out
    assert _summary(run_dir) == rows


# ---------------------------------------------------------------------------------------------
# run folders and checkpoint files

def test_a_used_run_folder_is_refused_unless_forced(tmp_path):
    run_dir = _train(tmp_path, '--epochs', '1')
    with pytest.raises(UsageError, match='already holds a run.*--resume.*--force'):
        _train(tmp_path, '--epochs', '1')
    assert [row['epoch'] for row in _summary(run_dir)] == ['0']
    _train(tmp_path, '--epochs', '1', '--force')
    assert [row['epoch'] for row in _summary(run_dir)] == ['0']  # a new run, not appended to the old one


def test_the_last_checkpoint_is_never_missing_while_a_new_one_is_saved(tmp_path, monkeypatch):
    """Every file operation that touches last.pth.tar replaces it in one step; nothing removes it first."""
    events = []
    real_remove, real_replace = os.remove, os.replace

    def remove(path, *args, **kwargs):
        assert os.path.basename(path) != 'last.pth.tar', 'last.pth.tar was removed'
        return real_remove(path, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == 'last.pth.tar':
            events.append(os.path.exists(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, 'remove', remove)
    monkeypatch.setattr(os, 'unlink', remove)
    monkeypatch.setattr(os, 'replace', replace)
    run_dir = _train(tmp_path, '--epochs', '2')
    assert events[0] is False and all(events[1:]) and len(events) >= 2
    assert (run_dir / 'last.pth.tar').exists()


# ---------------------------------------------------------------------------------------------
# non-finite losses and bad labels

def test_a_non_finite_loss_skips_the_update_and_is_counted(tmp_path, monkeypatch, caplog):
    original = train.TokenMixupTask.forward
    calls = {'n': 0}

    def forward(self, input, target):
        result = original(self, input, target)
        calls['n'] += 1
        if calls['n'] == 2:  # the second step of the run
            result = dict(result, loss=result['loss'] * float('nan'))
        return result

    monkeypatch.setattr(train.TokenMixupTask, 'forward', forward)
    with caplog.at_level(logging.WARNING):
        run_dir = _train(tmp_path, '--epochs', '1')
    row = _summary(run_dir)[0]
    assert float(row['train_skipped_updates']) == 1
    assert float(row['train_loss']) == float(row['train_loss'])  # not NaN: the skipped step is left out
    assert 'the loss is not finite' in caplog.text and 'update skipped' in caplog.text
    checkpoint = load_training_checkpoint(str(run_dir / 'last.pth.tar'))
    assert all(torch.isfinite(value).all() for value in checkpoint['state_dict'].values())
    steps = int(next(iter(checkpoint['optimizer']['state'].values()))['step'])
    assert steps == calls['n'] - 1  # every step but the skipped one updated the weights


def test_out_of_range_labels_are_caught_on_the_host_before_the_device(tmp_path):
    with pytest.raises(UsageError, match='labels from 0 to 9, but the model has 5 classes'):
        _train(tmp_path, '--epochs', '1', '--num-classes', '5')
