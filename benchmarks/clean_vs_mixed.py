""" What a trained model does on clean images and on the mixed batches HTM trains it on

For each checkpoint (a train.py `last.pth.tar`), on `--count` images of `--split` with the eval transform:

- clean, in eval mode: top-1, top-2, the mean largest and second-largest softmax probability, the mean entropy,
  and the share of predictions that go to the most predicted class (a collapse onto one class shows there);
- for a model with VTM blocks, the same clean images with VTM on: training mode with every dropout and stochastic
  depth off and no targets (so HTM is off), which differs from eval mode only in VTM's extra keys and values;
- mixed, in training mode with dropout and stochastic depth off, on `--count` images of `--train-split` and their
  labels (`model(x, target)`, as train.py calls it): per HTM block the samples mixed, the tokens replaced per mixed
  sample, the mean weight the mixed targets leave on each sample's own label, the share of pairs whose partner
  has another label, and the top-1 against the own label; then the same images clean, for comparison.

A model trained with most samples mixed at a near-even label weight learns to spread its prediction over two
classes; on clean images that shows as a low largest probability and a top-2 far above the top-1. Asserts nothing.

    python benchmarks/clean_vs_mixed.py RUN/last.pth.tar [RUN2/last.pth.tar ...] --dataset torch/fashion_mnist
        --data-dir /usr/share/datasets/fashion-mnist --split 'train[54000:]' --train-split 'train[:6000]'
        [--count 2000] [--json]
"""
import argparse
import json
import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn as nn
from timm.data import create_transform

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repository's packages

import models  # noqa: E402,F401  (registers the zoo with timm)
from tokenmixup_tools.checkpoints import RUN_ARGS_KEY  # noqa: E402
from tokenmixup_tools.cli import read_checkpoint_argument  # noqa: E402
from tokenmixup_tools.datasets import create_dataset_split, image_mode  # noqa: E402
from tokenmixup_tools.loading import load_eval_model, recorded_data_config  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0].strip())
    parser.add_argument('checkpoints', nargs='+', metavar='CHECKPOINT', help='train.py checkpoints')
    parser.add_argument('--dataset', default=None, help="dataset (default: the first checkpoint's)")
    parser.add_argument('--data-dir', default=None, help="dataset root (default: the first checkpoint's)")
    parser.add_argument('--split', default='validation', help='clean images (default: %(default)s)')
    parser.add_argument('--train-split', default='train', help='images of the mixed forward (default: %(default)s)')
    parser.add_argument('--count', type=int, default=2000, help='images of each split (default: %(default)s)')
    parser.add_argument('--json', action='store_true', help='print one JSON object and nothing else')
    args = parser.parse_args(argv)
    if args.count < 2:
        parser.error('--count must be >= 2 (HTM pairs samples)')
    return args


def load_batch(dataset, transform, mode: Optional[str], count: int):
    count = min(count, len(dataset))
    images, labels = [], []
    for index in range(count):
        image, label = dataset[index]
        if mode is not None and image.mode != mode:
            image = image.convert(mode)
        images.append(transform(image))
        labels.append(int(label))
    return torch.stack(images), torch.tensor(labels)


@contextmanager
def training_without_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Training mode (VTM on; HTM on where targets are given) with every dropout probability at 0 and stochastic
    depth off. The probabilities are zeroed rather than the Dropout modules put in eval mode: timm's fused attention
    reads `attn_drop.p` whenever its Attention module is training. Restored on exit."""
    dropouts = [module for module in model.modules() if isinstance(module, nn.Dropout)]
    probabilities = [module.p for module in dropouts]
    model.train()
    try:
        for module in dropouts:
            module.p = 0.0
        for module in model.modules():
            if type(module).__name__ == 'DropPath':
                module.eval()
        yield model
    finally:
        for module, probability in zip(dropouts, probabilities):
            module.p = probability
        model.eval()


def has_vtm(model: nn.Module) -> bool:
    config = getattr(model, 'tokenmixup_cfg', None)
    return bool(config is not None and config.vtm_layers)


def clean_report(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, vtm: bool = False
                 ) -> Dict[str, float]:
    """Clean images in eval mode, or with `vtm` in training mode without dropout (VTM on, HTM off)."""
    model.eval()
    with torch.no_grad(), (training_without_dropout(model) if vtm else nullcontext()):
        probs = torch.cat([model(chunk).softmax(-1) for chunk in images.split(256)])
    top = probs.topk(2, dim=-1)
    predicted = top.indices[:, 0]
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return {'top1': 100 * (predicted == labels).float().mean().item(),
            'top2': 100 * (top.indices == labels[:, None]).any(-1).float().mean().item(),
            'max_prob': top.values[:, 0].mean().item(), 'second_prob': top.values[:, 1].mean().item(),
            'entropy': entropy.mean().item(),
            'most_predicted_share': torch.bincount(predicted).max().item() / len(predicted)}


def mixed_report(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64
                 ) -> Dict[str, Any]:
    """Train-mode forwards over batches of `batch_size`, every dropout off (torch's default generator drives HTM)."""
    blocks: Dict[int, Dict[str, List[float]]] = {}
    correct = 0
    with torch.no_grad(), training_without_dropout(model):
        for start in range(0, len(labels) - 1, batch_size):
            x, y = images[start:start + batch_size], labels[start:start + batch_size]
            if len(y) < 2:
                break
            out = model(x, y, return_mix=True)
            correct += (out.logits.argmax(-1) == y).sum().item()
            own_weight = out.target[torch.arange(len(y)), y]
            for block, stats in out.stats.items():
                mixed = stats.mask.any(-1)
                row = blocks.setdefault(block, {'mixed': [], 'replaced': [], 'own_weight': [], 'other_class': []})
                row['mixed'].append(mixed.float().mean().item())
                row['replaced'].append(stats.replaced_tokens.item())
                if mixed.any():
                    row['own_weight'].append(own_weight[mixed].mean().item())
                    row['other_class'].append((y[stats.partner[mixed]] != y[mixed]).float().mean().item())
    mean = lambda values: sum(values) / len(values) if values else float('nan')  # noqa: E731
    return {'top1_own_label': 100 * correct / len(labels),
            'htm_blocks': {str(block): {
                'mixed_share': mean(row['mixed']), 'replaced_tokens': mean(row['replaced']),
                'own_label_weight': mean(row['own_weight']), 'partner_of_other_class': mean(row['other_class'])}
                for block, row in blocks.items()}}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(0)
    results = []
    for path in args.checkpoints:
        checkpoint = read_checkpoint_argument(path, 'CHECKPOINT')
        run_args = checkpoint.get(RUN_ARGS_KEY) or {}
        model, name = load_eval_model(None, checkpoint, path)
        dataset_name = args.dataset or run_args.get('dataset')
        data_dir = args.data_dir or run_args.get('data_dir')
        data_config = recorded_data_config(model, checkpoint)
        in_chans = data_config['input_size'][0]
        transform = create_transform(data_config['input_size'], is_training=False,
                                     interpolation=data_config['interpolation'], mean=data_config['mean'],
                                     std=data_config['std'], crop_pct=data_config['crop_pct'])
        mode = image_mode(in_chans, run_args.get('input_img_mode'))
        clean_x, clean_y = load_batch(create_dataset_split(dataset_name, args.split, data_dir=data_dir), transform,
                                      mode, args.count)
        train_x, train_y = load_batch(create_dataset_split(dataset_name, args.train_split, data_dir=data_dir),
                                      transform, mode, args.count)
        results.append({'checkpoint': path, 'model': name, 'epoch': checkpoint.get('epoch'),
                        'clean': clean_report(model, clean_x, clean_y),
                        'clean_vtm_on': clean_report(model, clean_x, clean_y, vtm=True) if has_vtm(model) else None,
                        'mixed_train': mixed_report(model, train_x, train_y),
                        'clean_train': clean_report(model, train_x, train_y)})
    result = {'results': results, 'config': {'split': args.split, 'train_split': args.train_split,
                                             'count': args.count, 'command': ' '.join(['python', *sys.argv])}}
    if args.json:
        print(json.dumps(result, allow_nan=True))
    else:
        for row in results:
            clean, mixed = row['clean'], row['mixed_train']
            print(f"{row['model']} ({os.path.relpath(row['checkpoint'])}, epoch {row['epoch']})")
            print(f"  clean {args.split}: top-1 {clean['top1']:.2f}, top-2 {clean['top2']:.2f}, largest probability "
                  f"{clean['max_prob']:.3f}, second {clean['second_prob']:.3f}, entropy {clean['entropy']:.3f}, "
                  f"most predicted class {100 * clean['most_predicted_share']:.1f}% of predictions")
            if row['clean_vtm_on'] is not None:
                print(f"  clean {args.split} with VTM on (training mode, no dropout): top-1 "
                      f"{row['clean_vtm_on']['top1']:.2f}, top-2 {row['clean_vtm_on']['top2']:.2f}")
            for block, stats in mixed['htm_blocks'].items():
                print(f"  mixed {args.train_split}, HTM block {block}: {100 * stats['mixed_share']:.1f}% of samples "
                      f"mixed, {stats['replaced_tokens']:.1f} tokens replaced, own-label weight "
                      f"{stats['own_label_weight']:.3f}, partner of another class "
                      f"{100 * stats['partner_of_other_class']:.1f}%")
            print(f"  top-1 against the own label: mixed forward {mixed['top1_own_label']:.2f}, the same images clean "
                  f"{row['clean_train']['top1']:.2f}")
        print(f"command: {result['config']['command']}")
    return result


if __name__ == '__main__':
    main()
