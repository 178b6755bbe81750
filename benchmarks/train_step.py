""" Train step, eval forward and training memory of a base model and its _htm, _vtm, _htm_vtm variants

For `--model BASE` (default cct_7_3x1; e.g. vit_tiny_patch16_224, whose variants are vit_tiny_patch16_224_htm, ...)
builds BASE, BASE_htm, BASE_vtm and BASE_htm_vtm with the same seed (each variant with its own defaults, the
paper's recipe) and the trunk weights of BASE, each with its own AdamW (`timm.optim.create_optimizer_v2`, as
train.py: lr 2e-3, weight decay 0.05), and measures in one process:

- **train step**: forward, soft-target cross-entropy (timm's `SoftTargetCrossEntropy`, label smoothing 0.1 as
  train.py), backward, `optimizer.step()`, `zero_grad(set_to_none=True)`. Variants run `out = model(images, labels)`
  and train on `criterion(out.logits, out.target) + out.aux_loss`; the base runs `model(images)` with the same
  criterion. Variants run interleaved, A B C D A B C D ..., `--warmup` untimed rounds, then `--repeats` timed rounds,
  each round on a fresh random batch shared by the four. Reported per variant: median and IQR (25th / 75th
  percentile) of the step time, the ratio of medians to the base, the IQR of the round-by-round ratio, the goal
  (step `_htm` <= 1.03, `_vtm` <= 1.05, `_htm_vtm` <= 1.05) and whether that IQR is smaller than the margin
  |goal - ratio| (if not, the measurement cannot tell whether the goal is met: run more repeats, on a quieter machine).
- **eval forward**: `model.eval()`, `torch.no_grad()`, `model(images)`, interleaved likewise; ratio to the base
  (goal 1.00: in eval mode every variant is its base model).
- **memory**, at `--memory-batch-size` (default 32, the batch of the memory goals of docs/design.md §9): on CPU
  the bytes of the tensors autograd saves for backward during one training forward (loss included), counted once
  per storage
  (`torch.autograd.graph.saved_tensors_hooks`, storage data pointer -> `untyped_storage().nbytes()`; parameters and
  buffers excluded: they are not activations), on CUDA also `torch.cuda.max_memory_allocated()` over one full step
  after `reset_peak_memory_stats()`, less what was allocated before the step (the four models, their optimizer
  states). Ratio to the base and goal (`_htm` / `_vtm` / `_htm_vtm` <= 1.02 / 1.05 / 1.03).

**Memory floor.** Some of that memory the method must spend. The floor printed next to each memory ratio is an
estimate of the saved-bytes ratio a minimal implementation would reach, counted from the base model's own saved
tensors: with S_base the base's saved bytes and A the bytes of the base's saved attention-shaped tensors (shape
(..., N, N) with B * H * N * N elements) per block (their total over the blocks / depth),
  - each VTM block l attends to N + M keys, M = l * kappa, instead of N: its attention-shaped tensors grow by
    A * M / N, and its M extra keys and values add 2 * B * M * D elements (fp32, or the autocast dtype);
  - each HTM layer that mixed at least one sample in that forward adds its mixed tokens, B * N * D elements (the
    block saves them; the ScoreNet keeps the unmixed ones);
  floor = (S_base + extra) / S_base (`memory_floor_ratio`). It ignores everything small (ScoreNet, indices) and the
  memory tokens' pre-norm input and normalised projection input, which autograd also keeps unless they are
  recomputed: `memory_floor_with_norm_ratio` adds those 2 * B * M * D elements per VTM block. Both are estimates;
  where a goal is below the floor the table marks it.

**HTM mixing.** A freshly initialised ScoreNet predicts close to uniform (cross-entropy ~ ln C = 4.6 at C = 100),
above the default tau 2.0, and fresh attention is close to uniform (saliency ~ 1 / T, differences below the default
rho 0.005), so at the defaults HTM finds no easy sample, and with easy samples replaces no token: its matching and
mixing cost is then not measured. The script reports the easy and mixed samples per step and warns in either case;
`--tau T` overrides the variants' tau, `--easy-fraction F` sets each HTM layer's tau so that a fraction F of the
first batch is easy (as in a trained model, where most samples are easy), `--rho R` overrides rho (`--rho 0`
replaces every token whose partner's saliency is higher). Asserts nothing about speed.

Run from the repository root, on a quiet machine, quoting the command line with every number:

    python benchmarks/train_step.py [--model cct_7_3x1] [--batch-size 128] [--memory-batch-size 32] [--img-size N]
        [--num-classes 100] [--device cpu|cuda] [--repeats 10] [--warmup 2] [--threads N] [--seed 0]
        [--tau T | --easy-fraction F] [--rho R] [--lr 2e-3] [--amp [--amp-dtype float16|bfloat16]] [--json]
"""
import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`
from _common import (  # noqa: E402
    Autocast, add_common_args, add_tau_args, calibrate_tau, check_common_args, command_line, create_model, emit,
    htm_layers, htm_overrides, image_size, interleaved, make_batch, mixing_warning, paired_ratios, setup, summary,
    synchronize, versions, warn)
from tokenmixup_tools.runtime import amp_dtype, create_loss_scaler  # noqa: E402

SUFFIXES = ('', '_htm', '_vtm', '_htm_vtm')
STEP_GOALS = {'_htm': 1.03, '_vtm': 1.05, '_htm_vtm': 1.05}
EVAL_GOAL = 1.0
MEMORY_GOALS = {'_htm': 1.02, '_vtm': 1.05, '_htm_vtm': 1.03}


@dataclass
class Variant:
    """One model of the comparison with its optimizer and what it mixed in the timed steps."""
    name: str
    suffix: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    easy: Dict[int, List[float]] = field(default_factory=dict)
    mixed: Dict[int, List[float]] = field(default_factory=dict)

    @property
    def uses_target(self) -> bool:
        """Variants train through `model(images, labels)`, the base through `model(images)`."""
        return self.suffix != ''


@dataclass
class SavedTensors:
    """What one training forward saved for backward: bytes per unique storage and the first shape seen."""
    nbytes: Dict[int, int] = field(default_factory=dict)
    shapes: Dict[int, Tuple[int, ...]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.nbytes.values())


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0].strip())
    add_common_args(parser, model='cct_7_3x1', batch_size=128, repeats=10, warmup=2)
    parser.add_argument('--memory-batch-size', type=int, default=32, help='batch of the memory measure (default 32)')
    parser.add_argument('--lr', type=float, default=2e-3, help="AdamW learning rate (train.py's default 2e-3)")
    parser.add_argument('--weight-decay', type=float, default=0.05, help="AdamW weight decay (train.py's 0.05)")
    add_tau_args(parser)
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    if args.memory_batch_size < 2:
        parser.error('--memory-batch-size must be >= 2')
    return args


def build_variants(args: argparse.Namespace, device: torch.device) -> List[Variant]:
    """The base and its three variants, same seed, the variants loading the base's weights where they share them."""
    variants = []
    base_state = None
    for suffix in SUFFIXES:
        name = args.model + suffix
        model = create_model(name, args, device, **(htm_overrides(args) if 'htm' in suffix else {}))
        if base_state is None:
            base_state = model.state_dict()
        else:
            missing, unexpected = model.load_state_dict(base_state, strict=False)
            if unexpected or any('scorenet' not in key for key in missing):
                raise SystemExit(f'{name} does not share the weights of {args.model}: {missing} {unexpected}')
        optimizer = create_optimizer_v2(model, opt='adamw', lr=args.lr, weight_decay=args.weight_decay)
        variants.append(Variant(name, suffix, model, optimizer))
    return variants


def loss_of(variant: Variant, images: torch.Tensor, target: torch.Tensor, criterion: nn.Module,
            autocast: Autocast) -> Tuple[torch.Tensor, Any]:
    """The training loss as train.py computes it, and the model's output."""
    with autocast():
        if variant.uses_target:
            out = variant.model(images, target)
            return criterion(out.logits, out.target) + out.aux_loss, out
        logits = variant.model(images)
        return criterion(logits, target), logits


def train_step(variant: Variant, images: torch.Tensor, target: torch.Tensor, criterion: nn.Module,
               autocast: Autocast, scaler: Optional[Any]) -> Any:
    """One optimisation step; returns the model output (its HTM statistics are read outside the timing)."""
    loss, out = loss_of(variant, images, target, criterion, autocast)
    if scaler is not None:
        scaler(loss, variant.optimizer)
    else:
        loss.backward()
        variant.optimizer.step()
    variant.optimizer.zero_grad(set_to_none=True)
    return out


def record_mixing(variant: Variant, out: Any) -> None:
    """Append the easy and mixed samples of each HTM layer of this step (a host read, outside the timing)."""
    for block, stats in getattr(out, 'stats', {}).items():
        variant.easy.setdefault(block, []).append(float(stats.easy_samples))
        variant.mixed.setdefault(block, []).append(float(stats.mixed_samples))


def time_train_steps(variants: List[Variant], args: argparse.Namespace, device: torch.device,
                     autocast: Autocast) -> Dict[str, List[float]]:
    """Interleaved train steps, one fresh batch per round shared by all variants."""
    criterion = SoftTargetCrossEntropy()
    scaler = create_loss_scaler(device, args.amp, args.amp_dtype)
    by_name = {variant.name: variant for variant in variants}
    times: Dict[str, List[float]] = {variant.name: [] for variant in variants}
    for round_index in range(args.warmup + args.repeats):
        images, target = make_batch(variants[0].model, args.batch_size, args.num_classes, device)
        fns = {v.name: (lambda v=v, images=images, target=target: train_step(v, images, target, criterion, autocast,
                                                                             scaler))
               for v in variants}
        timed = round_index >= args.warmup
        result = interleaved(fns, device, repeats=1, warmup=0,
                             after=(lambda name, out: record_mixing(by_name[name], out)) if timed else None)
        if timed:
            for name, values in result.items():
                times[name] += values
    return times


def time_eval(variants: List[Variant], args: argparse.Namespace, device: torch.device,
              autocast: Autocast) -> Dict[str, List[float]]:
    """Interleaved eval forwards (`model.eval()`, `torch.no_grad()`, `model(images)`)."""
    images, _ = make_batch(variants[0].model, args.batch_size, args.num_classes, device)

    def forward(model: nn.Module) -> torch.Tensor:
        with torch.no_grad(), autocast():
            return model(images)

    for variant in variants:
        variant.model.eval()
    try:
        return interleaved({v.name: (lambda m=v.model: forward(m)) for v in variants}, device, args.repeats,
                           args.warmup)
    finally:
        for variant in variants:
            variant.model.train()


def parameter_storages(model: nn.Module) -> Set[int]:
    return {tensor.untyped_storage().data_ptr() for tensor in list(model.parameters()) + list(model.buffers())}


def saved_tensors(variant: Variant, images: torch.Tensor, target: torch.Tensor, criterion: nn.Module,
                  autocast: Autocast) -> Tuple[SavedTensors, Any]:
    """The storages autograd saves during one training forward (and the loss), parameters and buffers excluded."""
    excluded = parameter_storages(variant.model)
    saved = SavedTensors()
    alive: List[torch.Tensor] = []  # keeps every saved storage alive, so that no address is reused in the forward

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in excluded and pointer not in saved.nbytes:
            saved.nbytes[pointer] = storage.nbytes()
            saved.shapes[pointer] = tuple(tensor.shape)
            alive.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, out = loss_of(variant, images, target, criterion, autocast)
    alive.clear()  # the storages are counted: let them go
    del loss
    return saved, out


def peak_step_bytes(variant: Variant, images: torch.Tensor, target: torch.Tensor, criterion: nn.Module,
                    autocast: Autocast, scaler: Optional[Any], device: torch.device) -> Tuple[int, int]:
    """CUDA: (max_memory_allocated over one step, that less what was allocated before the step)."""
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    train_step(variant, images, target, criterion, autocast, scaler)
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak, peak - before


def attention_bytes_per_block(saved: SavedTensors, batch_size: int, num_heads: int, num_tokens: int,
                              depth: int) -> float:
    """Bytes of saved attention-shaped tensors ((..., N, N), B * H * N * N elements) per block."""
    elements = batch_size * num_heads * num_tokens * num_tokens
    total = sum(saved.nbytes[pointer] for pointer, shape in saved.shapes.items()
                if len(shape) >= 3 and shape[-2:] == (num_tokens, num_tokens) and _numel(shape) == elements)
    return total / depth


def _numel(shape: Tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def memory_floor(base: SavedTensors, variant: Variant, mixed_blocks: Sequence[int], batch_size: int,
                 num_tokens: int, element_size: int) -> Tuple[float, float]:
    """Predicted saved-bytes ratios of a minimal implementation (see the module docstring): the floor from the
    extra keys, values and attention columns (and mixed tokens), and that plus the memory tokens' norm input and
    normalised projection input."""
    model = variant.model
    config = getattr(model, 'tokenmixup_cfg', None)
    if config is None:
        return 1.0, 1.0
    depth, width = len(model.blocks), model.embed_dim
    num_heads = model.blocks[0].attn.num_heads
    per_block = attention_bytes_per_block(base, batch_size, num_heads, num_tokens, depth)
    extra = norm_inputs = 0.0
    for block in config.vtm_layers:
        memory = block * config.kappa
        extra += per_block * memory / num_tokens + 2 * batch_size * memory * width * element_size
        norm_inputs += 2 * batch_size * memory * width * element_size
    extra += len(mixed_blocks) * batch_size * num_tokens * width * element_size
    return (base.total + extra) / base.total, (base.total + extra + norm_inputs) / base.total


def measure_memory(variants: List[Variant], args: argparse.Namespace, device: torch.device,
                   autocast: Autocast) -> Dict[str, Dict[str, Any]]:
    """Saved bytes (and on CUDA peak bytes) of each variant at the memory batch, with ratios and floors."""
    criterion = SoftTargetCrossEntropy()
    scaler = create_loss_scaler(device, args.amp, args.amp_dtype)
    images, target = make_batch(variants[0].model, args.memory_batch_size, args.num_classes, device)
    element_size = torch.empty((), dtype=amp_dtype(args.amp_dtype)).element_size() if args.amp else 4
    with torch.no_grad():
        num_tokens = variants[1].model.embed_tokens(images[:1]).shape[1]
    results: Dict[str, Dict[str, Any]] = {}
    base_saved: Optional[SavedTensors] = None
    for variant in variants:
        saved, out = saved_tensors(variant, images, target, criterion, autocast)
        mixed_blocks = [block for block, stats in getattr(out, 'stats', {}).items() if float(stats.mixed_samples) > 0]
        del out
        if base_saved is None:
            base_saved = saved
        floor, floor_with_norm = memory_floor(base_saved, variant, mixed_blocks, args.memory_batch_size, num_tokens,
                                              element_size)
        entry: Dict[str, Any] = {
            'saved_bytes': saved.total,
            'saved_ratio': saved.total / base_saved.total,
            'memory_floor_ratio': floor,
            'memory_floor_with_norm_ratio': floor_with_norm,
            'memory_mixed_blocks': mixed_blocks,
        }
        if device.type == 'cuda':
            entry['peak_bytes'], entry['peak_step_bytes'] = peak_step_bytes(
                variant, images, target, criterion, autocast, scaler, device)
        results[variant.name] = entry
    base_name = variants[0].name
    for entry in results.values():
        if device.type == 'cuda':
            entry['peak_ratio'] = entry['peak_step_bytes'] / results[base_name]['peak_step_bytes']
        entry['memory_ratio'] = entry['peak_ratio'] if device.type == 'cuda' else entry['saved_ratio']
    return results


def ratio_entry(times: Sequence[float], base: Sequence[float], goal: Optional[float], prefix: str,
                tolerant: bool = False) -> Dict[str, Any]:
    """Median, IQR, ratio of medians, IQR of the paired ratio, and how it stands against the goal.

    meets_goal: ratio <= goal; with `tolerant` (the eval goal 1.00, an equality) also a ratio above it by no
    more than the ratio's IQR. conclusive: that IQR is smaller than the margin |goal - ratio|. The goal
    fields are None for the base model (goal None).
    """
    stats, base_stats, ratio_stats = summary(times), summary(base), summary(paired_ratios(times, base))
    ratio = stats['median'] / base_stats['median']
    entry = {
        f'{prefix}_ms': stats['median'], f'{prefix}_q25_ms': stats['q25'], f'{prefix}_q75_ms': stats['q75'],
        f'{prefix}_iqr_ms': stats['iqr'], f'{prefix}_ratio': ratio, f'{prefix}_ratio_iqr': ratio_stats['iqr'],
        f'{prefix}_goal': goal, f'{prefix}_meets_goal': None, f'{prefix}_margin': None, f'{prefix}_conclusive': None,
    }
    if goal is not None:
        margin = goal - ratio
        entry[f'{prefix}_meets_goal'] = ratio <= goal or (tolerant and abs(margin) <= ratio_stats['iqr'])
        entry[f'{prefix}_margin'] = margin
        entry[f'{prefix}_conclusive'] = ratio_stats['iqr'] < abs(margin)
    return entry


def mean_per_block(values: Dict[int, List[float]]) -> Dict[str, float]:
    return {str(block): sum(series) / len(series) for block, series in sorted(values.items())}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    device, autocast = setup(args)
    variants = build_variants(args, device)
    taus: Dict[str, Dict[str, float]] = {}
    if args.easy_fraction is not None:
        images, target = make_batch(variants[0].model, args.batch_size, args.num_classes, device)
        for variant in variants[1:]:
            if htm_layers(variant.model):
                taus[variant.name] = {str(block): tau for block, tau in
                                      calibrate_tau(variant.model, images, target, args.easy_fraction).items()}
    step_times = time_train_steps(variants, args, device, autocast)
    eval_times = time_eval(variants, args, device, autocast)
    memory = measure_memory(variants, args, device, autocast)

    base = variants[0]
    results: Dict[str, Any] = {}
    for variant in variants:
        entry: Dict[str, Any] = {'suffix': variant.suffix}
        is_base = variant is base
        entry.update(ratio_entry(step_times[variant.name], step_times[base.name], STEP_GOALS.get(variant.suffix),
                                 'step'))
        entry.update(ratio_entry(eval_times[variant.name], eval_times[base.name], None if is_base else EVAL_GOAL,
                                 'eval', tolerant=True))
        entry.update(memory[variant.name])
        memory_goal = MEMORY_GOALS.get(variant.suffix)
        entry['memory_goal'] = memory_goal
        entry['memory_meets_goal'] = None if is_base else entry['memory_ratio'] <= memory_goal
        entry['goal_below_floor'] = None if is_base else memory_goal < entry['memory_floor_ratio']
        entry['goal_below_floor_with_norm'] = None if is_base else memory_goal < entry['memory_floor_with_norm_ratio']
        entry['htm_tau'] = {str(block): float(htm.config.tau) for block, htm in htm_layers(variant.model)}
        entry['htm_easy_samples'] = mean_per_block(variant.easy)
        entry['htm_mixed_samples'] = mean_per_block(variant.mixed)
        if htm_layers(variant.model):
            message = mixing_warning(variant.name, sum(map(sum, variant.easy.values())),
                                     sum(map(sum, variant.mixed.values())))
            if message:
                warn(message)
        results[variant.name] = entry
    return {
        'variants': results,
        'config': {
            'model': args.model, 'batch_size': args.batch_size, 'memory_batch_size': args.memory_batch_size,
            'img_size': list(image_size(base.model)), 'num_classes': args.num_classes, 'device': str(device),
            'repeats': args.repeats, 'warmup': args.warmup, 'threads': torch.get_num_threads(), 'seed': args.seed,
            'amp': args.amp, 'amp_dtype': args.amp_dtype if args.amp else None, 'lr': args.lr,
            'weight_decay': args.weight_decay, 'tau': args.tau, 'easy_fraction': args.easy_fraction, 'rho': args.rho,
            'memory_measure': 'peak_step_bytes' if device.type == 'cuda' else 'saved_bytes',
            'command': command_line(),
        },
        'versions': versions(device),
    }


def _floor_cell(ratio: float, goal_below: bool) -> str:
    return f"{ratio:.3f}" + ('!' if goal_below else ' ')


def table(result: Dict[str, Any]) -> str:
    config = result['config']
    memory_key = config['memory_measure']
    lines = [
        f"train step of {config['model']} and variants: B={config['batch_size']} (memory B="
        f"{config['memory_batch_size']}), {config['img_size'][0]}x{config['img_size'][1]}, {config['device']}, "
        f"{config['threads']} threads, amp={config['amp_dtype'] or 'off'}, median of {config['repeats']} interleaved "
        f"rounds after {config['warmup']}",
        f"{'model':<28} {'step ms':>9} {'IQR':>7} {'ratio':>6} {'r.IQR':>6} {'goal':>5} {'ok?':>4} "
        f"{'eval ms':>8} {'ratio':>6} {memory_key:>15} {'ratio':>6} {'goal':>5} {'floor':>6} {'+norm':>6} "
        f"{'mixed/step':>11}",
    ]
    for name, entry in result['variants'].items():
        if entry['step_goal'] is None:
            verdict, step_goal, memory_goal, floor, floor_with_norm = '', '', '', '', ''
        else:
            verdict = ('yes' if entry['step_meets_goal'] else 'no') if entry['step_conclusive'] else '?'
            step_goal, memory_goal = f"{entry['step_goal']:.2f}", f"{entry['memory_goal']:.2f}"
            floor = _floor_cell(entry['memory_floor_ratio'], entry['goal_below_floor'])
            floor_with_norm = _floor_cell(entry['memory_floor_with_norm_ratio'], entry['goal_below_floor_with_norm'])
        mixed = ','.join(f'{value:.1f}' for value in entry['htm_mixed_samples'].values()) or '-'
        lines.append(
            f"{name:<28} {entry['step_ms']:>9.2f} {entry['step_iqr_ms']:>7.2f} {entry['step_ratio']:>6.3f} "
            f"{entry['step_ratio_iqr']:>6.3f} {step_goal:>5} {verdict:>4} {entry['eval_ms']:>8.2f} "
            f"{entry['eval_ratio']:>6.3f} {entry[memory_key]:>15,d} {entry['memory_ratio']:>6.3f} "
            f"{memory_goal:>5} {floor:>6} {floor_with_norm:>6} {mixed:>11}")
    lines += [
        "ok?: step ratio <= goal, '?' when the IQR of the round-by-round ratio is not smaller than |goal - ratio|; "
        "floor: predicted memory ratio of a minimal implementation, +norm: also keeping the memory tokens' norm "
        "inputs; '!' where the goal is below it",
        f"command: {config['command']}",
    ]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    emit(run(args), args.json, table)


if __name__ == '__main__':
    main()
