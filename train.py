#!/usr/bin/env python3
""" TokenMixup training: timm's recipe plus Horizontal and Vertical TokenMixup

Built from timm's own pieces (datasets, loaders, Mixup/CutMix, optimizers, schedulers, EMA, AMP,
checkpoint saver, summary writer, training task). The one thing added is `TokenMixupTask`, which
calls `model(images, targets)` and trains on the `TokenMixupOutput` it returns: soft-target
cross-entropy on the (mixed) targets plus the ScoreNet loss.

Every default is the quickstart: `python train.py` trains a small CCT with HTM + VTM on the embedded
digits set on the CPU in a few minutes. Flags and YAML configs (`-c configs/....yaml`) work as in
timm's train.py. Distributed training goes through torchrun:

    torchrun --nproc_per_node 2 train.py -c configs/cifar100_cct_7_3x1_htm.yaml --data-dir /data/cifar
"""
import argparse
import csv
import logging
import os
import shutil
import sys
import time
from collections import OrderedDict
from contextlib import nullcontext
from datetime import datetime
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import yaml
from timm.data import FastCollateMixup, Mixup, create_loader, resolve_data_config
from timm.layers import convert_sync_batchnorm
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from timm.models import safe_model_name
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.task import ClassificationTask, load_task_ema_checkpoint, resume_task_checkpoint
from timm.utils import (
    CheckpointSaver, NativeScaler, ParseKwargs, dispatch_clip_grad, get_outdir, init_distributed_device, random_seed,
    update_summary)

import models  # noqa: F401  (registers the zoo with timm)
from tokenmixup import HTMStatisticsMeter, TokenMixupOutput, flat_statistics, one_hot_target
from models.presets import PRESETS
from tokenmixup.settings import SETTINGS, Setting
from tokenmixup_tools.checkpoints import (
    MODEL_CONFIG_KEY, describe_model, load_training_checkpoint, plain_data, plain_run_arguments, resolve_model_source,
    save_training_checkpoint)
from tokenmixup_tools.cli import (
    NegativeFlagAction, RecordingParser, UsageError, create_model_checked, read_checkpoint_argument, run_tool,
    setup_logging)
from tokenmixup_tools.datasets import (
    DEFAULT_DATASET, create_dataset_split, dataset_num_classes, image_mode, set_image_mode, with_channels)
from tokenmixup_tools.evaluation import evaluate
from tokenmixup_tools.figures import VIZ_INSTALL_HINT, draw_curriculum, require_matplotlib
from tokenmixup_tools.files import atomic_duplicate, atomic_open, atomic_path
from tokenmixup_tools.rng import capture_rng_state, restore_rng_state
from tokenmixup_tools.runtime import create_autocast, create_loss_scaler, default_device

_logger = logging.getLogger('train')


def build_parsers() -> Tuple[argparse.ArgumentParser, RecordingParser]:
    """The config parser (only -c/--config) and the main parser, new for every parse."""
    config_parser = argparse.ArgumentParser(description='Training config', add_help=False)
    config_parser.add_argument('-c', '--config', default='', type=str, metavar='FILE',
                               help='YAML file whose keys (argument names with underscores) set defaults')
    parser = RecordingParser(description='TokenMixup training (timm recipe). Defaults are the quickstart.',
                             formatter_class=DefaultsHelpFormatter)
    _add_arguments(parser)
    return config_parser, parser


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's formatter that shows every default, except where the help text already says what it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.help and 'default' in action.help:
            return action.help
        return super()._get_help_string(action)


def _add_arguments(parser: RecordingParser) -> None:

    group = parser.recording_group('Dataset')
    group.add_argument('--data-dir', metavar='DIR', default=None, help='dataset root (not needed for embedded/*)')
    group.add_argument('--dataset', metavar='NAME', default=DEFAULT_DATASET,
                       help=f'{DEFAULT_DATASET} (default, ships with the package), or any timm dataset: '
                            '"" for an ImageFolder under --data-dir, torch/cifar10, torch/cifar100, ...')
    group.add_argument('--train-split', metavar='NAME', default='train', help='training split')
    group.add_argument('--val-split', metavar='NAME', default='validation', help='validation split')
    group.add_argument('--dataset-download', action=argparse.BooleanOptionalAction, default=False,
                       help='allow torchvision datasets to download (needs a network)')

    group = parser.recording_group('Model')
    group.add_argument('--model', default='cct_2_3x2_htm_vtm', type=str, metavar='MODEL',
                       help='registered model name, or hf-hub:ORG/NAME / local-dir:DIR (a folder from hub.publish)')
    group.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=False,
                       help='start from pretrained weights')
    group.add_argument('--initial-checkpoint', default='', type=str, metavar='PATH', help='load these weights first')
    group.add_argument('--resume', default='', type=str, metavar='PATH', help='resume a run from its checkpoint')
    group.add_argument('--no-resume-opt', action=NegativeFlagAction, default=False,
                       help='do not restore the optimizer (--resume-opt: do)')
    group.add_argument('--num-classes', type=int, default=None, metavar='N', help='classes (default: the dataset\'s)')
    group.add_argument('--img-size', type=int, default=None, metavar='N', help='image size (default: the model\'s)')
    group.add_argument('--in-chans', type=int, default=None, metavar='N',
                       help='image channels the model is built for (default: 3, or the first value of --input-size); '
                            'images are converted to L, RGB or RGBA for 1, 3 or 4 channels, as timm does')
    group.add_argument('--input-img-mode', default=None, type=str, metavar='MODE',
                       help='PIL mode every image is converted to before its transforms, e.g. RGB for a greyscale '
                            'dataset and a 3-channel model (default: L, RGB or RGBA by the model\'s channels)')
    group.add_argument('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'),
                       help='all image dimensions, e.g. 3 32 32: the model is built for C channels and H x W images '
                            'and the data config uses them (default: --in-chans and --img-size, else the model\'s)')
    group.add_argument('--crop-pct', default=None, type=float, metavar='PCT', help='eval crop fraction')
    group.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN', help='normalisation mean')
    group.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='normalisation std')
    group.add_argument('--interpolation', default='', type=str, metavar='NAME', help='eval resize interpolation')
    group.add_argument('-b', '--batch-size', type=int, default=64, metavar='N', help='batch size per process')
    group.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N',
                       help='validation batch size (default: --batch-size)')
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, help='extra model kwargs k=v')
    group.add_argument('--grad-checkpointing', action=argparse.BooleanOptionalAction, default=False,
                       help='gradient checkpointing (model.set_grad_checkpointing()): recompute the blocks\' '
                            'activations in the backward pass; less memory, more compute, the same gradients')
    group.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=False,
                       help='channels-last memory layout for the model and the training images (helps convolutions on '
                            'GPUs; the zoo convolves only in the CCT tokenizer and the ViT patch embedding)')

    _add_tokenmixup_arguments(parser)

    group = parser.recording_group('Optimizer and schedule')
    group.add_argument('--opt', default='adamw', type=str, metavar='OPTIMIZER', help='any timm optimizer name')
    group.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON',
                       help='optimizer epsilon (default: the optimizer\'s)')
    group.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA',
                       help='optimizer betas (default: the optimizer\'s)')
    group.add_argument('--opt-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='K=V',
                       help='further optimizer keyword arguments, values read as Python literals (e.g. nesterov=True)')
    group.add_argument('--layer-decay', type=float, default=None, metavar='X',
                       help='layer-wise LR decay (timm\'s create_optimizer_v2 layer_decay): layer group l of L '
                            'trains at LR x X^(L-1-l), groups from model.group_matcher(): the stem, each block '
                            'together with the HTM ScoreNet in front of it, the head (default: off)')
    group.add_argument('--momentum', type=float, default=0.9, metavar='M', help='SGD momentum')
    group.add_argument('--weight-decay', type=float, default=0.05, help='weight decay (not on 1-d parameters)')
    group.add_argument('--clip-grad', type=float, default=None, metavar='NORM', help='clip gradients (off by default)')
    group.add_argument('--clip-mode', type=str, default='norm', help='norm, value or agc')
    group.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER', help='any timm scheduler name')
    group.add_argument('--sched-on-updates', action=argparse.BooleanOptionalAction, default=False,
                       help='step the schedule per update')
    group.add_argument('--lr', type=float, default=None, metavar='LR',
                       help='learning rate (default: --lr-base scaled to the global batch; the resolved value is '
                            'what the run records)')
    group.add_argument('--lr-base', type=float, default=2e-3, metavar='LR',
                       help='base learning rate, used when --lr is not given: lr = lr_base x ratio, ratio = global '
                            'batch (--batch-size x processes x --grad-accum-steps) / --lr-base-size, or its square '
                            'root')
    group.add_argument('--lr-base-size', type=int, default=64, metavar='N',
                       help='the global batch --lr-base is given for (timm uses 256 and 0.1; 64 and 2e-3 give the '
                            'quickstart its lr 2e-3 exactly)')
    group.add_argument('--lr-base-scale', type=str, default='', choices=('', 'linear', 'sqrt'),
                       help='how --lr-base scales with the batch ("": sqrt for optimizers whose name contains ada or '
                            'lamb, linear otherwise, as in timm; default: "")')
    group.add_argument('--grad-accum-steps', type=int, default=1, metavar='N',
                       help='accumulate the gradients of N micro-batches of --batch-size per optimizer update (each '
                            'loss divided by N); the update count and the schedule count updates; HTM pairs form '
                            'within each micro-batch')
    group.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='LR the warmup starts from')
    group.add_argument('--min-lr', type=float, default=1e-5, metavar='LR', help='lowest LR of the schedule')
    group.add_argument('--epochs', type=int, default=20, metavar='N', help='epochs to train')
    group.add_argument('--start-epoch', default=None, type=int, metavar='N',
                       help='first epoch (default: 0, or the one after the resumed checkpoint\'s)')
    group.add_argument('--decay-epochs', type=float, default=90, metavar='N', help='step schedule: epochs per decay')
    group.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+', metavar='MILESTONES',
                       help='multistep schedule: the decay epochs')
    group.add_argument('--decay-rate', '--dr', type=float, default=0.1, metavar='RATE', help='LR factor per decay')
    group.add_argument('--warmup-epochs', type=int, default=3, metavar='N', help='linear warmup epochs')
    group.add_argument('--cooldown-epochs', type=int, default=0, metavar='N',
                       help='epochs at --min-lr after the schedule')

    group = parser.recording_group('Augmentation and regularisation')
    group.add_argument('--no-aug', action=NegativeFlagAction, default=False,
                       help='no training augmentation (--aug: augment)')
    group.add_argument('--scale', type=float, nargs=2, default=[0.85, 1.0], metavar='PCT',
                       help='random resized crop scale')
    group.add_argument('--ratio', type=float, nargs=2, default=[3. / 4., 4. / 3.], metavar='RATIO',
                       help='random resized crop aspect ratio range')
    group.add_argument('--hflip', type=float, default=0.0, help='horizontal flip probability (digits: none)')
    group.add_argument('--vflip', type=float, default=0.0, help='vertical flip probability')
    group.add_argument('--color-jitter', type=float, default=0.0, metavar='PCT', help='colour jitter factor')
    group.add_argument('--aa', type=str, default=None, metavar='NAME', help='auto augment, e.g. rand-m9-mstd0.5-inc1')
    group.add_argument('--reprob', type=float, default=0.0, metavar='PCT', help='random erasing probability')
    group.add_argument('--remode', type=str, default='pixel', help='random erasing mode')
    group.add_argument('--recount', type=int, default=1, help='random erasing count')
    group.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (0 = off)')
    group.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (0 = off)')
    group.add_argument('--cutmix-minmax', type=float, nargs='+', default=None,
                       help='cutmix box ratio range (default: from --cutmix alpha)')
    group.add_argument('--mixup-prob', type=float, default=1.0, help='probability of mixup or cutmix per batch')
    group.add_argument('--mixup-switch-prob', type=float, default=0.5, help='probability of cutmix when both are on')
    group.add_argument('--mixup-mode', type=str, default='batch', help='batch, pair or elem')
    group.add_argument('--mixup-off-epoch', default=0, type=int, metavar='N', help='turn mixup off from this epoch')
    group.add_argument('--aug-repeats', type=float, default=0, metavar='N',
                       help='repeated augmentation: each sample N times per epoch, each copy on another process '
                            '(timm\'s RepeatAugSampler; torchrun only; 0: off)')
    group.add_argument('--bce-loss', action=argparse.BooleanOptionalAction, default=False,
                       help='binary cross-entropy (timm\'s BinaryCrossEntropy) on the soft targets (smoothed, Mixup- '
                            'and HTM-mixed) instead of soft-target cross-entropy; the ScoreNet loss stays as it is')
    group.add_argument('--bce-target-thresh', type=float, default=None, metavar='X',
                       help='with --bce-loss: targets above X become 1, the others 0 (default: kept soft)')
    group.add_argument('--bce-sum', action=argparse.BooleanOptionalAction, default=False,
                       help='with --bce-loss: sum the loss over the classes, then average over the batch')
    group.add_argument('--bce-pos-weight', type=float, default=None, metavar='X',
                       help='with --bce-loss: weight of the positive term (default: 1)')
    group.add_argument('--smoothing', type=float, default=0.1, help='label smoothing')
    group.add_argument('--train-interpolation', type=str, default='random', help='training resize interpolation')
    group.add_argument('--drop', type=float, default=0.0, metavar='PCT', help='dropout before the classifier')
    group.add_argument('--drop-path', type=float, default=None, metavar='PCT', help='stochastic depth (model default)')

    group = parser.recording_group('Model EMA')
    group.add_argument('--model-ema', action=argparse.BooleanOptionalAction, default=False,
                       help='keep an EMA of the weights')
    group.add_argument('--model-ema-decay', type=float, default=0.9998, help='EMA decay per update')
    group.add_argument('--model-ema-warmup', action=argparse.BooleanOptionalAction, default=False,
                       help='EMA decay warmup')

    group = parser.recording_group('Misc')
    group.add_argument('--seed', type=int, default=42, metavar='S', help='random seed')
    group.add_argument('--log-interval', type=int, default=10, metavar='N', help='steps between log lines')
    group.add_argument('--checkpoint-hist', type=int, default=2, metavar='N', help='numbered checkpoints to keep')
    group.add_argument('-j', '--workers', type=int, default=0, metavar='N', help='data loading processes per process')
    group.add_argument('--amp', action=argparse.BooleanOptionalAction, default=False,
                       help='mixed precision (autocast; far slower than float32 on the CPU)')
    group.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'), help='autocast dtype')
    group.add_argument('--device', default=None, type=str, help='cuda, cpu, ... (default: cuda if available)')
    group.add_argument('--dist-backend', default=None, type=str, help='nccl on CUDA, gloo otherwise')
    group.add_argument('--dist-url', default='env://', type=str, help='process group init URL')
    group.add_argument('--pin-mem', action=argparse.BooleanOptionalAction, default=False,
                       help='pinned host memory for the loaders')
    group.add_argument('--no-prefetcher', action=NegativeFlagAction, default=False,
                       help='do not use timm\'s prefetcher (--prefetcher: use it). The prefetcher copies the batches '
                            'to the GPU on a side stream and normalises, random-erases and (Mixup/CutMix in the '
                            'collate function) mixes them there; it is used on CUDA only: on the CPU the loader '
                            'prepares every batch (default: False, i.e. on for CUDA)')
    group.add_argument('--sync-bn', action=argparse.BooleanOptionalAction, default=False,
                       help='BatchNorm -> SyncBatchNorm under torchrun (timm.layers.convert_sync_batchnorm); the '
                            'zoo\'s models have LayerNorm only, so for them it changes nothing')
    group.add_argument('--log-wandb', action=argparse.BooleanOptionalAction, default=False,
                       help='log each epoch\'s summary row to Weights & Biases from rank 0 (needs pip install wandb)')
    group.add_argument('--wandb-project', default=None, type=str, metavar='NAME',
                       help='with --log-wandb: the project (default: wandb\'s)')
    group.add_argument('--wandb-tags', default=[], type=str, nargs='+', metavar='TAG', help='with --log-wandb: tags')
    group.add_argument('--wandb-resume-id', default='', type=str, metavar='ID',
                       help='with --log-wandb and --resume: the wandb run id to continue (default: a new wandb run)')
    group.add_argument('--output', default='./output', type=str, metavar='PATH', help='runs go under PATH/train/')
    group.add_argument('--experiment', default='', type=str, metavar='NAME', help='run folder name')
    group.add_argument('--force', action=argparse.BooleanOptionalAction, default=False,
                       help='start a new run in a non-empty run folder, replacing its run files')
    group.add_argument('--eval-metric', default='top1', type=str, metavar='METRIC',
                       help='metric that ranks checkpoints (top1, top5, loss)')
    group.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor',
                       help='torch.compile backend')
    group.add_argument('--progress', default=None, action=argparse.BooleanOptionalAction,
                       help='progress bar (default: on an interactive terminal); plain log lines otherwise')


def _add_tokenmixup_arguments(parser: RecordingParser) -> None:
    """One flag per setting of `tokenmixup.SETTINGS` (`--name-with-dashes`), and `--tokenmixup-preset`."""
    group = parser.recording_group(
        'TokenMixup', "unset: the model's own value (its preset, else the declared default); an empty block "
                      "list disables HTM or VTM (docs/design.md §2.4)")
    group.add_argument('--tokenmixup-preset', default=None, choices=tuple(PRESETS), metavar='NAME',
                       help=f'a recipe of models.presets.PRESETS, adapted to the model: {", ".join(PRESETS)} '
                            "(default: the model's own)")
    for setting in SETTINGS:
        group.add_argument(f'--{setting.name.replace("_", "-")}', default=None, **_flag_options(setting),
                           help=f'{setting.help} (declared default: {setting.default!r})')


def _flag_options(setting: Setting) -> Dict[str, Any]:
    """How argparse reads a setting of each kind."""
    if setting.kind == 'layers':
        return dict(type=int, nargs='*', metavar='BLOCK')
    if setting.kind == 'count':
        return dict(type=int, metavar='N')
    if setting.kind in ('nonnegative', 'positive'):
        return dict(type=float, metavar='X')
    if setting.kind == 'bool':
        return dict(action=argparse.BooleanOptionalAction)
    return dict(choices=setting.choices)


# How the recorded arguments of a run may change when it is resumed (docs/design.md §6.1). They are the
# defaults of the resumed run; a flag given again (on the command line or in a -c file) with another value
# is refused when it would make another run (the model, its TokenMixup settings, the data), may raise
# --epochs, changes nothing that matters when it only says where and how the run executes, and is taken
# with a warning otherwise (the run then no longer continues the saved one exactly).
# The LR: the checkpoint records the resolved --lr, which a resumed run keeps unless --lr or an --lr-base* flag is
# given again (then --lr is resolved anew from --lr-base for today's global batch).
RESUME_FIXED = ('model', 'pretrained', 'initial_checkpoint', 'num_classes', 'img_size', 'in_chans', 'input_size',
                'model_kwargs', 'drop', 'drop_path', 'tokenmixup_preset', *(setting.name for setting in SETTINGS),
                'dataset', 'train_split', 'val_split', 'input_img_mode')
RESUME_FREE = ('resume', 'no_resume_opt', 'config', 'force', 'workers', 'log_interval', 'progress', 'device',
               'dist_backend', 'dist_url', 'pin_mem', 'output', 'experiment', 'checkpoint_hist', 'torchcompile',
               'data_dir', 'dataset_download', 'validation_batch_size', 'grad_checkpointing', 'log_wandb',
               'wandb_project', 'wandb_tags', 'wandb_resume_id')
_NOT_RESUMED = ('resume', 'no_resume_opt', 'config', 'force', 'device', 'output', 'experiment')  # never from the record
_LR_BASE = ('lr_base', 'lr_base_size', 'lr_base_scale')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line over the YAML config (if any) over, with --resume, the saved run's arguments.

    A config's keys are defaults that the command line overrides. With `--resume CHECKPOINT` the run's
    recorded arguments come first; the config's keys and the flags given then count as given explicitly
    and must fit the saved run (see RESUME_FIXED).
    """
    config_parser, parser = build_parsers()
    config_args, remaining = config_parser.parse_known_args(argv)
    config = _read_config(config_args.config, parser) if config_args.config else {}
    given = dict(config, **_given_flags(remaining))
    if given.get('resume'):
        recorded = _recorded_arguments(given['resume'], parser)
        if recorded is not None:
            _check_resume_changes(given['resume'], recorded, given)
            if 'lr' not in given and any(name in given for name in _LR_BASE):
                recorded.pop('lr', None)  # resolved again from the --lr-base* given
            parser.set_defaults(**recorded)
    parser.set_defaults(**config)
    args = parser.parse_args(remaining)
    args.config = config_args.config
    return args


def _read_config(path: str, parser: RecordingParser) -> Dict[str, Any]:
    """The keys of a YAML config file, which must be argument names (with underscores)."""
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except OSError as e:
        raise UsageError(f'-c {path}: cannot read it ({e.strerror or e})') from e
    except yaml.YAMLError as e:
        where = getattr(e, 'problem_mark', None)
        line = f' at line {where.line + 1}, column {where.column + 1}' if where is not None else ''
        raise UsageError(f'-c {path}: not valid YAML{line}: {getattr(e, "problem", None) or e}') from e
    if not isinstance(config, dict):
        raise UsageError(f'-c {path}: expected a mapping of argument names to values, got a {type(config).__name__}')
    unknown = sorted(set(config) - set(parser.destinations))
    if unknown:
        raise UsageError(f'{path}: unknown keys {unknown} (use argument names with underscores)')
    return config


def _given_flags(argv: Sequence[str]) -> Dict[str, Any]:
    """The arguments that `argv` sets explicitly (parsed by a parser without defaults)."""
    parser = build_parsers()[1]
    for action in parser.arguments:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def _recorded_arguments(checkpoint_path: str, parser: RecordingParser) -> Optional[Dict[str, Any]]:
    """The run arguments saved in `checkpoint_path` that become the resumed run's defaults (None if none)."""
    try:
        recorded = load_training_checkpoint(checkpoint_path).get('args')
    except (OSError, ValueError, RuntimeError) as e:
        raise UsageError(f'--resume {checkpoint_path}: cannot read it as a train.py checkpoint ({e})') from e
    if not recorded:
        _logger.warning(f'--resume {checkpoint_path}: the checkpoint records no run arguments; using the flags given')
        return None
    dests = set(parser.destinations)
    return {name: value for name, value in recorded.items() if name in dests and name not in _NOT_RESUMED}


def _check_resume_changes(checkpoint_path: str, recorded: Dict[str, Any], given: Dict[str, Any]) -> None:
    """Refuse the changes that would make a resumed run another run; warn about the others."""
    for name, value in given.items():
        if name in RESUME_FREE or name not in recorded:
            continue
        before, after = plain_data(recorded[name], name), plain_data(value, name)
        if before == after:
            continue
        flag = '--' + name.replace('_', '-')
        if name in RESUME_FIXED:
            raise UsageError(
                f'--resume {checkpoint_path}: the run was trained with {flag} {before!r}; {flag} {after!r} would make '
                'it another run (the model, its TokenMixup settings and the data stay as saved): start a new run '
                'instead, e.g. with --initial-checkpoint')
        if name == 'epochs':
            if after < before:
                raise UsageError(f'--resume {checkpoint_path}: --epochs {after} is less than the run\'s {before}: a '
                                 'resumed run can be extended, not shortened')
            _logger.warning(f'--epochs {after}: extending the run from {before} epochs; the LR schedule is rebuilt '
                            f'for {after} epochs')
            continue
        _logger.warning(f'{flag} {after!r} differs from the run\'s {before!r}: the resumed run will not continue the '
                        'saved one exactly')


class TokenMixupTask(ClassificationTask):
    """timm's classification task, trained through the TokenMixup protocol.

    Calls `model(input, target)` and returns `criterion` (default: soft-target cross-entropy; `--bce-loss`:
    timm's BinaryCrossEntropy) of the logits against the returned (possibly HTM-mixed) soft targets plus the
    returned `aux_loss`. Hard labels are one-hot encoded here with `smoothing`; soft targets (from Mixup/CutMix)
    are passed on as they are.
    """

    def __init__(self, model: nn.Module, num_classes: int, smoothing: float = 0.0,
                 device: Optional[torch.device] = None, verbose: bool = True,
                 criterion: Optional[nn.Module] = None) -> None:
        super().__init__(model, criterion=criterion if criterion is not None else SoftTargetCrossEntropy(),
                         device=device, verbose=verbose)
        self.num_classes = num_classes
        self.smoothing = smoothing

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, Any]:
        if target.ndim == 1:
            target = one_hot_target(target, self.num_classes, self.smoothing)
        out: TokenMixupOutput = self.trainable_module(input, target)
        loss = self.criterion(out.logits, out.target) + out.aux_loss
        return {'loss': loss, 'output': out.logits, 'aux_loss': out.aux_loss, 'stats': out.stats}


class AtomicCheckpointSaver(CheckpointSaver):
    """timm's checkpoint saver, with every file written whole (temp file + rename) and the run's
    model configuration, plain-data arguments and LR scheduler state recorded in each checkpoint."""

    def __init__(self, *args, model_config: Dict[str, Any], lr_scheduler=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.model_config = model_config
        self.lr_scheduler = lr_scheduler

    def _save(self, save_path: str, epoch: int, metric: Optional[float] = None) -> None:
        save_state = {
            'epoch': epoch,
            'arch': self.args.model,
            'args': self.args,
            'optimizer': self.optimizer.state_dict(),
            'version': 2,  # the epoch stored is the last one completed
            MODEL_CONFIG_KEY: self.model_config,
        }
        if self.amp_scaler is not None:
            save_state[self.amp_scaler.state_dict_key] = self.amp_scaler.state_dict()
        if self.lr_scheduler is not None:
            save_state['lr_scheduler'] = self.lr_scheduler.state_dict()
        save_state.update(self.task.get_checkpoint_state(unwrap_fn=self.unwrap_fn))
        save_state.update(self.task.get_checkpoint_state(ema=True, unwrap_fn=self.unwrap_fn))
        if metric is not None:
            save_state['metric'] = metric
        save_state['saver'] = self.state_dict(epoch, metric)
        save_state['rng_state'] = capture_rng_state()  # what the next epoch draws from: an exact resume
        save_training_checkpoint(save_path, save_state)

    def _replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)  # timm's version removes dst first (for Windows): a moment with no last.pth.tar

    def _duplicate(self, src: str, dst: str) -> None:
        # timm's version copies straight into dst; here dst is either the old file or the whole new one
        self.can_hardlink = atomic_duplicate(src, dst, hard_link=self.can_hardlink)


def drop_summary_rows_from(filename: str, epoch: int) -> None:
    """Remove the rows of `epoch` and later from summary.csv (replaced whole): a resumed run writes them again.

    A run killed after writing an epoch's row but before its checkpoint resumes from the checkpoint before,
    so without this its summary would hold that epoch twice.
    """
    if not os.path.exists(filename):
        return
    with open(filename, newline='') as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) < epoch]
    if len(kept) < len(rows):
        with atomic_open(filename, newline='') as f:
            csv.writer(f).writerows(kept)


def append_summary_row(epoch: int, train_metrics: Dict[str, float], eval_metrics: Dict[str, float],
                       filename: str, lr: float) -> None:
    """timm's `update_summary`, applied to a copy that then replaces the file (never half-written)."""
    with atomic_path(filename) as tmp_path:
        if os.path.exists(filename):
            shutil.copyfile(filename, tmp_path)
        update_summary(epoch, train_metrics, eval_metrics, filename=tmp_path, lr=lr)


class Progress:
    """A one-line progress bar on an interactive terminal, log lines every `log_interval` steps otherwise."""

    def __init__(self, enabled: bool, interactive: bool, log_interval: int, num_steps: int, epoch: int) -> None:
        self.enabled = enabled
        self.interactive = interactive
        self.log_interval = max(1, log_interval)
        self.num_steps = num_steps
        self.epoch = epoch
        self.start = time.perf_counter()
        self.samples = 0

    def wants_values(self, step: int) -> bool:
        """Whether step `step` (0-based) should report loss values (they cost a host sync)."""
        return self.enabled and ((step + 1) % self.log_interval == 0 or step + 1 == self.num_steps)

    def step(self, step: int, batch_size: int, values: Optional[Dict[str, float]] = None) -> None:
        self.samples += batch_size
        if not self.enabled:
            return
        rate = self.samples / max(time.perf_counter() - self.start, 1e-9)
        shown = ''.join(f'  {name} {value:.4g}' for name, value in (values or {}).items())
        if self.interactive:
            done = (step + 1) / self.num_steps
            bar = '#' * int(24 * done) + '-' * (24 - int(24 * done))
            sys.stdout.write(f'\rtrain {self.epoch:3d} [{bar}] {step + 1}/{self.num_steps}  {rate:6.1f} img/s{shown}')
            if step + 1 == self.num_steps:
                sys.stdout.write('\n')
            sys.stdout.flush()
        elif values is not None:
            _logger.info(f'train {self.epoch} [{step + 1}/{self.num_steps}] {rate:.1f} img/s{shown}')


def _tokenmixup_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """The TokenMixup flags given (a preset and settings) as model keyword arguments."""
    kwargs = {'tokenmixup_preset': args.tokenmixup_preset}
    for setting in SETTINGS:
        value = getattr(args, setting.name)
        kwargs[setting.name] = tuple(value) if isinstance(value, list) else value
    return {name: value for name, value in kwargs.items() if value is not None}


def build_model(args: argparse.Namespace, num_classes: int) -> Tuple[nn.Module, Dict[str, Any]]:
    """Create the model from the flags; returns it with its configuration record."""
    model_kwargs = dict(
        drop_rate=args.drop, drop_path_rate=args.drop_path, img_size=args.img_size,
        **_tokenmixup_kwargs(args), **args.model_kwargs)
    model_kwargs = {key: value for key, value in model_kwargs.items() if value is not None}
    # a timm ViT outside the zoo given TokenMixup flags: built (and recorded) as models.ANY_VIT_ARCHITECTURE
    model_name, model_kwargs = models.tokenmixup_model_args(args.model, model_kwargs)
    model = create_model_checked(model_name, given=args.model, pretrained=args.pretrained, num_classes=num_classes,
                                 **model_kwargs)
    if args.initial_checkpoint:
        checkpoint = read_checkpoint_argument(args.initial_checkpoint, '--initial-checkpoint')
        state_dict = checkpoint.get('state_dict', checkpoint)
        model.load_state_dict(state_dict)
    architecture, recorded_kwargs = resolve_model_source(model_name, model_kwargs)  # hf-hub:/local-dir: names
    return model, describe_model(model, architecture, recorded_kwargs)


def create_datasets(args: argparse.Namespace):
    """The training and validation splits the flags name."""
    common = dict(data_dir=args.data_dir, download=args.dataset_download, batch_size=args.batch_size, seed=args.seed)
    try:
        train = create_dataset_split(args.dataset, args.train_split, is_training=True, **common)
        val = create_dataset_split(args.dataset, args.val_split, is_training=False, **common)
    except UsageError as e:
        raise UsageError(f'--dataset {args.dataset!r}: {e}') from e
    return train, val


def check_labels(target: torch.Tensor, num_classes: int) -> None:
    """Integer labels from the loader must lie in [0, num_classes): checked on the CPU, where it costs no sync
    (on an accelerator an out-of-range label would become a silent all-zero target row)."""
    if target.device.type != 'cpu' or target.is_floating_point() or target.numel() == 0:
        return
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= num_classes:
        raise UsageError(f'the dataset gave labels from {low} to {high}, but the model has {num_classes} classes '
                         f'(labels 0 to {num_classes - 1}): check --num-classes and the dataset')


def _all_finite(finite: torch.Tensor) -> torch.Tensor:
    """Whether the loss is finite on every process (one small all-reduce): a backward that some processes skip
    and others run would leave DDP's gradient reduction waiting."""
    flag = finite.to(torch.int32)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return flag.bool()


def train_one_epoch(
        epoch: int,
        task: TokenMixupTask,
        loader,
        optimizer: torch.optim.Optimizer,
        args: argparse.Namespace,
        device: torch.device,
        lr_scheduler=None,
        amp_autocast=nullcontext,
        loss_scaler: Optional[NativeScaler] = None,
        mixup_fn: Optional[Mixup] = None,
        num_updates: int = 0,
) -> Tuple[Dict[str, float], int]:
    """One pass over the training set; returns the epoch's metrics and the update count.

    With `--grad-accum-steps N` each optimizer update accumulates the gradients of N micro-batches (the loader's
    batches), each loss divided by N (the epoch's last update takes the micro-batches that are left and divides by
    their count, as timm does); under DDP the inner micro-batches run in `no_sync()`. HTM sees one micro-batch at a
    time: it scores, pairs and mixes within it, and its statistics are recorded per micro-batch. When any
    micro-batch of an update has a non-finite loss the whole update is skipped, counted once, and none of its
    micro-batches enter the epoch's loss or statistics.
    """
    task.train()
    stats_meter = HTMStatisticsMeter()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    num_samples = torch.zeros((), device=device, dtype=torch.float64)  # of the updates with a finite loss
    skipped = torch.zeros((), device=device, dtype=torch.float64)
    interactive = args.progress if args.progress is not None else sys.stdout.isatty()
    num_steps = len(loader)
    progress = Progress(args.rank == 0, interactive, args.log_interval, num_steps, epoch)
    accum_steps = max(1, getattr(args, 'grad_accum_steps', 1))
    last_window_start = num_steps - num_steps % accum_steps  # the last, shorter window (when there is one)
    channels_last = getattr(args, 'channels_last', False)

    window_finite = torch.ones((), device=device, dtype=torch.bool)  # every loss of this update is finite
    window_ok = True  # the same, known on the host (no loss scaler: one sync per step, as a loss scaler makes)
    window_loss = torch.zeros((), device=device, dtype=torch.float64)
    window_samples = 0
    window_stats = []
    for step, (input, target) in enumerate(loader):
        window_size = accum_steps if step < last_window_start else num_steps - last_window_start
        need_update = (step + 1) % accum_steps == 0 or step + 1 == num_steps
        check_labels(target, task.num_classes)  # on the host, before the labels reach the device
        input, target = input.to(device), target.to(device)
        if channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        if mixup_fn is not None:
            input, target = mixup_fn(input, target)
        with task.no_sync() if not need_update else nullcontext():  # DDP: reduce the gradients once per update
            with amp_autocast():
                result = task(input, target)
            loss = result['loss']
            finite = torch.isfinite(loss.detach())
            if args.distributed and loss_scaler is None:  # every process skips together, or DDP waits forever
                finite = _all_finite(finite)
            scaled_loss = loss / window_size if window_size > 1 else loss
            if loss_scaler is not None:  # float16: the scaler skips the update when the gradients overflow
                loss_scaler(scaled_loss, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                            parameters=task.get_clip_parameters(), need_update=need_update)
            elif finite:  # a non-finite loss never reaches the weights
                if window_ok:
                    scaled_loss.backward()
            else:
                window_ok = False
                window = f' (the whole update of {window_size} micro-batches)' if window_size > 1 else ''
                _logger.warning(f'epoch {epoch} step {step}: the loss is not finite ({loss.item()}); update '
                                f'skipped{window}')
        window_finite &= finite
        window_loss += torch.where(finite, loss.detach().double() * input.shape[0], 0.0)
        window_samples += input.shape[0]
        window_stats.append(result['stats'])

        if need_update:
            if loss_scaler is None and window_ok:
                if args.clip_grad is not None:
                    dispatch_clip_grad(task.get_clip_parameters(), args.clip_grad, mode=args.clip_mode)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            num_updates += 1
            task.update_ema(step=num_updates)
            if lr_scheduler is not None:
                lr_scheduler.step_update(num_updates=num_updates)

            loss_sum += torch.where(window_finite, window_loss, 0.0)
            num_samples += window_finite * window_samples
            skipped += ~window_finite
            for stats in window_stats:
                stats_meter.update(stats, include=window_finite)
            window_finite = torch.ones((), device=device, dtype=torch.bool)
            window_ok = True
            window_loss = torch.zeros((), device=device, dtype=torch.float64)
            window_samples = 0
            window_stats = []

        values = None
        if progress.wants_values(step):
            shown = flat_statistics(result['stats'], ('mixed_samples',))
            numbers = torch.stack([loss_sum / num_samples.clamp_min(1), *(value.double() for value in shown.values())])
            values = dict(zip(['loss', *shown], numbers.tolist()))
        progress.step(step, input.shape[0], values)

    totals = torch.stack([loss_sum, num_samples, skipped])
    if args.distributed:
        torch.distributed.all_reduce(totals)
    loss_total, sample_total, skipped_total = totals.tolist()
    metrics = OrderedDict(loss=loss_total / max(sample_total, 1.0), skipped_updates=skipped_total)
    metrics.update(stats_meter.compute(args.distributed))
    return metrics, num_updates


RUN_FILES = ('summary.csv', 'args.yaml', 'last.pth.tar', 'model_best.pth.tar', 'tmp.pth.tar', 'curriculum.png')


def prepare_run_folder(folder: str, force: bool) -> None:
    """Refuse to start a run in a folder that holds another run's files, unless `force` (which removes them)."""
    if not os.path.isdir(folder) or not os.listdir(folder):
        return
    if not force:
        raise UsageError(f'--experiment: {folder} already holds a run ({", ".join(sorted(os.listdir(folder))[:4])}'
                         f'{", ..." if len(os.listdir(folder)) > 4 else ""}); resume it with --resume '
                         f'{os.path.join(folder, "last.pth.tar")}, choose another --experiment, or pass --force to '
                         'replace it')
    for name in os.listdir(folder):
        if name in RUN_FILES or (name.startswith('checkpoint-') and name.endswith('.pth.tar')):
            os.remove(os.path.join(folder, name))
    _logger.warning(f'--force: replaced the run files in {folder}')


def check_flags(args: argparse.Namespace) -> None:
    """The checks of the timm flags that need no model or data (run on every process, before any work)."""
    if args.grad_accum_steps < 1:
        raise UsageError(f'--grad-accum-steps {args.grad_accum_steps}: must be 1 or more')
    if args.lr_base_size < 1:
        raise UsageError(f'--lr-base-size {args.lr_base_size}: must be 1 or more')
    if args.aug_repeats and args.aug_repeats < 1:
        raise UsageError(f'--aug-repeats {args.aug_repeats}: 0 (off) or 1 or more')
    model_input(args)  # --in-chans, --input-size and --img-size agree
    if args.log_wandb:
        import_wandb()


def import_wandb():
    """The wandb module, for --log-wandb (an optional dependency, imported only when asked for)."""
    try:
        import wandb
    except ImportError as e:
        raise UsageError('--log-wandb needs the wandb package, which is not installed: pip install wandb '
                         '(or leave --log-wandb off)') from e
    return wandb


def resolve_lr(args: argparse.Namespace, world_size: int = 1) -> Tuple[float, Optional[str]]:
    """timm's LR rule: --lr when given, else --lr-base x ratio with ratio = global batch / --lr-base-size (global
    batch: --batch-size x processes x --grad-accum-steps), or its square root. Returns the LR and the scaling used
    (None when --lr was given). The default scaling is sqrt for optimizers whose name contains 'ada' or 'lamb'
    (adam, adamw, lamb, ...), linear otherwise."""
    if args.lr is not None:
        return args.lr, None
    global_batch = args.batch_size * world_size * args.grad_accum_steps
    ratio = global_batch / args.lr_base_size
    scale = args.lr_base_scale or ('sqrt' if any(name in args.opt.lower() for name in ('ada', 'lamb')) else 'linear')
    if scale == 'sqrt':
        ratio = ratio ** 0.5
    return args.lr_base * ratio, scale


def model_input(args: argparse.Namespace) -> Tuple[Optional[int], Optional[Any]]:
    """The channels and image size to build the model for, from --in-chans, --input-size and --img-size (None:
    the model's own). --input-size C H W gives both; it must agree with --in-chans and --img-size when they are
    given too."""
    in_chans, img_size = args.in_chans, args.img_size
    if args.input_size is not None:
        channels, height, width = args.input_size
        if in_chans is not None and in_chans != channels:
            raise UsageError(f'--in-chans {in_chans} and --input-size {channels} {height} {width} disagree: give one')
        if img_size is not None and (img_size, img_size) != (height, width):
            raise UsageError(f'--img-size {img_size} and --input-size {channels} {height} {width} disagree: give one')
        in_chans, img_size = channels, (height if height == width else (height, width))
    return in_chans, img_size


def model_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """`args` as `build_model` reads them: --input-size and --in-chans folded into img_size and model_kwargs
    (which the model record then holds); `args` itself, what the run records, is left as given."""
    in_chans, img_size = model_input(args)
    model_kwargs = dict(args.model_kwargs)
    if in_chans is not None:
        given = model_kwargs.setdefault('in_chans', in_chans)
        if given != in_chans:
            raise UsageError(f'--model-kwargs in_chans={given} and --in-chans/--input-size {in_chans} disagree')
    if img_size is not None and 'img_size' in model_kwargs:
        raise UsageError('--model-kwargs img_size=... and --img-size/--input-size: give one')
    return argparse.Namespace(**{**vars(args), 'img_size': img_size, 'model_kwargs': model_kwargs})


def resolve_data_settings(args: argparse.Namespace, model: nn.Module, verbose: bool = False) -> Dict[str, Any]:
    """timm's data config for the model, with the channels of --in-chans / --input-size (`with_channels`)."""
    data_config = resolve_data_config(vars(args), model=model, verbose=verbose)
    in_chans, _ = model_input(args)
    return with_channels(data_config, in_chans) if in_chans is not None else data_config


def configure_model(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """--grad-checkpointing, --channels-last and (under torchrun) --sync-bn, applied to the model on its device;
    returns the model (convert_sync_batchnorm may replace the root module)."""
    if args.grad_checkpointing:
        if not hasattr(model, 'set_grad_checkpointing'):
            raise UsageError(f'--grad-checkpointing: {type(model).__name__} has no set_grad_checkpointing()')
        model.set_grad_checkpointing(enable=True)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.sync_bn and getattr(args, 'distributed', False):
        model = convert_sync_batchnorm(model)
        if args.rank == 0:
            _logger.info('--sync-bn: BatchNorm layers converted to SyncBatchNorm (the zoo\'s models have none)')
    return model


def create_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """timm's optimizer from the flags: --opt, --lr (resolved), --weight-decay, --momentum, --opt-eps, --opt-betas,
    --layer-decay and --opt-kwargs."""
    kwargs: Dict[str, Any] = dict(opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum)
    if args.opt_eps is not None:
        kwargs['eps'] = args.opt_eps
    if args.opt_betas is not None:
        kwargs['betas'] = tuple(args.opt_betas)
    if args.layer_decay is not None:
        kwargs['layer_decay'] = args.layer_decay
    kwargs.update(args.opt_kwargs)
    try:
        return create_optimizer_v2(model, **kwargs)
    except (TypeError, ValueError) as e:
        if not args.opt_kwargs:
            raise
        raise UsageError(f'--opt {args.opt} --opt-kwargs {args.opt_kwargs}: {e}') from e


def create_criterion(args: argparse.Namespace) -> nn.Module:
    """The loss on the (soft) targets: soft-target cross-entropy, or with --bce-loss timm's BinaryCrossEntropy.
    The targets come smoothed (--smoothing) and mixed already, so BCE adds no smoothing of its own."""
    if not args.bce_loss:
        return SoftTargetCrossEntropy()
    return BinaryCrossEntropy(smoothing=0.0, target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum,
                              pos_weight=args.bce_pos_weight)


def prefetcher_enabled(args: argparse.Namespace, device: torch.device) -> bool:
    """timm's prefetcher is used on CUDA unless --no-prefetcher; never on the CPU (nothing to overlap there)."""
    return device.type == 'cuda' and not args.no_prefetcher


def summary_row(epoch: int, train_metrics: Dict[str, float], eval_metrics: Dict[str, float],
                lr: float) -> Dict[str, float]:
    """An epoch's summary.csv row as a dict (update_summary's columns), e.g. for wandb.log."""
    row: Dict[str, float] = OrderedDict(epoch=epoch)
    row.update((f'train_{key}', value) for key, value in train_metrics.items())
    row.update((f'eval_{key}', value) for key, value in eval_metrics.items())
    row['lr'] = lr
    return row


def create_loaders(args: argparse.Namespace, dataset_train, dataset_eval, data_config: Dict[str, Any],
                   device: torch.device, num_classes: int, prefetcher: bool):
    """timm's training and validation loaders and the Mixup/CutMix function (None when off, or when the
    prefetcher's collate function mixes)."""
    collate_fn = None
    mixup_fn = None
    mixup_active = args.mixup > 0 or args.cutmix > 0. or args.cutmix_minmax is not None
    if mixup_active:
        mixup_args = dict(
            mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
            prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
            label_smoothing=args.smoothing, num_classes=num_classes)
        if prefetcher:  # as in timm: mixed in the collate function, on the uint8 batch
            collate_fn = FastCollateMixup(**mixup_args)
        else:
            mixup_fn = Mixup(**mixup_args)

    loader_common = dict(
        mean=data_config['mean'], std=data_config['std'], num_workers=args.workers, distributed=args.distributed,
        pin_memory=args.pin_mem, device=device, use_prefetcher=prefetcher)
    loader_train = create_loader(
        dataset_train, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=True,
        no_aug=args.no_aug, re_prob=args.reprob, re_mode=args.remode, re_count=args.recount, scale=args.scale,
        ratio=args.ratio, hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
        auto_augment=args.aa, num_aug_repeats=args.aug_repeats, interpolation=args.train_interpolation,
        collate_fn=collate_fn, **loader_common)
    loader_eval = create_loader(
        dataset_eval, input_size=data_config['input_size'], batch_size=args.validation_batch_size or args.batch_size,
        is_training=False, interpolation=data_config['interpolation'], crop_pct=data_config['crop_pct'],
        **loader_common)
    mode = image_mode(data_config['input_size'][0], args.input_img_mode)
    for dataset in (dataset_train, dataset_eval):
        set_image_mode(dataset, mode)
    return loader_train, loader_eval, mixup_fn


def draw_run_curriculum(output_dir: str) -> None:
    """curriculum.png in the run folder (`visualize.py curriculum`), when matplotlib is installed."""
    try:
        require_matplotlib('the curriculum plot')
    except UsageError:
        _logger.info(f'no curriculum.png: matplotlib is not installed ({VIZ_INSTALL_HINT})')
        return
    path = os.path.join(output_dir, 'curriculum.png')
    draw_curriculum(os.path.join(output_dir, 'summary.csv'), path, title=os.path.basename(output_dir))
    _logger.info(f'mixing curriculum and top-1 per epoch drawn in {path}')


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Train; returns the final epoch's eval metrics and where the run was written."""
    args = parse_args(argv)
    check_flags(args)
    args.device = args.device or default_device()
    device = init_distributed_device(args)
    if args.distributed:
        _logger.info(f'process {args.rank} of {args.world_size} on {device}')
    elif args.aug_repeats:
        raise UsageError(f'--aug-repeats {args.aug_repeats:g}: repeated augmentation puts each copy of a sample on '
                         'another process, so it needs distributed training (torchrun --nproc_per_node K ...)')
    args.lr, lr_scale = resolve_lr(args, args.world_size)  # the resolved LR is what the run records
    if lr_scale is not None and args.rank == 0:
        _logger.info(f'learning rate {args.lr:.6g}: --lr-base {args.lr_base:g} scaled ({lr_scale}) to the global '
                     f'batch {args.batch_size * args.world_size * args.grad_accum_steps} from {args.lr_base_size}')
    random_seed(args.seed, args.rank)
    run_args = plain_run_arguments(args)  # what checkpoints store: fails here, not at the first save
    if args.rank == 0 and args.experiment and not args.resume:
        prepare_run_folder(os.path.join(args.output, 'train', args.experiment), args.force)

    amp_autocast = create_autocast(device, args.amp, args.amp_dtype)
    loss_scaler = create_loss_scaler(device, args.amp, args.amp_dtype)

    dataset_train, dataset_eval = create_datasets(args)
    num_classes = args.num_classes or dataset_num_classes(dataset_train)
    if not num_classes:
        raise UsageError('cannot tell the number of classes of this dataset: pass --num-classes')
    model, model_config = build_model(model_arguments(args), num_classes)
    if args.rank == 0:
        num_params = sum(p.numel() for p in model.parameters())
        _logger.info(f'model {args.model}: {num_params:,} parameters, TokenMixup '
                     f'{getattr(model, "tokenmixup_cfg", None)}')
    model.to(device)
    model = configure_model(model, args)

    data_config = resolve_data_settings(args, model, verbose=args.rank == 0)
    task = TokenMixupTask(model, num_classes, smoothing=args.smoothing, device=device, verbose=args.rank == 0,
                          criterion=create_criterion(args))
    optimizer = create_optimizer(model, args)
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay, use_warmup=args.model_ema_warmup)

    resume_epoch = None
    resume_state = None
    if args.resume:
        resume_epoch = resume_task_checkpoint(
            task, args.resume, optimizer=None if args.no_resume_opt else optimizer, loss_scaler=loss_scaler,
            log_info=args.rank == 0)
        if task.has_ema():
            load_task_ema_checkpoint(task, args.resume)
        resume_state = load_training_checkpoint(args.resume)

    if args.torchcompile:
        task.compile(backend=args.torchcompile)
    if args.distributed:
        task.prepare_distributed(device_ids=[device.index] if device.type == 'cuda' else None)

    prefetcher = prefetcher_enabled(args, device)
    loader_train, loader_eval, mixup_fn = create_loaders(
        args, dataset_train, dataset_eval, data_config, device, num_classes, prefetcher)

    updates_per_epoch = (len(loader_train) + args.grad_accum_steps - 1) // args.grad_accum_steps
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, decay_epochs=args.decay_epochs,
        decay_milestones=args.decay_milestones, cooldown_epochs=args.cooldown_epochs, decay_rate=args.decay_rate,
        min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs,
        step_on_epochs=not args.sched_on_updates, updates_per_epoch=updates_per_epoch)
    if lr_scheduler is None:
        raise UsageError(f'--sched {args.sched!r} is not a timm scheduler (cosine, step, multistep, constant, ...)')
    start_epoch = 0
    if args.start_epoch is not None:
        start_epoch = args.start_epoch
    elif resume_epoch is not None:
        start_epoch = resume_epoch
    saved_epochs = (resume_state.get('args') or {}).get('epochs') if resume_state is not None else None
    if resume_state is not None and 'lr_scheduler' in resume_state and saved_epochs in (None, args.epochs) and \
            resume_state['lr_scheduler'].get('t_initial') == getattr(lr_scheduler, 't_initial', None):
        lr_scheduler.load_state_dict(resume_state['lr_scheduler'])  # (an extended or re-batched run keeps the new one)
    if start_epoch >= num_epochs:
        finished = f'nothing to do: the run finished at epoch {start_epoch - 1} (of {num_epochs})'
        if args.rank == 0:
            _logger.info(finished + '; pass a larger --epochs to extend it')
            print(f'Done: {finished}. Checkpoint: {args.resume}', flush=True)
        return {'eval_metrics': {}, 'output_dir': os.path.dirname(os.path.abspath(args.resume or '.')),
                'finished': True}
    if start_epoch > 0:
        lr_scheduler.step(start_epoch) if not args.sched_on_updates else lr_scheduler.step_update(
            start_epoch * updates_per_epoch)

    output_dir = None
    saver = None
    wandb = None
    if args.rank == 0:
        if args.resume and not args.experiment:
            output_dir = os.path.dirname(os.path.abspath(args.resume))
        else:
            experiment = args.experiment or '-'.join([
                datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model),
                str(data_config['input_size'][-1])])
            output_dir = get_outdir(args.output, 'train', experiment)
        saver = AtomicCheckpointSaver(
            model=model, optimizer=optimizer, args=args, amp_scaler=loss_scaler, task=task,
            checkpoint_dir=output_dir, recovery_dir=output_dir, decreasing=args.eval_metric == 'loss',
            max_history=args.checkpoint_hist, model_config=model_config, lr_scheduler=lr_scheduler)
        if resume_state is not None and 'saver' in resume_state:
            saver.load_state_dict(resume_state['saver'])
        drop_summary_rows_from(os.path.join(output_dir, 'summary.csv'), start_epoch)
        if not os.path.exists(os.path.join(output_dir, 'args.yaml')):  # written once, when the run starts
            with atomic_open(os.path.join(output_dir, 'args.yaml')) as f:
                f.write(yaml.safe_dump(run_args, default_flow_style=False))
        _logger.info(f'writing to {output_dir}; training epochs {start_epoch}..{num_epochs - 1}')
        if args.log_wandb:
            wandb = import_wandb()
            wandb.init(project=args.wandb_project, name=os.path.basename(output_dir), config=run_args,
                       tags=args.wandb_tags or None, resume='must' if args.wandb_resume_id else None,
                       id=args.wandb_resume_id or None)
    if resume_state is not None and 'rng_state' in resume_state:
        restore_rng_state(resume_state['rng_state'])  # where the saved run's next epoch started from

    eval_metrics: Dict[str, float] = {}
    num_updates = start_epoch * updates_per_epoch
    for epoch in range(start_epoch, num_epochs):
        if args.distributed and hasattr(loader_train.sampler, 'set_epoch'):
            loader_train.sampler.set_epoch(epoch)
        if args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
            if mixup_fn is not None:
                mixup_fn.mixup_enabled = False
            elif prefetcher and getattr(loader_train, 'mixup_enabled', False):
                loader_train.mixup_enabled = False
        train_metrics, num_updates = train_one_epoch(
            epoch, task, loader_train, optimizer, args, device, lr_scheduler=lr_scheduler,
            amp_autocast=amp_autocast, loss_scaler=loss_scaler, mixup_fn=mixup_fn, num_updates=num_updates)
        eval_metrics = evaluate(task.get_eval_model(), loader_eval, device, amp_autocast, args.distributed)
        if task.has_ema():  # as in timm, the EMA weights' metrics are the ones reported and ranked
            eval_metrics = evaluate(task.get_eval_model(ema=True), loader_eval, device, amp_autocast, args.distributed)
        lr = max(group['lr'] for group in optimizer.param_groups)  # the schedule's (--layer-decay: the top layer's)
        if args.rank == 0:
            _logger.info(
                f'epoch {epoch}: train loss {train_metrics["loss"]:.4f}, eval loss {eval_metrics["loss"]:.4f}, '
                f'top-1 {eval_metrics["top1"]:.2f}%, top-5 {eval_metrics["top5"]:.2f}%' + ''.join(
                    f', {key} {value:.3g}' for key, value in train_metrics.items() if key.endswith('mixed_samples')))
            append_summary_row(epoch, train_metrics, eval_metrics, os.path.join(output_dir, 'summary.csv'), lr)
            if wandb is not None:
                wandb.log(summary_row(epoch, train_metrics, eval_metrics, lr))
            saver.save_checkpoint(epoch, metric=eval_metrics[args.eval_metric])
        lr_scheduler.step(epoch + 1, eval_metrics[args.eval_metric])

    if args.distributed:
        torch.distributed.barrier()
    result = {'eval_metrics': eval_metrics, 'output_dir': output_dir}
    if args.rank == 0 and eval_metrics:
        best = f' (best {saver.best_metric:.2f} at epoch {saver.best_epoch})' if saver.best_metric is not None else ''
        print(f'Done: validation top-1 {eval_metrics["top1"]:.2f}%{best}. '
              f'Checkpoint: {os.path.join(output_dir, "last.pth.tar")}', flush=True)
        draw_run_curriculum(output_dir)
    if wandb is not None and hasattr(wandb, 'finish'):
        wandb.finish()
    if args.distributed:
        torch.distributed.destroy_process_group()
    return result


if __name__ == '__main__':
    setup_logging()
    run_tool(main, 'train.py')
