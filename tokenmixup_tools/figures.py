""" Pictures of what TokenMixup does: token saliency (paper Fig. 3), an HTM mix, the mixing curriculum (Fig. 4)

The numbers come from the model's own code: the saliency maps from its blocks' `attention_map` and
`tokenmixup.saliency`, the mix from `model(x, target, return_mix=True)` in train mode (the training path, which
returns the replaced-token mask and the partners it used), the curriculum from a run's `summary.csv`.
Drawing needs matplotlib (`pip install -e '.[viz]'`); everything that computes works without it.
Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot, no global state) at fixed sizes, so every PNG
of one kind has the same pixel size.
"""
import csv
import math
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from tokenmixup import TokenMixupOutput, as_soft_target, attention_saliency
from tokenmixup.saliency import attention_rollout, gradient_saliency

from .cli import UsageError
from .files import atomic_path

__all__ = [
    'VIZ_INSTALL_HINT', 'SALIENCY_FIGURE_PX', 'MIX_ROW_PX', 'CURRICULUM_FIGURE_PX',
    'require_matplotlib', 'token_grid', 'SaliencyMaps', 'saliency_maps', 'correlation', 'draw_saliency',
    'replaced_pairs', 'draw_mix', 'curriculum_series', 'draw_curriculum',
]

VIZ_INSTALL_HINT = "pip install -e '.[viz]' (or pip install matplotlib)"
_DPI = 100
SALIENCY_FIGURE_PX = (880, 270)  # (width, height) of one saliency PNG
MIX_ROW_PX = (880, 220)  # (width, height) of one pair's row in the mix PNG
CURRICULUM_FIGURE_PX = (1200, 340)


def require_matplotlib(what: str) -> Any:
    """`matplotlib.figure.Figure`, or a UsageError that says how to install matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UsageError(f'{what} needs matplotlib, which is not installed: {VIZ_INSTALL_HINT}') from e
    return Figure


def _figure(what: str, size_px: Tuple[int, int]) -> Any:
    return require_matplotlib(what)(figsize=(size_px[0] / _DPI, size_px[1] / _DPI), dpi=_DPI)


def _save(figure: Any, path: str) -> None:
    """Write the PNG whole or not at all."""
    with atomic_path(path) as staged:
        figure.savefig(staged, format='png', dpi=_DPI)


def token_grid(model: nn.Module) -> Tuple[int, int]:
    """(rows, cols) of a zoo model's non-prefix token grid (CCT's `feat_size`, a ViT's patch grid)."""
    grid = getattr(model, 'feat_size', None)
    if grid is None:
        grid = model.patch_embed.grid_size
    return int(grid[0]), int(grid[1])


# ---------------------------------------------------------------------------------------------
# saliency maps (paper Fig. 3)

class SaliencyMaps(NamedTuple):
    """Token saliency of a batch, each (B, rows, cols) float32, plus what the gradient map explains.

    attention: 1-step attention saliency at `block` (what HTM uses, Eq. 3); rollout: attention rollout from the
    first block to the last (Eq. 2); gradient: input-gradient saliency pooled to the tokens (PuzzleMix style),
    of the loss against `target_class`.
    """
    attention: torch.Tensor
    rollout: torch.Tensor
    gradient: torch.Tensor
    block: int
    target_class: torch.Tensor
    prediction: torch.Tensor


@torch.no_grad()
def _block_inputs(model: nn.Module, images: torch.Tensor) -> List[torch.Tensor]:
    """The tokens entering each block in eval mode (where every variant is its base model)."""
    x = model.embed_tokens(images)
    inputs = []
    for block in model.blocks:
        inputs.append(x)
        x = block(x)
    return inputs


def saliency_maps(model: nn.Module, images: torch.Tensor, block: int,
                  labels: Optional[torch.Tensor] = None) -> SaliencyMaps:
    """Attention, rollout and gradient saliency of `images` (B, C, H, W) for a zoo model in eval mode.

    The gradient map explains `labels` where given, else the model's prediction. The model is left in eval mode.
    """
    if not 0 <= block < len(model.blocks):
        raise ValueError(f'block must lie in [0, {len(model.blocks) - 1}], got {block}')
    model.eval()
    rows, cols = token_grid(model)
    prefix = model.num_prefix_tokens
    reduce = model.tokenmixup_cfg.saliency
    inputs = _block_inputs(model, images)
    with torch.no_grad():
        attention = attention_saliency(
            model.blocks[block].attention_map(inputs[block], cls_only=reduce == 'cls'), prefix, reduce)
        rollout = attention_rollout(
            [blk.attention_map(x, cls_only=False) for blk, x in zip(model.blocks, inputs)], prefix, reduce)
        prediction = model(images).argmax(dim=-1)
    target_class = prediction if labels is None else labels.to(prediction.device)
    target = as_soft_target(target_class, model.num_classes)
    gradient = gradient_saliency(lambda x: model(x), images, target, (rows, cols))
    shape = (images.shape[0], rows, cols)
    return SaliencyMaps(attention.reshape(shape), rollout.reshape(shape), gradient.reshape(shape), block,
                        target_class, prediction)


def correlation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each sample's maps: (B, ...) and (B, ...) -> (B,) float64 (NaN for a flat map)."""
    first, second = first.flatten(1).double(), second.flatten(1).double()
    first = first - first.mean(dim=1, keepdim=True)
    second = second - second.mean(dim=1, keepdim=True)
    return (first * second).sum(dim=1) / (first.norm(dim=1) * second.norm(dim=1))


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return np.zeros_like(values) if high <= low else (values - low) / (high - low)


def _show_image(axes: Any, image: np.ndarray) -> None:
    axes.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap='gray', vmin=0.0, vmax=1.0,
                interpolation='nearest')
    axes.set_axis_off()


def draw_saliency(path: str, image: np.ndarray, maps: Dict[str, np.ndarray], title: str) -> None:
    """One PNG: the input image (H, W, C in [0, 1]) and each (rows, cols) map, min-max scaled, titled by its key."""
    figure = _figure('the saliency picture', SALIENCY_FIGURE_PX)
    panels = figure.subplots(1, 1 + len(maps))
    _show_image(panels[0], image)
    panels[0].set_title('input', fontsize=9)
    for axes, (name, values) in zip(panels[1:], maps.items()):
        axes.imshow(_minmax(np.asarray(values, dtype=np.float64)), cmap='inferno', vmin=0.0, vmax=1.0,
                    interpolation='nearest')
        axes.set_title(name, fontsize=9)
        axes.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.74, wspace=0.08)
    _save(figure, path)


# ---------------------------------------------------------------------------------------------
# an HTM mix

def replaced_pairs(out: TokenMixupOutput, block: int, count: int) -> List[Tuple[int, int]]:
    """(sample, partner) of the first `count` samples whose tokens HTM replaced at `block`, in batch order.

    `out` must come from `model(x, target, return_mix=True)` in train mode.
    """
    if block not in out.stats:
        raise ValueError(f'block {block} has no HTM statistics; the HTM blocks are {sorted(out.stats)}')
    record = out.stats[block]
    if record.mask.numel() == 0:
        raise ValueError('the statistics hold no mask: call the model with return_mix=True')
    mixed = record.mask.any(dim=1).nonzero().flatten().tolist()
    return [(index, int(record.partner[index])) for index in mixed[:count]]


def _overlay(axes: Any, image: np.ndarray, mask: np.ndarray, colour: Tuple[float, float, float]) -> None:
    """The image with the masked tokens tinted: each token covers its share of the image."""
    _show_image(axes, image)
    tint = np.zeros(mask.shape + (4,))
    tint[..., :3] = colour
    tint[..., 3] = 0.55 * mask
    height, width = image.shape[:2]
    axes.imshow(tint, extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation='nearest')


def draw_mix(path: str, images: np.ndarray, labels: Sequence[int], out: TokenMixupOutput, block: int,
             pairs: Sequence[Tuple[int, int]], grid: Tuple[int, int], class_names: Sequence[str]) -> None:
    """One PNG, a row per (sample, partner): the sample with the tokens HTM replaced, the partner with the tokens
    it gave (the same positions), and the sample's mixed label weights. `images` (B, H, W, C) in [0, 1]."""
    if not pairs:
        raise ValueError('pairs is empty: no sample was mixed')
    figure = _figure('the mix picture', (MIX_ROW_PX[0], MIX_ROW_PX[1] * len(pairs)))
    rows = figure.subplots(len(pairs), 3, squeeze=False, gridspec_kw=dict(width_ratios=(1, 1, 2.2)))
    mask = out.stats[block].mask.reshape(-1, *grid).float().cpu().numpy()
    target = out.target.detach().float().cpu().numpy()
    for (sample, partner), (receiver_axes, giver_axes, label_axes) in zip(pairs, rows):
        replaced = int(mask[sample].sum())
        _overlay(receiver_axes, images[sample], mask[sample], (1.0, 0.2, 0.1))
        receiver_axes.set_title(f'sample {sample} ({class_names[labels[sample]]})\n{replaced} / {mask[sample].size} '
                                'tokens replaced', fontsize=8)
        _overlay(giver_axes, images[partner], mask[sample], (0.1, 0.5, 1.0))
        giver_axes.set_title(f'partner {partner} ({class_names[labels[partner]]})\nthe tokens it gave', fontsize=8)
        positions = np.arange(len(class_names))
        label_axes.bar(positions, target[sample], color='0.5')
        for index, colour in ((labels[sample], (1.0, 0.2, 0.1)), (labels[partner], (0.1, 0.5, 1.0))):
            label_axes.bar([index], [target[sample][index]], color=colour)
        label_axes.set_xticks(positions, list(class_names), fontsize=7)
        label_axes.set_ylim(0.0, 1.0)
        label_axes.set_title(f'mixed label of sample {sample}: {target[sample][labels[sample]]:.2f} '
                             f'{class_names[labels[sample]]}, {target[sample][labels[partner]]:.2f} '
                             f'{class_names[labels[partner]]}', fontsize=8)
        label_axes.tick_params(axis='y', labelsize=7)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.1 / len(pairs), top=1 - 0.16 / len(pairs),
                           wspace=0.15, hspace=0.45)
    _save(figure, path)


# ---------------------------------------------------------------------------------------------
# the curriculum (paper Fig. 4)

class CurriculumSeries(NamedTuple):
    """Per epoch: the epochs, validation top-1, and for each HTM block (in order) the mixed samples per batch
    and the replaced tokens per mixed sample."""
    epochs: List[int]
    top1: List[float]
    mixed_samples: Dict[int, List[float]]
    replaced_tokens: Dict[int, List[float]]


def curriculum_series(summary_path: str) -> CurriculumSeries:
    """Read a train.py `summary.csv` (columns `epoch`, `eval_top1`, `train_htm{l}_mixed_samples`, ...)."""
    with open(summary_path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f'{summary_path} holds no epoch yet')
    missing = {'epoch', 'eval_top1'} - set(rows[0])
    if missing:
        raise ValueError(f'{summary_path} is not a train.py summary.csv: it has no {sorted(missing)} column')
    blocks = sorted(int(key[len('train_htm'):-len('_mixed_samples')]) for key in rows[0]
                    if key.startswith('train_htm') and key.endswith('_mixed_samples'))

    def column(key: str) -> List[float]:
        return [float(row[key]) if row.get(key) not in (None, '') else math.nan for row in rows]

    return CurriculumSeries(
        epochs=[int(float(row['epoch'])) for row in rows], top1=column('eval_top1'),
        mixed_samples={block: column(f'train_htm{block}_mixed_samples') for block in blocks},
        replaced_tokens={block: column(f'train_htm{block}_replaced_tokens') for block in blocks})


def draw_curriculum(summary_path: str, path: str, title: str = '') -> CurriculumSeries:
    """One PNG of three panels over the epochs: mixed samples per batch and replaced tokens per mixed sample of
    each HTM block, and validation top-1. Returns the series drawn."""
    series = curriculum_series(summary_path)
    figure = _figure('the curriculum picture', CURRICULUM_FIGURE_PX)
    mixed_axes, replaced_axes, top1_axes = figure.subplots(1, 3)
    for block in series.mixed_samples:
        mixed_axes.plot(series.epochs, series.mixed_samples[block], marker='o', markersize=3,
                        label=f'HTM block {block}')
        replaced_axes.plot(series.epochs, series.replaced_tokens[block], marker='o', markersize=3,
                           label=f'HTM block {block}')
    if not series.mixed_samples:
        for axes in (mixed_axes, replaced_axes):
            axes.text(0.5, 0.5, 'no HTM layer', ha='center', va='center', transform=axes.transAxes)
    top1_axes.plot(series.epochs, series.top1, marker='o', markersize=3, color='black')
    for axes, label in ((mixed_axes, 'mixed samples per batch'), (replaced_axes, 'replaced tokens per mixed sample'),
                        (top1_axes, 'validation top-1 (%)')):
        axes.set_xlabel('epoch', fontsize=9)
        axes.set_title(label, fontsize=10)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        if axes is not top1_axes and series.mixed_samples:
            axes.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.82 if title else 0.9, wspace=0.25)
    _save(figure, path)
    return series
