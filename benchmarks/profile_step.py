""" Where a TokenMixup variant's train step spends its time, next to its base model's (torch.profiler)

One profiled train step (forward, backward, AdamW step, as `benchmarks/train_step.py` runs it) of `--model`
and of `--base`, after `--warmup` unprofiled steps, on one random batch; prints the operators with the
largest difference in self CPU time (or CUDA time with `--device cuda`) between the two, so that a cost
above a goal can be traced to its operators. Asserts nothing. Run from the repository root:

    python benchmarks/profile_step.py --model cct_7_3x1_vtm --base cct_7_3x1 --batch-size 128 --threads 2
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`
import timm  # noqa: E402
from timm.loss import SoftTargetCrossEntropy  # noqa: E402

import models  # noqa: E402,F401  (registers the zoo)
from tokenmixup import TokenMixupOutput, one_hot_target  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='cct_7_3x1_vtm', help='the variant to profile')
    parser.add_argument('--base', default='cct_7_3x1', help='the model to compare with')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--num-classes', type=int, default=100)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--top', type=int, default=12, help='operators to list')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               target: torch.Tensor) -> None:
    criterion = SoftTargetCrossEntropy()
    out = model(images, target)
    loss = criterion(out.logits, out.target) + out.aux_loss if isinstance(out, TokenMixupOutput) \
        else criterion(out, target)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def self_times(name: str, args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    """Self time (ms) per operator of one profiled train step of `name`."""
    torch.manual_seed(args.seed)
    model = timm.create_model(name, num_classes=args.num_classes).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    size = model.pretrained_cfg['input_size']
    images = torch.randn(args.batch_size, *size, device=device)
    target = one_hot_target(torch.randint(0, args.num_classes, (args.batch_size,), device=device), args.num_classes,
                            smoothing=0.1)
    for _ in range(args.warmup):
        train_step(model, optimizer, images, target)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with profile(activities=activities) as profiler:
        train_step(model, optimizer, images, target)
        if device.type == 'cuda':
            torch.cuda.synchronize()
    use_cuda = device.type == 'cuda'
    times: Dict[str, float] = {}
    for event in profiler.key_averages():
        total = event.self_device_time_total if use_cuda else event.self_cpu_time_total
        times[event.key] = times.get(event.key, 0.0) + total / 1000.0
    return times


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variant, base = self_times(args.model, args, device), self_times(args.base, args, device)
    total_variant, total_base = sum(variant.values()), sum(base.values())
    print(f'one train step, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads: '
          f'{args.model} {total_variant:.0f} ms self time, {args.base} {total_base:.0f} ms '
          f'(ratio {total_variant / total_base:.3f})')
    print(f'{"operator":<44} {args.model:>16} {args.base:>16} {"difference":>11}')
    keys = sorted(set(variant) | set(base), key=lambda key: -abs(variant.get(key, 0.0) - base.get(key, 0.0)))
    for key in keys[:args.top]:
        print(f'{key[:44]:<44} {variant.get(key, 0.0):>13.1f} ms {base.get(key, 0.0):>13.1f} ms '
              f'{variant.get(key, 0.0) - base.get(key, 0.0):>+8.1f} ms')
    print('command: python benchmarks/profile_step.py ' + ' '.join(sys.argv[1:]))


if __name__ == '__main__':
    main()
