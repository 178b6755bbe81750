""" Helpers shared by the benchmark scripts `saliency.py`, `train_step.py` and `htm_layer.py`

Command-line flags common to all three, model creation, the tokens entering a block, HTM tau
calibration, wall-clock timing with CUDA synchronisation, robust summaries (median and interquartile
range) and the JSON/table output. Not a script: the scripts import it (they run with `benchmarks/` as
`sys.path[0]`) after putting the repository root on `sys.path`.
"""
import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from contextlib import AbstractContextManager
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn

import models  # noqa: F401  registers the zoo with timm (the checkout's: the scripts put it on sys.path)
from tokenmixup import HorizontalTokenMixup, as_soft_target
from tokenmixup_tools.runtime import AMP_DTYPES, create_autocast

Autocast = Callable[[], AbstractContextManager]


def add_common_args(parser: argparse.ArgumentParser, model: str, batch_size: int, repeats: int, warmup: int) -> None:
    """The flags every benchmark takes (model, sizes, device, repeats, threads, AMP, JSON, seed)."""
    parser.add_argument('--model', default=model, help=f'registered model name (default {model})')
    parser.add_argument('--batch-size', type=int, default=batch_size, help=f'timing batch (default {batch_size})')
    parser.add_argument('--img-size', type=int, default=None, help="input size (default: the model's)")
    parser.add_argument('--num-classes', type=int, default=100, help='classes (default 100)')
    parser.add_argument('--device', default='cpu', help='cpu (default) or cuda[:i]')
    parser.add_argument('--repeats', type=int, default=repeats, help=f'timed rounds (default {repeats})')
    parser.add_argument('--warmup', type=int, default=warmup, help=f'untimed rounds first (default {warmup})')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: leave as is)')
    parser.add_argument('--amp', action='store_true', help='run under torch.autocast, as train.py --amp')
    parser.add_argument('--amp-dtype', default='float16', choices=sorted(AMP_DTYPES), help='autocast dtype')
    parser.add_argument('--seed', type=int, default=0, help='seed of weights and data (default 0)')
    parser.add_argument('--json', action='store_true', help='print one JSON object on stdout and nothing else')


def add_tau_args(parser: argparse.ArgumentParser) -> None:
    """--tau / --easy-fraction and --rho: how much HTM mixes. A fresh model finds no sample easy at tau 2
    (its ScoreNet's cross-entropy is about ln C) and its near-uniform attention gives no token a gain above rho."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--tau', type=float, default=None, help="HTM tau (default: the model's own)")
    group.add_argument('--easy-fraction', type=float, default=None,
                       help="set each HTM layer's tau so that this fraction of the first batch is easy")
    parser.add_argument('--rho', type=float, default=None, help="HTM rho (default: the model's own)")


def htm_overrides(args: argparse.Namespace) -> Dict[str, float]:
    """The HTM settings given on the command line, as `timm.create_model` keywords."""
    return {name: getattr(args, name) for name in ('tau', 'rho') if getattr(args, name, None) is not None}


def mixing_warning(name: str, easy: float, mixed: float) -> Optional[str]:
    """Why an HTM measurement exercised less than the whole layer, or None."""
    if easy == 0:
        return (f'{name}: no sample was easy, so HTM matching and mixing were not measured '
                f'(pass --easy-fraction F or --tau T)')
    if mixed == 0:
        return (f'{name}: easy samples were matched but no token had a saliency gain above rho, so no token was '
                f'replaced (pass --rho, e.g. 0)')
    return None


def check_common_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.batch_size < 2:
        parser.error('--batch-size must be >= 2 (HTM pairs samples)')
    if args.repeats < 1 or args.warmup < 0:
        parser.error('--repeats must be >= 1 and --warmup >= 0')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    if getattr(args, 'easy_fraction', None) is not None and not 0.0 <= args.easy_fraction <= 1.0:
        parser.error('--easy-fraction must lie in [0, 1]')
    for name in ('tau', 'rho'):
        if getattr(args, name, None) is not None and getattr(args, name) < 0:
            parser.error(f'--{name} must be >= 0')


def setup(args: argparse.Namespace) -> Tuple[torch.device, Autocast]:
    """Threads, seed, device and the autocast factory of the run."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit(f'--device {args.device}: CUDA is not available')
        if device.index is not None:
            torch.cuda.set_device(device)
    return device, create_autocast(device, args.amp, args.amp_dtype)


def create_model(name: str, args: argparse.Namespace, device: torch.device, **kwargs: Any) -> nn.Module:
    """`timm.create_model(name)` with the run's classes and image size, seeded, in train mode, on `device`."""
    if args.img_size is not None:
        kwargs['img_size'] = args.img_size
    torch.manual_seed(args.seed)
    return timm.create_model(name, num_classes=args.num_classes, **kwargs).to(device).train()


def image_size(model: nn.Module) -> Tuple[int, int]:
    """(H, W) the model takes: CCT's `img_size`, a ViT's `patch_embed.img_size`."""
    size = getattr(model, 'img_size', None)
    if size is None:
        size = model.patch_embed.img_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def token_grid(model: nn.Module) -> Tuple[int, int]:
    """(rows, cols) of the model's non-prefix token grid."""
    grid = getattr(model, 'feat_size', None)
    return tuple(grid) if grid is not None else tuple(model.patch_embed.grid_size)


def make_batch(model: nn.Module, batch_size: int, num_classes: int, device: torch.device,
               smoothing: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random images and label-smoothed (B, C) targets (train.py's default smoothing 0.1)."""
    height, width = image_size(model)
    images = torch.randn(batch_size, 3, height, width, device=device)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    return images, as_soft_target(labels, num_classes, smoothing)


def htm_layers(model: nn.Module) -> List[Tuple[int, HorizontalTokenMixup]]:
    """(block index, HTM module) of a zoo model, in block order; empty for a model without HTM."""
    htm = getattr(model, 'htm', None)
    return sorted(((int(key), module) for key, module in htm.items()), key=lambda item: item[0]) if htm else []


@torch.no_grad()
def block_inputs(model: nn.Module, images: torch.Tensor, first: int) -> List[torch.Tensor]:
    """The tokens entering blocks first, first + 1, ..., depth - 1: the embedding through plain blocks.

    Earlier HTM/VTM layers are not applied: the tokens are what a base model would feed the block,
    which has the shape and statistics the timed passes need.
    """
    x = model.embed_tokens(images)
    inputs = []
    for index, block in enumerate(model.blocks):
        if index >= first:
            inputs.append(x)
        x = block(x)
    return inputs


def tau_for_fraction(difficulty: torch.Tensor, fraction: float) -> float:
    """A tau under which round(fraction * B) of these difficulties are easy (d < tau, strictly)."""
    values = difficulty.detach().float().flatten().sort().values.cpu()
    count = round(fraction * values.numel())
    if count == 0:
        return 0.0
    if count == values.numel():
        return float(values[-1]) + 1.0
    return float(values[count - 1] + values[count]) / 2


@torch.no_grad()
def calibrate_tau(model: nn.Module, images: torch.Tensor, target: torch.Tensor, fraction: float) -> Dict[int, float]:
    """Set each HTM layer's tau, in block order, so that `fraction` of this batch is easy there.

    One forward per layer: a pre-hook reads the ScoreNet difficulty of the tokens reaching that layer,
    with the layers before it already calibrated. Returns block index -> tau.
    """
    taus = {}
    for index, htm in htm_layers(model):
        seen: List[torch.Tensor] = []

        def record(module: HorizontalTokenMixup, args: Tuple[Any, ...], seen: List[torch.Tensor] = seen) -> None:
            seen.append(module.scorenet.difficulty(args[0], as_soft_target(args[1], module.num_classes)))

        handle = htm.register_forward_pre_hook(record)
        try:
            model(images, target)
        finally:
            handle.remove()
        taus[index] = tau_for_fraction(seen[0], fraction)
        htm.config = dataclasses.replace(htm.config, tau=taus[index])
    return taus


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], device: torch.device) -> Tuple[float, Any]:
    """Milliseconds of one call of `fn` (device synchronised before and after) and what it returned."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3, result


def interleaved(fns: Dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int,
                after: Optional[Callable[[str, Any], None]] = None) -> Dict[str, List[float]]:
    """Time every function once per round, A B C A B C ..., `warmup` untimed rounds first.

    `after(name, result)` is called outside the timed region after each timed call.
    """
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for round_index in range(warmup + repeats):
        for name, fn in fns.items():
            elapsed, result = time_ms(fn, device)
            if round_index >= warmup:
                times[name].append(elapsed)
                if after is not None:
                    after(name, result)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile, q in [0, 100] (numpy's default method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> Dict[str, float]:
    """median, q25, q75 and iqr (= q75 - q25) of a sample."""
    q25, median, q75 = (percentile(values, q) for q in (25, 50, 75))
    return {'median': median, 'q25': q25, 'q75': q75, 'iqr': q75 - q25}


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> List[float]:
    """Round-by-round ratios of two interleaved series."""
    return [a / b for a, b in zip(numerator, denominator)]


def versions(device: torch.device) -> Dict[str, Any]:
    """Software and machine the numbers come from."""
    info = {
        'torch': torch.__version__, 'timm': timm.__version__, 'python': platform.python_version(),
        'platform': platform.platform(), 'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
    }
    if device.type == 'cuda':
        info['cuda'] = torch.version.cuda
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def command_line() -> str:
    return ' '.join([os.path.basename(sys.executable)] + sys.argv)


def emit(result: Dict[str, Any], as_json: bool, table: Callable[[Dict[str, Any]], str]) -> None:
    """Print the result: one JSON object (strict: no NaN or infinity), or the human-readable table."""
    print(json.dumps(result, allow_nan=False) if as_json else table(result))


def warn(message: str) -> None:
    """Warnings go to stderr, so that --json output stays one object."""
    print(f'warning: {message}', file=sys.stderr)
