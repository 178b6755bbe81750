#!/usr/bin/env python3
""" TokenMixup pictures: token saliency (paper Fig. 3), an HTM mix, and a run's mixing curriculum (paper Fig. 4)

    python visualize.py saliency [--model NAME | --checkpoint PATH] [--images FILE_OR_FOLDER ...] [--count 4]
    python visualize.py mix [--model NAME | --checkpoint PATH] [--batch-size 64] [--pairs 4] [--seed 0]
    python visualize.py curriculum RUN_FOLDER_OR_SUMMARY_CSV [--output PNG]

`saliency` writes one PNG per image: the input, the 1-step attention saliency at the HTM block (what HTM mixes
by), the attention rollout over every block, and the gradient saliency of the loss (the costly map HTM avoids),
each min-max scaled, with the Pearson correlation of each attention map to the gradient map in the title, in
`saliency.json` (with the raw maps) and on stdout.

`mix` runs one training forward, `model(x, target, return_mix=True)`, on a batch and draws, for the first
samples HTM mixed, the sample and its partner with the replaced tokens tinted, and the mixed label weights: the
mix the model itself made (the mask and partners it returned; `mix.json` holds them).

`curriculum` plots a train.py run's summary.csv: mixed samples per batch and replaced tokens per mixed sample
per epoch for each HTM layer, and validation top-1. train.py draws it into the run folder at the end of a run
when matplotlib is installed.

The model is `--model` with its pretrained weights (default: the shipped `cct_2_3x2_htm_vtm.digits`; also
`hf-hub:ORG/NAME`, `local-dir:PATH` or any registered name with weights), or a train.py `--checkpoint`. Images
come from the embedded digits set unless `--images` names files or folders. Drawing needs matplotlib:
`pip install -e '.[viz]'`. Mistakes in the flags end with one line on stderr and exit status 2.
"""
import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from timm.data import create_transform
from timm.utils import ParseKwargs

import models  # noqa: F401  (registers the zoo with timm)
from tokenmixup_tools.cli import UsageError, read_checkpoint_argument, run_tool, setup_logging
from tokenmixup_tools.datasets import DEFAULT_DATASET, create_dataset_split, image_mode
from tokenmixup_tools.figures import (
    correlation, draw_curriculum, draw_mix, draw_saliency, replaced_pairs, require_matplotlib, saliency_maps,
    token_grid)
from tokenmixup_tools.files import atomic_open
from tokenmixup_tools.loading import load_eval_model, recorded_data_config
from tokenmixup_tools.runtime import default_device

_logger = logging.getLogger('visualize')

DEFAULT_MODEL = 'cct_2_3x2_htm_vtm.digits'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif', '.tiff')
ATTENTION_MAPS = ('attention', 'rollout')


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('Model')
    group.add_argument('--model', '-m', metavar='NAME', default=None,
                       help=f'model with pretrained weights, or the architecture of --checkpoint '
                            f'(default: {DEFAULT_MODEL} without --checkpoint)')
    group.add_argument('--checkpoint', default='', metavar='PATH', help='a train.py checkpoint (or a state dict)')
    group.add_argument('--use-ema', action=argparse.BooleanOptionalAction, default=False,
                       help="draw the checkpoint's EMA weights (default: off)")
    group.add_argument('--num-classes', type=int, default=None, metavar='N', help='classes (default: the weights\')')
    group.add_argument('--img-size', type=int, default=None, metavar='N', help='image size (default: the model\'s)')
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='K=V',
                       help='model keyword arguments, e.g. TokenMixup settings (tau=1.5)')
    group.add_argument('--device', default=None, help='cuda, cpu, ... (default: cuda if available)')
    group.add_argument('--dataset', default=DEFAULT_DATASET, metavar='NAME',
                       help='dataset the images come from: an embedded one, torch/fashion_mnist (torch/mnist, '
                            'torch/kmnist) or any timm dataset under --data-dir (default: %(default)s)')
    group.add_argument('--data-dir', default=None, metavar='DIR', help='dataset root (not needed for embedded/*)')
    group.add_argument('--output', default=None, metavar='DIR',
                       help='folder for the PNGs and the JSON (default: ./output/visualize/COMMAND)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0].strip())
    commands = parser.add_subparsers(dest='command', required=True, metavar='{saliency,mix,curriculum}')

    saliency = commands.add_parser('saliency', help='attention, rollout and gradient saliency of images (Fig. 3)')
    _add_model_args(saliency)
    saliency.add_argument('--images', nargs='+', default=None, metavar='PATH',
                          help='image files or folders of them (default: images of --dataset --split)')
    saliency.add_argument('--split', default='validation', help='split of --dataset (default: %(default)s)')
    saliency.add_argument('--count', type=int, default=4, metavar='N',
                          help='images of --dataset to draw (default: %(default)s)')
    saliency.add_argument('--block', type=int, default=None, metavar='L',
                          help="block whose attention gives the 1-step saliency (default: the model's first HTM "
                               'block, else its middle block)')

    mix = commands.add_parser('mix', help='the tokens one HTM layer replaced in a training batch, and the labels')
    _add_model_args(mix)
    mix.add_argument('--split', default='train',
                     help='split of --dataset the batch is drawn from (default: %(default)s)')
    mix.add_argument('--batch-size', type=int, default=64, metavar='B',
                     help='samples in the batch, which HTM pairs (default: %(default)s)')
    mix.add_argument('--pairs', type=int, default=4, metavar='N', help='mixed samples to draw (default: %(default)s)')
    mix.add_argument('--seed', type=int, default=0, help='seed of the batch and of the forward (default: %(default)s)')
    mix.add_argument('--block', type=int, default=None, metavar='L', help="HTM block (default: the model's first)")

    curriculum = commands.add_parser('curriculum', help="a run's mixing curriculum and top-1 per epoch (Fig. 4)")
    curriculum.add_argument('run', metavar='RUN', help='a train.py run folder, or its summary.csv')
    curriculum.add_argument('--output', default=None, metavar='PNG',
                            help='where to write the PNG (default: curriculum.png beside the summary.csv)')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ('count', 'pairs'):
        if getattr(args, name, 1) < 1:
            parser.error(f'--{name} must be >= 1, got {getattr(args, name)}')
    if getattr(args, 'batch_size', 2) < 2:
        parser.error(f'--batch-size must be >= 2 (HTM pairs samples), got {args.batch_size}')
    return args


# ---------------------------------------------------------------------------------------------
# model and images

def load_model(args: argparse.Namespace) -> Tuple[nn.Module, str, Dict[str, Any]]:
    """The model the flags name, in eval mode on the device, its name and its eval data config."""
    checkpoint = read_checkpoint_argument(args.checkpoint, '--checkpoint') if args.checkpoint else None
    model_name = args.model or (None if checkpoint is not None else DEFAULT_MODEL)
    model, name = load_eval_model(
        model_name, checkpoint, args.checkpoint, num_classes=args.num_classes, img_size=args.img_size,
        model_kwargs=args.model_kwargs, use_ema=args.use_ema)
    if not hasattr(model, 'tokenmixup_cfg'):
        raise UsageError(f'--model {name} is not a model of this zoo (it has no TokenMixup blocks to read)')
    data_config = recorded_data_config(model, checkpoint, args.img_size or args.model_kwargs.get('img_size'))
    device = torch.device(args.device or default_device())
    return model.to(device).eval(), name, data_config


def _transform(data_config: Dict[str, Any]):
    return create_transform(
        data_config['input_size'], is_training=False, interpolation=data_config['interpolation'],
        mean=data_config['mean'], std=data_config['std'], crop_pct=data_config['crop_pct'])


def _image_mode(data_config: Dict[str, Any]) -> str:
    return image_mode(data_config['input_size'][0]) or 'RGB'


def image_files(paths: Sequence[str]) -> List[Path]:
    """The image files named, folders expanded (sorted; files with an image suffix)."""
    files: List[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise UsageError(f'--images {given}: the folder holds no image file ({", ".join(IMAGE_SUFFIXES)})')
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f'--images {given}: no such file or folder')
    return files


def load_images(args: argparse.Namespace, data_config: Dict[str, Any], count: int, seed: Optional[int] = None
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[str]]:
    """(N, C, H, W) model inputs, their labels (None for image files) and where each image came from.

    Image files come from --images; otherwise `count` images of --dataset --split, the first ones, or with
    `seed` a random draw."""
    transform = _transform(data_config)
    if getattr(args, 'images', None):
        inputs, sources = [], []
        for path in image_files(args.images):
            try:
                with Image.open(path) as image:
                    inputs.append(transform(image.convert(_image_mode(data_config))))
            except OSError as e:
                raise UsageError(f'--images {path}: not a readable image ({e})') from e
            sources.append(str(path))
        return torch.stack(inputs), None, sources
    try:
        dataset = create_dataset_split(args.dataset, args.split, data_dir=args.data_dir)
    except UsageError as e:
        raise UsageError(f'--dataset {args.dataset} --split {args.split}: {e}') from e
    if count > len(dataset):
        raise UsageError(f'{count} images asked for, but {args.dataset} {args.split} holds {len(dataset)}')
    if seed is None:
        indices = list(range(count))
    else:
        indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    inputs, labels = [], []
    for index in indices:
        image, label = dataset[index]
        inputs.append(transform(image.convert(_image_mode(data_config))))
        labels.append(label)
    return torch.stack(inputs), torch.tensor(labels), [f'{args.dataset}/{args.split}[{i}]' for i in indices]


def displayable(inputs: torch.Tensor, data_config: Dict[str, Any]) -> np.ndarray:
    """Normalised (N, C, H, W) inputs -> (N, H, W, C) images in [0, 1]."""
    channels = inputs.shape[1]
    mean = torch.tensor(data_config['mean'][:channels]).view(1, -1, 1, 1)
    std = torch.tensor(data_config['std'][:channels]).view(1, -1, 1, 1)
    return (inputs.cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _output_folder(args: argparse.Namespace) -> Path:
    folder = Path(args.output or os.path.join('output', 'visualize', args.command))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    with atomic_open(path) as f:
        json.dump(data, f, indent=1, allow_nan=False)
        f.write('\n')


def _htm_blocks(model: nn.Module) -> List[int]:
    return sorted(int(index) for index in getattr(model, 'htm', {}))


# ---------------------------------------------------------------------------------------------
# the three commands

def saliency_command(args: argparse.Namespace) -> Dict[str, Any]:
    require_matplotlib('visualize.py saliency')
    model, name, data_config = load_model(args)
    htm_blocks = _htm_blocks(model)
    block = args.block if args.block is not None else (htm_blocks[0] if htm_blocks else len(model.blocks) // 2)
    if not 0 <= block < len(model.blocks):
        raise UsageError(f'--block must lie in [0, {len(model.blocks) - 1}] for {name}, got {block}')
    inputs, labels, sources = load_images(args, data_config, args.count)
    device = next(model.parameters()).device
    maps = saliency_maps(model, inputs.to(device), block, labels)
    named = {'attention': maps.attention, 'rollout': maps.rollout, 'gradient': maps.gradient}
    correlations = {key: correlation(named[key], maps.gradient).tolist() for key in ATTENTION_MAPS}
    images = displayable(inputs, data_config)
    folder = _output_folder(args)
    records = []
    for index, source in enumerate(sources):
        titles = {
            f'1-step attention, block {block}\nr = {correlations["attention"][index]:.2f} to gradient':
                maps.attention[index].cpu().numpy(),
            f'attention rollout, blocks 0-{len(model.blocks) - 1}\nr = {correlations["rollout"][index]:.2f} '
            'to gradient': maps.rollout[index].cpu().numpy(),
            'gradient saliency\n(forward + backward)': maps.gradient[index].cpu().numpy(),
        }
        label = None if labels is None else int(labels[index])
        caption = f'{name}: {source}' + (f', label {label}' if label is not None else '') + \
            f', predicted {int(maps.prediction[index])}'
        png = folder / f'saliency_{index:03d}.png'
        draw_saliency(str(png), images[index], titles, caption)
        records.append({
            'source': source, 'label': label, 'prediction': int(maps.prediction[index]),
            'gradient_target': int(maps.target_class[index]), 'png': png.name,
            'correlation_to_gradient': {key: correlations[key][index] for key in ATTENTION_MAPS},
            'maps': {key: value[index].cpu().tolist() for key, value in named.items()},
        })
        print(f'{png}: correlation to gradient saliency: 1-step attention {correlations["attention"][index]:.3f}, '
              f'rollout {correlations["rollout"][index]:.3f}')
    result = {
        'model': name, 'block': block, 'grid': list(token_grid(model)), 'saliency': model.tokenmixup_cfg.saliency,
        'mean_correlation_to_gradient': {
            key: float(np.nanmean(correlations[key])) for key in ATTENTION_MAPS},
        'images': records,
    }
    _write_json(folder / 'saliency.json', result)
    print(f'mean correlation to gradient saliency over {len(records)} images: '
          + ', '.join(f'{key} {value:.3f}' for key, value in result['mean_correlation_to_gradient'].items()))
    return result


def mix_command(args: argparse.Namespace) -> Dict[str, Any]:
    require_matplotlib('visualize.py mix')
    model, name, data_config = load_model(args)
    htm_blocks = _htm_blocks(model)
    if not htm_blocks:
        raise UsageError(f'--model {name} has no HTM layer: use an _htm or _htm_vtm model')
    block = args.block if args.block is not None else htm_blocks[0]
    if block not in htm_blocks:
        raise UsageError(f'--block {block}: {name} has HTM in front of blocks {htm_blocks} only')
    inputs, labels, sources = load_images(args, data_config, args.batch_size, seed=args.seed)
    device = next(model.parameters()).device
    torch.manual_seed(args.seed)
    model.train()  # the training forward: HTM mixes only in train mode
    with torch.no_grad():
        out = model(inputs.to(device), labels.to(device), return_mix=True)
    model.eval()
    pairs = replaced_pairs(out, block, args.pairs)
    stats = out.stats[block]
    if not pairs:
        config = model.htm[str(block)].config
        raise UsageError(
            f'HTM at block {block} mixed no sample of this batch ({int(stats.easy_samples)} easy at tau '
            f'{config.tau}, none with a token gain above rho {config.rho}): try another '
            '--seed, a trained model, or --model-kwargs tau=... rho=...')
    class_names = [str(index) for index in range(model.num_classes)]
    folder = _output_folder(args)
    png = folder / 'mix.png'
    label_list = labels.tolist()
    grid = token_grid(model)
    draw_mix(str(png), displayable(inputs, data_config), label_list, out, block, pairs, grid, class_names)
    result = {
        'model': name, 'block': block, 'grid': list(grid), 'seed': args.seed, 'batch_size': len(sources),
        'easy_samples': int(stats.easy_samples), 'mixed_samples': int(stats.mixed_samples), 'png': png.name,
        'pairs': [{
            'sample': sample, 'partner': partner, 'sample_source': sources[sample],
            'partner_source': sources[partner], 'sample_label': label_list[sample],
            'partner_label': label_list[partner],
            'mask': stats.mask[sample].reshape(grid).int().cpu().tolist(),
            'target': out.target[sample].float().cpu().tolist(),
        } for sample, partner in pairs],
    }
    _write_json(folder / 'mix.json', result)
    print(f'{png}: {len(pairs)} of the {int(stats.mixed_samples)} samples HTM mixed at block {block} '
          f'({int(stats.easy_samples)} of {len(sources)} easy)')
    return result


def curriculum_command(args: argparse.Namespace) -> Dict[str, Any]:
    require_matplotlib('visualize.py curriculum')
    run = Path(args.run)
    summary = run / 'summary.csv' if run.is_dir() else run
    if not summary.is_file():
        raise UsageError(f'{args.run}: no summary.csv (expected a train.py run folder or its summary.csv)')
    output = Path(args.output) if args.output else summary.parent / 'curriculum.png'
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        series = draw_curriculum(str(summary), str(output), title=summary.parent.name)
    except ValueError as e:
        raise UsageError(str(e)) from e
    print(f'{output}: {len(series.epochs)} epochs, HTM blocks {sorted(series.mixed_samples)}')
    return {'png': str(output), 'epochs': series.epochs, 'htm_blocks': sorted(series.mixed_samples)}


COMMANDS = {'saliency': saliency_command, 'mix': mix_command, 'curriculum': curriculum_command}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run one command; returns what it wrote (also in its JSON)."""
    if not logging.root.handlers:
        setup_logging()
    args = parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == '__main__':
    setup_logging()
    run_tool(main, 'visualize.py')
