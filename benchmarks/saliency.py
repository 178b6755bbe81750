""" Saliency detection per training step: gradient / attention / random (paper Table 3), plus rollout

Times, in train mode and as the train step runs it, one saliency detection for a batch of a zoo model:
  gradient  `tokenmixup.saliency.gradient_saliency(lambda x: model(x), images, target, grid)`: a full forward
            and a backward to the input, as PuzzleMix / Co-Mixup do (under the training autocast with --amp);
  attention what the HTM layer computes: `block.attention_map(x, cls_only=...)` then `htm.compute_saliency(attn)`
            under `torch.no_grad()`, x being the tokens entering the first HTM block (computed once, untimed, with
            the model's `embed_tokens` and the plain blocks before it);
  random    `tokenmixup.saliency.random_saliency(B, T)`, the random-token baseline;
  rollout   `tokenmixup.saliency.attention_rollout` over the attention maps of the HTM block and of every later
            block (computing those maps included; the blocks' inputs are computed once, untimed), for reference.
The four run interleaved, `--warmup` untimed rounds first (CUDA synchronised around every call); the table (or,
with --json, one JSON object) gives the median and IQR of the `--repeats` timed rounds and the ratios
gradient / attention (paper: 14.8x on GPU) and attention / random. Asserts nothing about speed.

Run from the repository root, on a quiet machine, quoting the command line with every number:

    python benchmarks/saliency.py [--model cct_7_3x1_htm] [--batch-size 128] [--img-size N] [--num-classes 100]
        [--device cpu|cuda] [--repeats 10] [--warmup 2] [--threads N] [--amp [--amp-dtype float16|bfloat16]]
        [--block L] [--seed 0] [--json]
"""
import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`
from _common import (  # noqa: E402
    Autocast, add_common_args, block_inputs, check_common_args, command_line, create_model, emit, htm_layers,
    image_size, interleaved, make_batch, setup, summary, token_grid, versions)
from tokenmixup import attention_saliency  # noqa: E402
from tokenmixup.saliency import attention_rollout, gradient_saliency, random_saliency  # noqa: E402

PASSES = ('gradient', 'attention', 'random', 'rollout')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0].strip())
    add_common_args(parser, model='cct_7_3x1_htm', batch_size=128, repeats=10, warmup=2)
    parser.add_argument('--block', type=int, default=None,
                        help="block whose attention gives the saliency (default: the model's first HTM block)")
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    return args


def saliency_block(model: nn.Module, block: Optional[int]) -> int:
    """The block the attention saliency is read from: --block, else the first HTM block."""
    if block is None:
        layers = htm_layers(model)
        if not layers:
            raise SystemExit('this model has no HTM layer: pass --block L, or use an _htm variant')
        return layers[0][0]
    if not 0 <= block < len(model.blocks):
        raise SystemExit(f'--block must lie in [0, {len(model.blocks) - 1}], got {block}')
    return block


def saliency_reduction(model: nn.Module, block: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, H, Q, N) attention -> (B, T) saliency: the HTM module's own, or the model's setting without one."""
    htm = dict(htm_layers(model)).get(block)
    if htm is not None:
        return htm.compute_saliency
    return partial(attention_saliency, num_prefix_tokens=model.num_prefix_tokens,
                   reduce=model.tokenmixup_cfg.saliency)


def saliency_passes(model: nn.Module, images: torch.Tensor, target: torch.Tensor, block: int,
                    autocast: Autocast) -> Dict[str, Callable[[], torch.Tensor]]:
    """One callable per saliency detection, each returning (B, T) saliency."""
    inputs = block_inputs(model, images, block)  # tokens entering blocks block, block + 1, ...
    later_blocks = list(model.blocks)[block:]
    reduce = model.tokenmixup_cfg.saliency
    cls_only = reduce == 'cls'
    compute_saliency = saliency_reduction(model, block)
    grid = token_grid(model)
    batch_size, num_tokens = inputs[0].shape[0], inputs[0].shape[1] - model.num_prefix_tokens

    def gradient() -> torch.Tensor:
        with autocast():
            return gradient_saliency(lambda x: model(x), images, target, grid)

    def attention() -> torch.Tensor:
        with torch.no_grad(), autocast():
            return compute_saliency(later_blocks[0].attention_map(inputs[0], cls_only=cls_only))

    def random() -> torch.Tensor:
        return random_saliency(batch_size, num_tokens, device=images.device)

    def rollout() -> torch.Tensor:
        with torch.no_grad(), autocast():
            attns = [blk.attention_map(x, cls_only=False) for blk, x in zip(later_blocks, inputs)]
            return attention_rollout(attns, model.num_prefix_tokens, reduce)

    return {'gradient': gradient, 'attention': attention, 'random': random, 'rollout': rollout}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device, autocast = setup(args)
    model = create_model(args.model, args, device)
    block = saliency_block(model, args.block)
    images, target = make_batch(model, args.batch_size, args.num_classes, device)
    passes = saliency_passes(model, images, target, block, autocast)
    times = interleaved(passes, device, args.repeats, args.warmup)
    stats = {name: summary(values) for name, values in times.items()}

    result: Dict[str, Any] = {}
    for name in PASSES:
        result[f'{name}_ms'] = stats[name]['median']
        result[f'{name}_iqr_ms'] = stats[name]['iqr']
    result['gradient_over_attention'] = stats['gradient']['median'] / stats['attention']['median']
    result['attention_over_random'] = stats['attention']['median'] / stats['random']['median']
    result['rollout_over_attention'] = stats['rollout']['median'] / stats['attention']['median']
    result['config'] = {
        'model': args.model, 'batch_size': args.batch_size, 'img_size': list(image_size(model)),
        'num_classes': args.num_classes, 'device': str(device), 'repeats': args.repeats, 'warmup': args.warmup,
        'threads': torch.get_num_threads(), 'amp': args.amp, 'amp_dtype': args.amp_dtype if args.amp else None,
        'block': block, 'rollout_blocks': len(model.blocks) - block, 'grid': list(token_grid(model)),
        'saliency': model.tokenmixup_cfg.saliency, 'seed': args.seed, 'command': command_line(),
    }
    result['versions'] = versions(device)
    return result


def table(result: Dict[str, Any]) -> str:
    config = result['config']
    lines = [
        f"saliency detection per step: {config['model']}, B={config['batch_size']}, "
        f"{config['img_size'][0]}x{config['img_size'][1]}, {config['device']}, {config['threads']} threads, "
        f"amp={config['amp_dtype'] or 'off'}, block {config['block']} (rollout over {config['rollout_blocks']} "
        f"blocks), median of {config['repeats']} after {config['warmup']} warm-up",
        f"{'pass':<10} {'median ms':>10} {'IQR ms':>9}",
    ]
    lines += [f"{name:<10} {result[f'{name}_ms']:>10.3f} {result[f'{name}_iqr_ms']:>9.3f}" for name in PASSES]
    lines.append(f"gradient / attention {result['gradient_over_attention']:.1f}x (paper Table 3: 14.8x on GPU; "
                 f"goal >= 60x CPU, >= 15x GPU); attention / random {result['attention_over_random']:.1f}x; "
                 f"rollout / attention {result['rollout_over_attention']:.1f}x")
    lines.append(f"command: {config['command']}")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    emit(run(args), args.json, table)


if __name__ == '__main__':
    main()
