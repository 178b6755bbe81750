#!/usr/bin/env python3
""" TokenMixup validation: timm's evaluation recipe for the zoo and for `train.py` checkpoints

Validates one model on one dataset split and reports timm's result row (`top1`, `top1_err`, `top5`,
`top5_err`, `param_count`, `img_size`, `crop_pct`, `interpolation`) plus the cross-entropy `loss`.

The model comes from one of:
- a `train.py` checkpoint: `python validate.py --checkpoint output/train/RUN/last.pth.tar`. The model
  is rebuilt from the configuration recorded in the checkpoint (architecture, classes, every model
  keyword argument); `--model`, `--num-classes`, `--img-size` and `--model-kwargs` override the record.
  The dataset, split and eval preprocessing (`--crop-pct`, `--mean`, `--std`, `--interpolation`)
  default to the ones the run evaluated with, so the top-1 is the one in the run's summary.csv.
  `--use-ema` validates the EMA weights instead (runs trained with `--model-ema`).
- a plain state dict (or a checkpoint without a recorded configuration): needs `--model NAME`.
- pretrained weights: `--model NAME --pretrained` (NAME may be `hf-hub:org/repo` or `local-dir:PATH`).

Without a checkpoint that names one, the dataset is the embedded digits set (validation split),
which needs no download. Evaluation is `train.py`'s eval pass (`tokenmixup_tools.evaluation`):
timm's eval transforms (`create_loader(is_training=False)`, no prefetcher) and timm's
`ClassificationEvaluator`.

Mistakes in the flags (an unknown model, a missing or unreadable checkpoint, weights that do not fit the
model, a dataset that is not under --data-dir) end the command with one line on stderr and exit status 2
(`tokenmixup_tools.cli`; `TOKENMIXUP_DEBUG=1` shows the traceback); in-process `main()` raises `UsageError`.

    python validate.py --checkpoint output/train/RUN/last.pth.tar --results-file results.csv
    python validate.py --model cct_7_3x1 --pretrained --dataset torch/cifar100 --data-dir /data/cifar
"""
import argparse
import csv
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import torch
from timm.data import create_loader, resolve_data_config
from timm.utils import ParseKwargs

import models  # noqa: F401  (registers the zoo with timm)
from tokenmixup_tools.checkpoints import RUN_ARGS_KEY
from tokenmixup_tools.cli import UsageError, read_checkpoint_argument, run_tool, setup_logging
from tokenmixup_tools.datasets import (
    DEFAULT_DATASET, create_dataset_split, dataset_num_classes, image_mode, model_in_chans, set_image_mode,
    with_channels)
from tokenmixup_tools.evaluation import evaluate
from tokenmixup_tools.files import atomic_open
from tokenmixup_tools.loading import load_eval_model, recorded_img_size
from tokenmixup_tools.runtime import create_autocast, default_device

_logger = logging.getLogger('validate')

DEFAULT_SPLIT = 'validation'
RESULTS_FORMATS = ('csv', 'json')


def build_parser() -> argparse.ArgumentParser:
    """validate.py's argument parser, new for every parse."""
    parser = argparse.ArgumentParser(
        description='TokenMixup validation (timm recipe). `--checkpoint PATH` of a train.py run is enough.')

    group = parser.add_argument_group(
        f'Dataset (default: what the checkpoint\'s run evaluated on, else {DEFAULT_DATASET})')
    group.add_argument('--data-dir', metavar='DIR', default=None, help='dataset root (not needed for embedded/*)')
    group.add_argument('--dataset', metavar='NAME', default=None,
                       help=f'{DEFAULT_DATASET} or any timm dataset: "" for an ImageFolder under --data-dir, '
                            'torch/cifar10, torch/cifar100, ...')
    group.add_argument('--split', metavar='NAME', default=None, help=f'dataset split (default: {DEFAULT_SPLIT})')
    group.add_argument('--dataset-download', action=argparse.BooleanOptionalAction, default=False,
                       help='allow torchvision datasets to download (needs a network)')
    group.add_argument('--input-img-mode', default=None, type=str, metavar='MODE',
                       help='PIL mode every image is converted to (default: the run\'s, else L, RGB or RGBA by the '
                            'model\'s channels)')

    group = parser.add_argument_group('Model')
    group.add_argument('--model', '-m', metavar='NAME', default=None,
                       help='model name (default: the checkpoint\'s recorded architecture)')
    group.add_argument('--checkpoint', default='', type=str, metavar='PATH',
                       help='a train.py checkpoint (the model is rebuilt from it) or a plain state dict '
                            '(needs --model)')
    group.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=False,
                       help='validate the pretrained weights of --model (implied when there is no --checkpoint)')
    group.add_argument('--use-ema', action=argparse.BooleanOptionalAction, default=False,
                       help='validate the checkpoint\'s EMA weights (runs trained with --model-ema)')
    group.add_argument('--num-classes', type=int, default=None, metavar='N',
                       help='classes (default: the checkpoint\'s; for a plain state dict the dataset\'s)')
    group.add_argument('--img-size', type=int, default=None, metavar='N',
                       help='image size (default: the checkpoint\'s, else the model\'s)')
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                       help='model keyword arguments k=v, over the checkpoint\'s recorded ones')

    group = parser.add_argument_group('Eval preprocessing (default: the checkpoint\'s run, else the model\'s)')
    group.add_argument('--crop-pct', default=None, type=float, metavar='PCT', help='center crop fraction')
    group.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN', help='normalisation mean')
    group.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='normalisation std')
    group.add_argument('--interpolation', default=None, type=str, metavar='NAME', help='resize interpolation')

    group = parser.add_argument_group('Run')
    group.add_argument('-b', '--batch-size', type=int, default=128, metavar='N', help='batch size (default: 128)')
    group.add_argument('-j', '--workers', type=int, default=0, metavar='N', help='data loading processes (default: 0)')
    group.add_argument('--pin-mem', action=argparse.BooleanOptionalAction, default=False)
    group.add_argument('--device', default=None, type=str, help='cuda, cpu, ... (default: cuda if available)')
    group.add_argument('--amp', action=argparse.BooleanOptionalAction, default=False,
                       help='mixed precision (autocast; far slower than float32 on the CPU)')
    group.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'))
    group.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor',
                       help='torch.compile the model with this backend (default when given: inductor)')
    group.add_argument('--log-freq', type=int, default=10, metavar='N', help='batches between progress lines')

    group = parser.add_argument_group('Results')
    group.add_argument('--results-file', default='', type=str, metavar='PATH',
                       help='write the result rows here (replaced whole, never half-written)')
    group.add_argument('--results-format', default='csv', choices=RESULTS_FORMATS,
                       help='csv (a header and one row per model) or json (a list of rows)')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line; at least one of --checkpoint and --model is needed."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.model:
        parser.error('nothing to validate: give --checkpoint PATH (a train.py checkpoint) or --model NAME')
    return args


# ---------------------------------------------------------------------------------------------
# checkpoint, dataset and model

def resolve_run_defaults(args: argparse.Namespace, checkpoint: Optional[Dict[str, Any]]) -> None:
    """Fill the dataset and eval-preprocessing flags left unset from the checkpoint's training run.

    The dataset location (`--data-dir`, `--split`) is taken from the run only when the dataset is
    the run's. Anything still unset falls back to the embedded digits set, validation split.
    """
    train_args = checkpoint.get(RUN_ARGS_KEY) if checkpoint is not None else None

    def recorded(name: str) -> Any:
        value = train_args.get(name) if train_args is not None else None
        return None if value == '' and name == 'interpolation' else value

    same_dataset = args.dataset is None or (train_args is not None and args.dataset == recorded('dataset'))
    if args.dataset is None:
        args.dataset = recorded('dataset') if recorded('dataset') is not None else DEFAULT_DATASET
    if same_dataset:
        args.data_dir = args.data_dir if args.data_dir is not None else recorded('data_dir')
        args.split = args.split if args.split is not None else recorded('val_split')
    args.split = args.split or DEFAULT_SPLIT
    for name in ('crop_pct', 'mean', 'std', 'interpolation', 'input_img_mode'):
        if getattr(args, name) is None:
            setattr(args, name, recorded(name))


def create_eval_dataset(args: argparse.Namespace):
    """The split to validate on: the embedded set, or any dataset timm's `create_dataset` knows."""
    try:
        return create_dataset_split(
            args.dataset, args.split, data_dir=args.data_dir, download=args.dataset_download,
            batch_size=args.batch_size)
    except UsageError as e:
        raise UsageError(f'--dataset {args.dataset!r} --split {args.split!r}: {e}') from e


# ---------------------------------------------------------------------------------------------
# evaluation and results

def validate(args: argparse.Namespace) -> Dict[str, Any]:
    """Validate the model the flags name; returns its result row."""
    device = torch.device(args.device or default_device())
    amp_autocast = create_autocast(device, args.amp, args.amp_dtype)
    if args.use_ema and not args.checkpoint:
        raise UsageError('--use-ema needs --checkpoint (pretrained weights have no EMA copy)')

    checkpoint = read_checkpoint_argument(args.checkpoint, '--checkpoint') if args.checkpoint else None
    resolve_run_defaults(args, checkpoint)
    dataset = create_eval_dataset(args)
    if checkpoint is None:
        _logger.info(f'no --checkpoint: validating the pretrained weights of {args.model}')
    elif args.pretrained:
        _logger.warning('--pretrained is ignored: the weights come from --checkpoint')
    model, name = load_eval_model(
        args.model, checkpoint, args.checkpoint, num_classes=args.num_classes, img_size=args.img_size,
        model_kwargs=args.model_kwargs, use_ema=args.use_ema, dataset_classes=dataset_num_classes(dataset))
    param_count = sum(p.numel() for p in model.parameters())
    dataset_classes = dataset_num_classes(dataset)
    if not getattr(model, 'num_classes', 0):
        raise UsageError(f'{name} has no classifier (num_classes 0): pass --num-classes')
    if dataset_classes and dataset_classes > model.num_classes:
        raise UsageError(f'--dataset {args.dataset} has {dataset_classes} classes, the model has '
                         f'{model.num_classes}: pass a matching --num-classes or --dataset')
    _logger.info(f'model {name}: {param_count:,} parameters'
                 + (f', {"EMA" if args.use_ema else "main"} weights of {args.checkpoint}' if checkpoint else ''))

    img_size = args.img_size or args.model_kwargs.get('img_size') or recorded_img_size(checkpoint)
    data_args = dict(vars(args), img_size=img_size)  # the size the model was built for
    data_config = resolve_data_config(data_args, model=model, verbose=True)
    in_chans = model_in_chans(model)
    if in_chans is not None and in_chans != data_config['input_size'][0]:  # e.g. trained with --in-chans 1
        data_config = with_channels(data_config, in_chans)
    model.to(device)
    if args.torchcompile:
        model = torch.compile(model, backend=args.torchcompile)
    loader = create_loader(
        dataset, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=False,
        interpolation=data_config['interpolation'], crop_pct=data_config['crop_pct'], mean=data_config['mean'],
        std=data_config['std'], num_workers=args.workers, distributed=False, pin_memory=args.pin_mem,
        device=device, use_prefetcher=False)
    # after create_loader, which sets the transform
    set_image_mode(dataset, image_mode(data_config['input_size'][0], args.input_img_mode))

    metrics = evaluate(model, loader, device, amp_autocast, log_interval=args.log_freq)
    top1, top5 = metrics['top1'], metrics['top5']
    return OrderedDict(
        model=name,
        top1=round(top1, 4), top1_err=round(100 - top1, 4),
        top5=round(top5, 4), top5_err=round(100 - top5, 4),
        loss=round(metrics['loss'], 6),
        param_count=round(param_count / 1e6, 2),
        img_size=data_config['input_size'][-1],
        crop_pct=data_config['crop_pct'],
        interpolation=data_config['interpolation'],
    )


def write_results(path: str, rows: List[Dict[str, Any]], results_format: str = 'csv') -> None:
    """Write the result rows to `path` as CSV (header + one row each) or JSON (a list of rows).

    The file replaces `path` whole (`tokenmixup_tools.files`): readers see the old file or the new one.
    """
    if results_format not in RESULTS_FORMATS:
        raise ValueError(f'--results-format must be one of {RESULTS_FORMATS}, got {results_format!r}')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_open(path, 'w', newline='') as f:
        if results_format == 'json':
            json.dump(rows, f, indent=4)
            f.write('\n')
        else:
            fieldnames = list(OrderedDict((key, None) for row in rows for key in row))
            writer = csv.DictWriter(f, fieldnames=fieldnames, restval='')
            writer.writeheader()
            writer.writerows(rows)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """Validate; prints one line per model and returns the result rows."""
    if not logging.root.handlers:
        setup_logging()
    args = parse_args(argv)
    rows = [validate(args)]
    for row in rows:
        print(f'{row["model"]}: top-1 {row["top1"]:.3f}% (err {row["top1_err"]:.3f}), top-5 {row["top5"]:.3f}% '
              f'(err {row["top5_err"]:.3f}), loss {row["loss"]:.4f}, {row["param_count"]}M parameters, '
              f'{row["img_size"]}px crop {row["crop_pct"]} {row["interpolation"]}', flush=True)
    if args.results_file:
        write_results(args.results_file, rows, args.results_format)
        _logger.info(f'results written to {args.results_file}')
    return rows


if __name__ == '__main__':
    setup_logging()
    run_tool(main, 'validate.py')
