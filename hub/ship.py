#!/usr/bin/env python3
""" Ship a `train.py` run's weights inside the package, as the pretrained tag `NAME.TAG`

    python -m hub.ship output/train/RUN/last.pth.tar --name cct_2_3x2_htm_vtm.digits \\
        --command "python train.py --seed 42 --experiment digits-cct_2_3x2_htm_vtm"

Exports the checkpoint exactly as `python -m hub.publish --no-push` would (its `model.safetensors`), checks that
the registered name builds the very model the run trained (same architecture, classes, image size and every
TokenMixup setting in effect, since a pretrained tag cannot carry model arguments: HTM's settings count where the
model has HTM layers, VTM's where it has VTM layers), and writes into `models/weights/`
(`--dest`):

- `NAME.TAG.safetensors`: the weights, which `models/cct.py` registers for the tag through timm's `file` source;
- `NAME.TAG.json`: the record: the command given, the git commit of the checkout, the seed, the epoch, the
  run's measured validation top-1 / top-5 / loss for that epoch (its summary.csv row), the file's size and
  SHA-256, and the run's arguments.

Before anything is written, `timm.create_model(NAME.TAG, pretrained=True)` on the new file must give the
checkpoint's eval logits. Both files replace their old versions whole. Mistakes end with one line on stderr
and exit status 2.
"""
import argparse
import csv
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import timm
import torch
from timm.models import split_model_name_tag

from models.cct import SHIPPED_WEIGHTS_DIR
from tokenmixup_tools.checkpoints import (
    RUN_ARGS_KEY, checkpoint_weights, create_model_from_config, load_weights, model_config_from_checkpoint)
from tokenmixup_tools.cli import UsageError, read_checkpoint_argument, run_tool
from tokenmixup_tools.files import atomic_duplicate, atomic_open

from . import publish

MAX_BYTES = 2 * 1024 * 1024  # shipped files stay small: they are in every install


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='Ship a train.py run as a packaged pretrained tag.')
    parser.add_argument('checkpoint', metavar='CHECKPOINT', help='a train.py checkpoint (last.pth.tar)')
    parser.add_argument('--name', required=True, metavar='NAME.TAG', help='the registered name and tag it becomes')
    parser.add_argument('--command', required=True, metavar='TEXT', help='the train.py command that made the run')
    parser.add_argument('--dest', default=str(SHIPPED_WEIGHTS_DIR), metavar='DIR',
                        help='folder of the shipped weights (default: the package\'s models/weights)')
    return parser


def git_commit(folder: Path) -> Dict[str, Any]:
    """The checkout's HEAD commit and whether tracked files differ from it (None where git is unavailable)."""
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=folder, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=folder,
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {'commit': None, 'dirty': None}
    return {'commit': commit, 'dirty': bool(status)}


def summary_row(checkpoint_path: str, epoch: int) -> Dict[str, float]:
    """The summary.csv row of `epoch` in the checkpoint's run folder."""
    summary = Path(checkpoint_path).resolve().parent / 'summary.csv'
    if not summary.is_file():
        raise UsageError(f'{checkpoint_path}: no summary.csv beside it, so its measured top-1 is unknown')
    with open(summary, newline='') as f:
        for row in csv.DictReader(f):
            if int(float(row['epoch'])) == epoch:
                return {key: float(value) for key, value in row.items() if value != ''}
    raise UsageError(f'{summary} has no row for epoch {epoch}, the epoch of {checkpoint_path}')


def check_registered_model(name: str, trained: torch.nn.Module) -> None:
    """`timm.create_model(name)` must build the trained model: a tag cannot carry model arguments."""
    registered = timm.create_model(name, pretrained=False)
    # the TokenMixup settings that the model reads: a tau passed to a model without HTM changes nothing
    for what, mine, theirs in (
            ('num_classes', registered.num_classes, trained.num_classes),
            ('img_size', getattr(registered, 'img_size', None), getattr(trained, 'img_size', None)),
            ('TokenMixup settings', registered.tokenmixup_cfg.in_effect(), trained.tokenmixup_cfg.in_effect())):
        if mine != theirs:
            raise UsageError(f'--name {name}: the registered model has {what} {mine}, the run trained {theirs}; '
                             'register the tag with the run\'s settings, or train with the registered ones')
    shapes = {key: tuple(value.shape) for key, value in registered.state_dict().items()}
    if shapes != {key: tuple(value.shape) for key, value in trained.state_dict().items()}:
        raise UsageError(f'--name {name}: the registered model\'s parameters differ from the run\'s')


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Ship; returns the record written."""
    args = build_parser().parse_args(argv)
    architecture, tag = split_model_name_tag(args.name)
    if not tag:
        raise UsageError(f'--name {args.name}: expected NAME.TAG, e.g. cct_2_3x2.digits')
    cfg = timm.models.get_pretrained_cfg(args.name)
    if cfg is None or not cfg.file or Path(cfg.file).name != f'{args.name}.safetensors':
        raise UsageError(f'--name {args.name}: not registered as a shipped tag (models/cct.py SHIPPED_CFGS or '
                         'CCT_BASES, with file=shipped_weights_file(NAME.TAG))')

    checkpoint = read_checkpoint_argument(args.checkpoint, 'CHECKPOINT')
    record = model_config_from_checkpoint(checkpoint)
    if record is None or split_model_name_tag(record['architecture'])[0] != architecture:
        raise UsageError(f'CHECKPOINT {args.checkpoint}: expected a train.py checkpoint of {architecture}, it records '
                         f'{record["architecture"] if record else "no model configuration"}')
    trained = create_model_from_config(record)
    load_weights(trained, checkpoint_weights(checkpoint))
    trained.eval()
    check_registered_model(architecture, trained)
    epoch = int(checkpoint['epoch'])
    row = summary_row(args.checkpoint, epoch)
    train_args = checkpoint.get(RUN_ARGS_KEY) or {}

    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    weights = dest / f'{args.name}.safetensors'
    with tempfile.TemporaryDirectory(dir=dest, prefix='.ship-') as staging:
        exported = Path(staging) / 'export'
        publish.main([args.checkpoint, '--no-push', '--local-dir', str(exported), '--tag', tag])
        staged_weights = exported / publish.WEIGHTS_NAME
        size = staged_weights.stat().st_size
        if size > MAX_BYTES:
            raise UsageError(f'{args.name}: the weights take {size:,} bytes, more than the {MAX_BYTES:,} a shipped '
                             'file may')
        loaded = timm.create_model(args.name, pretrained=True, pretrained_cfg_overlay=dict(file=str(staged_weights)))
        x = torch.randn(4, *loaded.pretrained_cfg['input_size'], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if not torch.equal(loaded.eval()(x), trained(x)):
                raise UsageError(f'{args.name}: the exported weights do not give the checkpoint\'s eval logits')
        shipped = {
            'name': args.name, 'architecture': architecture, 'tag': tag, 'file': weights.name, 'bytes': size,
            'sha256': sha256(staged_weights), 'command': args.command,
            **git_commit(Path(__file__).resolve().parents[1]),
            'seed': train_args.get('seed'), 'epochs': train_args.get('epochs'), 'epoch': epoch,
            'dataset': train_args.get('dataset'), 'split': train_args.get('val_split'),
            'top1': row['eval_top1'], 'top5': row['eval_top5'], 'eval_loss': row['eval_loss'],
            'train_args': train_args,
        }
        atomic_duplicate(staged_weights, weights, hard_link=False)
    with atomic_open(dest / f'{args.name}.json') as f:
        json.dump(shipped, f, indent=2, allow_nan=False)
        f.write('\n')
    print(f'Shipped {args.name}: {weights} ({size:,} bytes), top-1 {row["eval_top1"]:.2f}% at epoch {epoch}; '
          f'record {dest / (args.name + ".json")}', flush=True)
    return shipped


if __name__ == '__main__':
    run_tool(main, 'python -m hub.ship')
