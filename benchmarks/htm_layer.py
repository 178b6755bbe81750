""" One whole Horizontal TokenMixup layer per step, against random token selection and random saliency

Times, in train mode, the forward of the whole HTM layer of a zoo model as the block loop runs it, on the tokens
entering its (first) HTM block (computed once, untimed, with `embed_tokens` and the plain blocks before it; a leaf
that requires grad, so that autograd records as in training):
  full             `block.attention_map(x, cls_only=...)` and `htm.compute_saliency(attn)` under `torch.no_grad()`,
                   then `htm(x, target, saliency)`: ScoreNet, saliency pass, Hungarian matching, mixing;
  random_tokens    the same layer with `token_selection='random'` (the Table 4 ablation: each easy sample replaces as
                   many tokens as its saliency mask would, at random positions). It still runs the saliency pass,
                   which the mask sizes need;
  random_saliency  the full layer fed `tokenmixup.saliency.random_saliency(B, T)` instead of the attention pass (the
                   random-token baseline of the paper's Table 3: no saliency detection).
The three run interleaved, `--warmup` untimed rounds first (CUDA synchronised around every call). Reported: medians
and IQRs, full / random_tokens and full / random_saliency (goal: the whole layer <= 2x the random-token layer; the
paper reports 3.2x for saliency detection alone), and the easy, mixed and replaced tokens per step of each.

A fresh model finds no sample easy at the default tau and no token gain above the default rho; see `--easy-fraction`
and `--rho` (as in train_step.py). Asserts nothing about speed. Run from the repository root, on a quiet machine,
quoting the command line with every number:

    python benchmarks/htm_layer.py [--model cct_7_3x1_htm] [--batch-size 128] [--img-size N] [--num-classes 100]
        [--device cpu|cuda] [--repeats 10] [--warmup 2] [--threads N] [--tau T | --easy-fraction F] [--rho R]
        [--amp [--amp-dtype float16|bfloat16]] [--seed 0] [--json]
"""
import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`
from _common import (  # noqa: E402
    Autocast, add_common_args, add_tau_args, block_inputs, check_common_args, command_line, create_model, emit,
    htm_layers, htm_overrides, image_size, interleaved, make_batch, mixing_warning, paired_ratios, setup, summary,
    tau_for_fraction, versions, warn)
from tokenmixup import HorizontalTokenMixup, HorizontalTokenMixupResult  # noqa: E402
from tokenmixup.saliency import random_saliency  # noqa: E402

LAYERS = ('full', 'random_tokens', 'random_saliency')
GOAL = 2.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0].strip())
    add_common_args(parser, model='cct_7_3x1_htm', batch_size=128, repeats=10, warmup=2)
    add_tau_args(parser)
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    return args


def first_htm(model: nn.Module, name: str) -> Tuple[int, HorizontalTokenMixup]:
    """(block index, module) of the model's first HTM layer."""
    layers = htm_layers(model)
    if not layers:
        raise SystemExit(f'{name} has no HTM layer: use an _htm variant')
    return layers[0]


def layer_passes(model: nn.Module, random_tokens: HorizontalTokenMixup, block: int, x: torch.Tensor,
                 target: torch.Tensor, autocast: Autocast) -> Dict[str, Callable[[], HorizontalTokenMixupResult]]:
    """One callable per configuration of the layer, each returning the HTM result."""
    htm = dict(htm_layers(model))[block]
    attention_block = model.blocks[block]
    cls_only = model.tokenmixup_cfg.saliency == 'cls'
    batch_size, num_tokens = x.shape[0], x.shape[1] - model.num_prefix_tokens

    def attention_saliency() -> torch.Tensor:
        with torch.no_grad():
            return htm.compute_saliency(attention_block.attention_map(x, cls_only=cls_only))

    def full() -> HorizontalTokenMixupResult:
        with autocast():
            return htm(x, target, attention_saliency())

    def random_token_layer() -> HorizontalTokenMixupResult:
        with autocast():
            return random_tokens(x, target, attention_saliency())

    def random_saliency_layer() -> HorizontalTokenMixupResult:
        with autocast():
            return htm(x, target, random_saliency(batch_size, num_tokens, device=x.device))

    return {'full': full, 'random_tokens': random_token_layer, 'random_saliency': random_saliency_layer}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device, autocast = setup(args)
    overrides = htm_overrides(args)
    model = create_model(args.model, args, device, **overrides)
    block, htm = first_htm(model, args.model)
    random_model = create_model(args.model, args, device, token_selection='random', **overrides)
    random_model.load_state_dict(model.state_dict())
    random_tokens = dict(htm_layers(random_model))[block]

    images, target = make_batch(model, args.batch_size, args.num_classes, device)
    x = block_inputs(model, images, block)[0].detach().requires_grad_(True)
    if args.easy_fraction is not None:
        with torch.no_grad():
            tau = tau_for_fraction(htm.scorenet.difficulty(x, target), args.easy_fraction)
            htm.config = dataclasses.replace(htm.config, tau=tau)
            random_tokens.config = dataclasses.replace(random_tokens.config, tau=tau)

    counts: Dict[str, Dict[str, List[float]]] = {name: {'easy': [], 'mixed': [], 'replaced': []} for name in LAYERS}

    def record(name: str, result: HorizontalTokenMixupResult) -> None:
        counts[name]['easy'].append(float(result.stats.easy_samples))
        counts[name]['mixed'].append(float(result.stats.mixed_samples))
        counts[name]['replaced'].append(float(result.stats.replaced_tokens))

    times = interleaved(layer_passes(model, random_tokens, block, x, target, autocast), device, args.repeats,
                        args.warmup, after=record)
    stats = {name: summary(values) for name, values in times.items()}
    result: Dict[str, Any] = {}
    for name in LAYERS:
        result[f'{name}_ms'] = stats[name]['median']
        result[f'{name}_iqr_ms'] = stats[name]['iqr']
        for key, values in counts[name].items():
            result[f'{name}_{key}'] = sum(values) / len(values)
    for other in ('random_tokens', 'random_saliency'):
        ratio = stats['full']['median'] / stats[other]['median']
        ratio_iqr = summary(paired_ratios(times['full'], times[other]))['iqr']
        result[f'full_over_{other}'] = ratio
        result[f'full_over_{other}_iqr'] = ratio_iqr
        result[f'full_over_{other}_meets_goal'] = ratio <= GOAL
        result[f'full_over_{other}_conclusive'] = ratio_iqr < abs(GOAL - ratio)
    result['goal'] = GOAL
    message = mixing_warning(args.model, result['full_easy'], result['full_mixed'])
    if message:
        warn(message)
    result['config'] = {
        'model': args.model, 'batch_size': args.batch_size, 'img_size': list(image_size(model)),
        'num_classes': args.num_classes, 'device': str(device), 'repeats': args.repeats, 'warmup': args.warmup,
        'threads': torch.get_num_threads(), 'amp': args.amp, 'amp_dtype': args.amp_dtype if args.amp else None,
        'block': block, 'tokens': x.shape[1], 'tau': float(htm.config.tau), 'rho': float(htm.config.rho),
        'easy_fraction': args.easy_fraction, 'seed': args.seed, 'command': command_line(),
    }
    result['versions'] = versions(device)
    return result


def table(result: Dict[str, Any]) -> str:
    config = result['config']
    lines = [
        f"whole HTM layer per step: {config['model']} block {config['block']}, B={config['batch_size']}, "
        f"N={config['tokens']}, {config['device']}, {config['threads']} threads, amp={config['amp_dtype'] or 'off'}, "
        f"tau={config['tau']:.4g} rho={config['rho']:.4g}, median of {config['repeats']} after {config['warmup']}",
        f"{'layer':<16} {'median ms':>10} {'IQR ms':>9} {'easy':>6} {'mixed':>6} {'tokens/mixed':>13}",
    ]
    lines += [f"{name:<16} {result[f'{name}_ms']:>10.3f} {result[f'{name}_iqr_ms']:>9.3f} "
              f"{result[f'{name}_easy']:>6.1f} {result[f'{name}_mixed']:>6.1f} {result[f'{name}_replaced']:>13.1f}"
              for name in LAYERS]
    for other in ('random_tokens', 'random_saliency'):
        key = f'full_over_{other}'
        verdict = ('yes' if result[f'{key}_meets_goal'] else 'no') if result[f'{key}_conclusive'] \
            else '? (IQR >= margin)'
        lines.append(f"full / {other}: {result[key]:.2f}x (IQR {result[f'{key}_iqr']:.2f}), "
                     f"goal <= {result['goal']:.0f}x: {verdict}")
    lines.append(f"command: {config['command']}")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    emit(run(args), args.json, table)


if __name__ == '__main__':
    main()
