"""train.py's timm flags beyond the basics (README "Training recipes"; docs/design.md §6.1).

Gradient accumulation, channels-last, layer-wise LR decay, --input-size/--in-chans, --opt-kwargs, timm's LR
scaling (--lr-base*), repeated augmentation, BCE, SyncBatchNorm, the prefetcher, gradient checkpointing and wandb
logging: each parses, has its effect and fits the resume rules. Runs are one epoch on the embedded digits with
--workers 0; the rest are unit-level checks of the optimizer groups, the LR rule and the training step. The
torchrun test (repeated augmentation with accumulation under DDP) is marked slow.
"""
import argparse
import csv
import json
import logging
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from timm.loss import BinaryCrossEntropy

import tokenmixup.horizontal
import train
from tokenmixup import one_hot_target
from tokenmixup_tools.checkpoints import load_training_checkpoint
from tokenmixup_tools.cli import UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK = ['--workers', '0', '--warmup-epochs', '0', '--log-interval', '1000', '--no-progress', '--epochs', '1']
SMALL = [*QUICK, '--img-size', '16', '--batch-size', '64']
TRAIN_STEPS = 1497 // 64  # embedded digits, batch 64, the last partial batch dropped: 23 micro-batches

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _summary(run_dir: Path) -> list:
    with open(run_dir / 'summary.csv', newline='') as f:
        return list(csv.DictReader(f))


def _train(output: Path, *flags: str) -> Path:
    return Path(train.main([*flags, '--output', str(output), '--experiment', 'run'])['output_dir'])


def _optimizer_steps(checkpoint: dict) -> int:
    return int(next(iter(checkpoint['optimizer']['state'].values()))['step'])


# ---------------------------------------------------------------------------------------------
# gradient accumulation

@pytest.fixture(scope='module')
def accum_run(tmp_path_factory) -> Path:
    """`--grad-accum-steps 2 --input-size 3 32 32`: a user's command line, one epoch."""
    return _train(tmp_path_factory.mktemp('accum'), *QUICK, '--grad-accum-steps', '2', '--input-size', '3', '32', '32')


def test_grad_accum_and_input_size_run(accum_run):
    """23 micro-batches of 64 make 12 updates (11 of two, the last of one); the model is built for 32x32 and 3
    channels, the LR is resolved for the global batch of 128 (adamw: sqrt scaling) and recorded."""
    checkpoint = load_training_checkpoint(str(accum_run / 'last.pth.tar'))
    assert _optimizer_steps(checkpoint) == (TRAIN_STEPS + 1) // 2 == 12
    kwargs = checkpoint['model_config']['model_kwargs']
    assert kwargs['img_size'] == 32 and kwargs['in_chans'] == 3
    assert checkpoint['args']['lr'] == pytest.approx(2e-3 * 2 ** 0.5, rel=1e-12)
    assert checkpoint['args']['input_size'] == [3, 32, 32] and checkpoint['args']['grad_accum_steps'] == 2
    row, = _summary(accum_run)
    assert 0.0 <= float(row['train_htm1_mixed_samples']) <= 64.0  # per micro-batch of 64
    assert float(row['train_skipped_updates']) == 0


def _digits_batches(count: int, batch_size: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch_size, 3, 16, 16, generator=generator),
             torch.randint(0, 10, (batch_size,), generator=generator)) for _ in range(count)]


def _step_args(*flags: str) -> argparse.Namespace:
    args = train.parse_args(['--no-progress', '--log-interval', '1000', *flags])
    args.rank, args.distributed = 0, False
    return args


def _train_steps(model: nn.Module, batches, accum: int, lr: float = 0.5):
    """One train_one_epoch over `batches` with plain SGD (timm's 'momentum' with momentum 0, no weight decay)."""
    args = _step_args('--grad-accum-steps', str(accum), '--opt', 'momentum', '--momentum', '0', '--weight-decay', '0',
                      '--lr', str(lr))
    task = train.TokenMixupTask(model, 10, smoothing=0.1, verbose=False)
    optimizer = train.create_optimizer(model, args)
    return train.train_one_epoch(0, task, batches, optimizer, args, torch.device('cpu'))


def _base_model() -> nn.Module:
    """CCT-2 without TokenMixup and without any dropout: a deterministic training forward."""
    return timm.create_model('cct_2_3x2', num_classes=10, img_size=16, drop_path_rate=0., attn_drop_rate=0.)


def test_two_micro_batches_of_32_make_the_update_of_one_batch_of_64():
    torch.manual_seed(0)
    start = _base_model().state_dict()
    (images, labels), = _digits_batches(1, 64)
    whole, accumulated = _base_model(), _base_model()
    whole.load_state_dict(start)
    accumulated.load_state_dict(start)
    _, updates_whole = _train_steps(whole, [(images, labels)], accum=1)
    _, updates_accumulated = _train_steps(accumulated, [(images[:32], labels[:32]), (images[32:], labels[32:])],
                                          accum=2)
    assert updates_whole == updates_accumulated == 1
    moved = max((whole.state_dict()[key] - start[key]).abs().max().item() for key in start)
    assert moved > 1e-3  # the update is not trivially small
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_a_non_finite_micro_batch_skips_its_whole_update_once(monkeypatch, caplog):
    """Four micro-batches, two per update, the second one NaN: the first update is skipped (counted once), the
    second is applied, so the weights are those of training on the last two micro-batches alone."""
    torch.manual_seed(0)
    start = _base_model().state_dict()
    batches = _digits_batches(4, 16)
    reference = _base_model()
    reference.load_state_dict(start)
    _train_steps(reference, batches[2:], accum=2)

    original = train.TokenMixupTask.forward
    calls = {'n': 0}

    def forward(self, input, target):
        result = original(self, input, target)
        calls['n'] += 1
        return dict(result, loss=result['loss'] * float('nan')) if calls['n'] == 2 else result

    monkeypatch.setattr(train.TokenMixupTask, 'forward', forward)
    model = _base_model()
    model.load_state_dict(start)
    with caplog.at_level(logging.WARNING):
        metrics, updates = _train_steps(model, batches, accum=2)
    assert updates == 2 and metrics['skipped_updates'] == 1
    assert torch.isfinite(torch.tensor(metrics['loss']))  # the skipped update's micro-batches are left out
    assert 'update skipped (the whole update of 2 micro-batches)' in caplog.text
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_htm_pairs_within_each_micro_batch_and_its_statistics_are_per_micro_batch(monkeypatch):
    """HTM sees one micro-batch at a time: every horizontal_mix call gets the 32 samples of its micro-batch and
    partners index into them; the epoch's htm{l}_mixed_samples is the mean over micro-batches (0..32), and the
    ScoreNet loss reaches the weights through the accumulated gradients."""
    calls, mixed = [], []
    original_mix = tokenmixup.horizontal.horizontal_mix

    def recording_mix(x, y, saliency, easy, rho, **kwargs):
        result = original_mix(x, y, saliency, easy, rho, **kwargs)
        calls.append((x.shape[0], int(result.partner.max())))
        return result

    monkeypatch.setattr(tokenmixup.horizontal, 'horizontal_mix', recording_mix)
    original_forward = train.TokenMixupTask.forward

    def recording_forward(self, input, target):
        result = original_forward(self, input, target)
        mixed.append(float(result['stats'][1].mixed_samples))
        return result

    monkeypatch.setattr(train.TokenMixupTask, 'forward', recording_forward)
    model = timm.create_model('cct_2_3x2_htm', num_classes=10, img_size=16, tau=100.0, rho=0.0)
    scorenet_before = {name: value.clone() for name, value in model.state_dict().items() if 'scorenet' in name}
    metrics, updates = _train_steps(model, _digits_batches(2, 32), accum=2, lr=0.05)
    assert updates == 1
    assert calls and all(batch == 32 and partner < 32 for batch, partner in calls)
    assert metrics['htm1_mixed_samples'] == pytest.approx(sum(mixed) / len(mixed))
    assert 0 < metrics['htm1_mixed_samples'] <= 32
    assert any(not torch.equal(model.state_dict()[name], value) for name, value in scorenet_before.items())


# ---------------------------------------------------------------------------------------------
# the learning rate

@pytest.mark.parametrize('flags, world_size, expected, scale', [
    ([], 1, 2e-3, 'sqrt'),  # the quickstart: batch 64, adamw
    (['--batch-size', '32'], 2, 2e-3, 'sqrt'),  # torchrun 2 x 32
    (['--batch-size', '256'], 1, 4e-3, 'sqrt'),
    (['--grad-accum-steps', '4'], 1, 4e-3, 'sqrt'),
    (['--opt', 'lamb', '--batch-size', '16'], 1, 1e-3, 'sqrt'),
    (['--opt', 'sgd', '--batch-size', '128'], 1, 4e-3, 'linear'),
    (['--opt', 'lion', '--batch-size', '32'], 1, 1e-3, 'linear'),
    (['--batch-size', '128', '--lr-base-scale', 'linear'], 1, 4e-3, 'linear'),
    (['--opt', 'sgd', '--lr-base', '0.1', '--lr-base-size', '256', '--batch-size', '128'], 4, 0.2, 'linear'),
    (['--lr', '0.01', '--batch-size', '512'], 1, 0.01, None),  # --lr given: no scaling
])
def test_lr_follows_timms_rule(flags, world_size, expected, scale):
    lr, used = train.resolve_lr(train.parse_args(flags), world_size)
    assert used == scale
    assert lr == pytest.approx(expected, rel=1e-12)


def test_the_quickstart_keeps_its_lr_exactly():
    args = train.parse_args([])
    assert args.lr is None
    assert train.resolve_lr(args, 1) == (0.002, 'sqrt')  # == 2e-3 exactly: the quickstart's lr


# ---------------------------------------------------------------------------------------------
# the resume rules

def test_new_flags_fit_the_resume_rules(accum_run, caplog):
    assert {'in_chans', 'input_size'} <= set(train.RESUME_FIXED)
    assert {'log_wandb', 'wandb_project', 'wandb_tags', 'wandb_resume_id', 'grad_checkpointing'} <= set(
        train.RESUME_FREE)
    warned = ('grad_accum_steps', 'layer_decay', 'opt_kwargs', 'lr_base', 'lr_base_size', 'lr_base_scale',
              'aug_repeats', 'bce_loss', 'bce_target_thresh', 'bce_sum', 'bce_pos_weight', 'sync_bn',
              'channels_last', 'no_prefetcher')
    assert not set(warned) & (set(train.RESUME_FIXED) | set(train.RESUME_FREE))
    checkpoint = str(accum_run / 'last.pth.tar')
    recorded = load_training_checkpoint(checkpoint)['args']
    args = train.parse_args(['--resume', checkpoint])
    assert (args.lr, args.grad_accum_steps, args.input_size) == (recorded['lr'], 2, [3, 32, 32])
    for flags in (['--input-size', '3', '16', '16'], ['--in-chans', '1']):
        with pytest.raises(UsageError, match='would make it another run'):
            train.parse_args(['--resume', checkpoint, *flags])
    with caplog.at_level(logging.WARNING):
        args = train.parse_args(['--resume', checkpoint, '--grad-accum-steps', '4', '--log-wandb'])
    assert args.grad_accum_steps == 4 and args.lr == recorded['lr']
    assert "--grad-accum-steps 4 differs from the run's 2" in caplog.text and 'log-wandb' not in caplog.text


def test_an_lr_base_flag_on_resume_resolves_the_lr_again(accum_run):
    checkpoint = str(accum_run / 'last.pth.tar')
    args = train.parse_args(['--resume', checkpoint, '--lr-base', '1e-3'])
    assert args.lr is None
    assert train.resolve_lr(args, 1)[0] == pytest.approx(1e-3 * 2 ** 0.5)
    assert train.parse_args(['--resume', checkpoint, '--lr-base', '1e-3', '--lr', '5e-4']).lr == 5e-4


# ---------------------------------------------------------------------------------------------
# the optimizer: layer-wise LR decay and --opt-kwargs

@pytest.mark.parametrize('name', ['cct_2_3x2_htm', 'vit_tiny_patch16_224_htm'])
def test_layer_decay_puts_each_scorenet_in_its_blocks_group(name):
    kwargs = dict(img_size=32) if name.startswith('vit') else dict(img_size=16)
    model = timm.create_model(name, num_classes=10, **kwargs)
    args = train.parse_args(['--model', name, '--layer-decay', '0.5', '--lr', '1.0'])
    optimizer = train.create_optimizer(model, args)
    scale = {id(param): group['lr_scale'] for group in optimizer.param_groups for param in group['params']}
    by_name = {param_name: scale[id(param)] for param_name, param in model.named_parameters()}
    blocks = model.tokenmixup_cfg.htm_layers
    assert blocks
    for block in blocks:
        block_scales = {value for key, value in by_name.items() if key.startswith(f'blocks.{block}.')}
        htm_scales = {value for key, value in by_name.items() if key.startswith(f'htm.{block}.')}
        assert len(block_scales) == 1 and htm_scales == block_scales, (block, block_scales, htm_scales)
        assert block_scales.pop() < by_name['head.weight'] == 1.0  # decayed below the head


def test_opt_kwargs_reach_the_optimizer():
    model = _base_model()
    optimizer = train.create_optimizer(model, train.parse_args(
        ['--opt', 'sgd', '--lr', '0.1', '--opt-kwargs', 'nesterov=True', 'dampening=0']))
    assert all(group['nesterov'] is True for group in optimizer.param_groups)
    with pytest.raises(UsageError, match='--opt-kwargs'):
        train.create_optimizer(model, train.parse_args(['--lr', '0.1', '--opt-kwargs', 'no_such_option=1']))


# ---------------------------------------------------------------------------------------------
# model options: gradient checkpointing, channels-last, SyncBatchNorm

def test_grad_checkpointing_channels_last_and_sync_bn():
    model = timm.create_model('cct_2_3x2_htm', num_classes=10, img_size=16)
    args = train.parse_args(['--grad-checkpointing', '--channels-last', '--sync-bn'])
    args.distributed, args.rank = False, 0
    assert train.configure_model(model, args) is model
    assert model.grad_checkpointing
    convs = [module.weight for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert convs and all(weight.is_contiguous(memory_format=torch.channels_last) for weight in convs)
    sync_bn = train.parse_args(['--sync-bn'])
    sync_bn.distributed, sync_bn.rank = True, 0  # under torchrun: BatchNorm becomes SyncBatchNorm
    with_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert isinstance(train.configure_model(with_bn, sync_bn)[1], nn.SyncBatchNorm)
    layers = [type(module) for module in model.modules()]
    assert train.configure_model(model, sync_bn) is model  # the zoo has no BatchNorm to convert
    assert [type(module) for module in model.modules()] == layers


# ---------------------------------------------------------------------------------------------
# the loss: --bce-loss on HTM-mixed targets

def test_bce_loss_on_htm_mixed_soft_targets():
    """TokenMixupTask with --bce-loss: timm's BinaryCrossEntropy of the logits against the targets HTM returns
    (smoothed, then mixed: not one-hot), plus the ScoreNet loss."""
    model = timm.create_model('cct_2_3x2_htm', num_classes=10, img_size=16, tau=100.0, rho=0.0)
    criterion = train.create_criterion(train.parse_args(['--bce-loss']))
    assert isinstance(criterion, BinaryCrossEntropy) and criterion.smoothing == 0
    task = train.TokenMixupTask(model, 10, smoothing=0.1, criterion=criterion, verbose=False).train()
    (images, labels), = _digits_batches(1, 32)
    torch.manual_seed(1)
    result = task(images, labels)
    torch.manual_seed(1)
    out = model(images, one_hot_target(labels, 10, 0.1))
    assert not torch.allclose(out.target, one_hot_target(labels, 10, 0.1))  # HTM mixed the targets
    expected = BinaryCrossEntropy(smoothing=0.0)(out.logits, out.target) + out.aux_loss
    torch.testing.assert_close(result['loss'], expected)
    thresholded = train.create_criterion(train.parse_args(['--bce-loss', '--bce-target-thresh', '0.2']))
    assert thresholded.target_threshold == 0.2


# ---------------------------------------------------------------------------------------------
# end-to-end runs of the remaining flags

def _fake_wandb():
    module = types.ModuleType('wandb')
    module.inits, module.rows, module.finished = [], [], []
    module.init = lambda **kwargs: module.inits.append(kwargs)
    module.log = lambda row: module.rows.append(dict(row))
    module.finish = lambda: module.finished.append(True)
    return module


def test_bce_channels_last_checkpointing_layer_decay_and_wandb_run(tmp_path, monkeypatch):
    wandb = _fake_wandb()
    monkeypatch.setitem(sys.modules, 'wandb', wandb)
    run_dir = _train(tmp_path, *SMALL, '--bce-loss', '--channels-last', '--grad-checkpointing', '--layer-decay',
                     '0.75', '--tau', '100', '--log-wandb', '--wandb-project', 'tokenmixup', '--wandb-tags', 'a')
    row, = _summary(run_dir)
    assert float(row['train_htm1_mixed_samples']) > 0 and torch.isfinite(torch.tensor(float(row['train_loss'])))
    init, = wandb.inits
    assert init['project'] == 'tokenmixup' and init['tags'] == ['a'] and init['name'] == 'run'
    assert init['config']['lr'] == 0.002 and init['config']['bce_loss'] is True
    logged, = wandb.rows
    assert logged['epoch'] == 0 and logged['eval_top1'] == pytest.approx(float(row['eval_top1']))
    assert wandb.finished == [True]
    checkpoint = load_training_checkpoint(str(run_dir / 'last.pth.tar'))
    assert checkpoint['args']['layer_decay'] == 0.75 and _optimizer_steps(checkpoint) == TRAIN_STEPS


def test_log_wandb_without_wandb_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'wandb', None)  # `import wandb` raises ImportError
    with pytest.raises(UsageError, match='--log-wandb needs the wandb package.*pip install wandb'):
        _train(tmp_path, *SMALL, '--log-wandb')
    assert not (tmp_path / 'train').exists()  # refused before any work


def test_in_chans_1_trains_on_greyscale_images(tmp_path):
    run_dir = _train(tmp_path, *SMALL, '--in-chans', '1')
    checkpoint = load_training_checkpoint(str(run_dir / 'last.pth.tar'))
    assert checkpoint['model_config']['model_kwargs']['in_chans'] == 1
    assert checkpoint['state_dict']['tokenizer.stages.0.conv.weight'].shape[1] == 1
    assert torch.isfinite(torch.tensor(float(_summary(run_dir)[0]['train_loss'])))
    # validate.py feeds such a model greyscale images too, and reproduces the run's top-1
    import validate
    row, = validate.main(['--checkpoint', str(run_dir / 'last.pth.tar')])
    assert abs(row['top1'] - round(float(_summary(run_dir)[0]['eval_top1']), 4)) < 1e-6


@pytest.mark.parametrize('flags, message', [
    (['--in-chans', '3', '--input-size', '1', '16', '16'], '--in-chans 3 and --input-size 1 16 16 disagree'),
    (['--img-size', '16', '--input-size', '3', '32', '32'], '--img-size 16 and --input-size 3 32 32 disagree'),
    (['--grad-accum-steps', '0'], '--grad-accum-steps 0: must be 1 or more'),
    (['--aug-repeats', '3'], '--aug-repeats 3: .*needs distributed training'),
])
def test_inconsistent_flags_are_refused(tmp_path, flags, message):
    with pytest.raises(UsageError, match=message):
        train.main([*QUICK, '--output', str(tmp_path), *flags])


def test_prefetcher_is_for_cuda_only_and_its_path_trains(tmp_path, monkeypatch):
    """timm's prefetcher (and Mixup/CutMix in its collate function) is used on CUDA unless --no-prefetcher, never
    on the CPU. Its path runs here on the CPU (PrefetchLoader without a side stream) with Mixup/CutMix and HTM."""
    args = train.parse_args([])
    assert not train.prefetcher_enabled(args, torch.device('cpu'))
    assert train.prefetcher_enabled(args, torch.device('cuda'))
    assert not train.prefetcher_enabled(train.parse_args(['--no-prefetcher']), torch.device('cuda'))
    monkeypatch.setattr(train, 'prefetcher_enabled', lambda args, device: True)
    run_dir = _train(tmp_path, *SMALL, '--mixup', '0.8', '--cutmix', '1.0', '--tau', '100', '--reprob', '0.25')
    row, = _summary(run_dir)
    assert float(row['train_htm1_mixed_samples']) > 0 and torch.isfinite(torch.tensor(float(row['train_loss'])))


def test_help_shows_every_default():
    parser = train.build_parsers()[1]
    formatter = parser._get_formatter()
    missing = [action.option_strings for action in parser.arguments
               if action.default is not argparse.SUPPRESS
               and 'default' not in (formatter._get_help_string(action) if action.help else '')]
    assert missing == []
    text = ' '.join(parser.format_help().split())
    for shown in ('--grad-accum-steps N', '--input-size C H W', '--lr-base-size N', '(default: 64)',
                  '--no-prefetcher, --prefetcher', 'the zoo\'s models have LayerNorm only'):
        assert shown in text, shown


# ---------------------------------------------------------------------------------------------
# torchrun: repeated augmentation and accumulation under DDP

HELPER = r'''
import json, os, sys
sys.path.insert(0, {repo_root!r})
import torch
import train

rank = int(os.environ['RANK'])
held, counts = {{}}, {{'no_sync': 0}}
original_init = train.TokenMixupTask.__init__
original_no_sync = train.TokenMixupTask.no_sync


def keeping_init(self, model, *args, **kwargs):
    held['model'] = model
    original_init(self, model, *args, **kwargs)


def counting_no_sync(self):
    counts['no_sync'] += 1
    return original_no_sync(self)


original_loaders = train.create_loaders


def keeping_loaders(*args, **kwargs):
    loaders = original_loaders(*args, **kwargs)
    held['sampler'] = type(loaders[0].sampler).__name__
    held['micro_batches'] = len(loaders[0])
    return loaders


train.TokenMixupTask.__init__ = keeping_init
train.TokenMixupTask.no_sync = counting_no_sync
train.create_loaders = keeping_loaders
train.setup_logging()
train.main(sys.argv[1:])
state = {{name: tensor.detach().cpu().clone() for name, tensor in held['model'].state_dict().items()}}
torch.save(state, os.path.join({record_dir!r}, f'rank{{rank}}.pt'))
with open(os.path.join({record_dir!r}, f'rank{{rank}}.json'), 'w') as f:
    json.dump(dict(counts, sampler=held['sampler'], micro_batches=held['micro_batches']), f)
'''


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_aug_repeats_with_grad_accum(tmp_path):
    """Two gloo processes, batch 32 each, --aug-repeats 3 --grad-accum-steps 2: timm's RepeatAugSampler gives each
    rank 640 of the 1497 samples (20 micro-batches), the inner micro-batch of each update runs in no_sync()
    (10 times), the ranks end with identical parameters, and the LR is resolved for the global batch 32 x 2 x 2."""
    records = tmp_path / 'records'
    records.mkdir()
    helper = tmp_path / 'helper.py'
    helper.write_text(HELPER.format(repo_root=str(REPO_ROOT), record_dir=str(records)))
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port',
               str(_free_port()), str(helper), *QUICK, '--device', 'cpu', '--img-size', '16', '--batch-size', '32',
               '--aug-repeats', '3', '--grad-accum-steps', '2', '--output', str(tmp_path / 'out'), '--experiment',
               'ddp']
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert completed.returncode == 0, (completed.stdout[-2000:], completed.stderr[-4000:])
    reports = [json.loads((records / f'rank{rank}.json').read_text()) for rank in range(2)]
    for report in reports:
        assert report == dict(no_sync=10, sampler='RepeatAugSampler', micro_batches=20)
    states = [torch.load(records / f'rank{rank}.pt') for rank in range(2)]
    assert [name for name in states[0] if not torch.equal(states[0][name], states[1][name])] == []
    checkpoint = load_training_checkpoint(str(tmp_path / 'out' / 'train' / 'ddp' / 'last.pth.tar'))
    assert _optimizer_steps(checkpoint) == 10
    assert checkpoint['args']['lr'] == pytest.approx(2e-3 * 2 ** 0.5)
