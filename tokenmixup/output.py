""" What a TokenMixup model returns when called with targets, and its per-layer statistics

`TokenMixupOutput` is the model protocol of docs/design.md §3. Its `stats` maps each HTM block index to
an `HTMStatistics` record of scalar tensors; every quantity has one name, used as it is in `out.stats`
and, as `htm{block}_{name}`, in train.py's progress and epoch lines and summary.csv
(`flat_statistics`, `HTMStatisticsMeter`).
"""
from collections import OrderedDict
from typing import Dict, Mapping, NamedTuple, Optional, Sequence

import torch

__all__ = ['TokenMixupOutput', 'HTMStatistics', 'HTMStatisticsMeter', 'flat_statistics', 'EPOCH_QUANTITIES']


class HTMStatistics(NamedTuple):
    """What one HTM layer did to one batch: float32 scalar tensors on the batch's device.

    easy_samples: samples the ScoreNet found easy (every sample without difficulty gating).
    mixed_samples: samples with at least one replaced token.
    replaced_tokens: mean replaced tokens per mixed sample.
    difficulty: mean ScoreNet cross-entropy (paper Eq. 1); difficulty_min: its minimum.
    gain: mean saliency gain (Eq. 6) of the chosen pairs of easy samples; gain_max: its maximum.
    nonfinite_samples: samples whose tokens or saliency held NaN or infinite values; they are left
        unmixed and are never partners.
    mask: (B, T) bool, True where a token was replaced; partner: (B,) long, the sample each row took
        tokens from (its own index where nothing was taken). Both only when asked for
        (`model(x, target, return_mix=True)`); otherwise empty (shape (0,)), so that the record stays a
        tuple of tensors for DDP, torch.compile and pytree maps.
    """
    easy_samples: torch.Tensor
    mixed_samples: torch.Tensor
    replaced_tokens: torch.Tensor
    difficulty: torch.Tensor
    difficulty_min: torch.Tensor
    gain: torch.Tensor
    gain_max: torch.Tensor
    nonfinite_samples: torch.Tensor
    mask: torch.Tensor
    partner: torch.Tensor


class TokenMixupOutput(NamedTuple):
    """What `model(x, target)` returns.

    logits: (B, num_classes) predictions.
    target: (B, num_classes) float targets to train against, mixed where HTM mixed; unchanged (but
        one-hot encoded if hard labels were given) in eval mode.
    aux_loss: scalar tensor to add to the training loss (the weighted ScoreNet losses; zero when
        there is none).
    stats: HTM block index -> `HTMStatistics` of that layer (empty when HTM did not run); tensors
        that the model never synchronises.
    """
    logits: torch.Tensor
    target: torch.Tensor
    aux_loss: torch.Tensor
    stats: Dict[int, HTMStatistics]


# the quantities train.py reports per epoch: mean per batch, except replaced_tokens (per mixed sample)
EPOCH_QUANTITIES = ('mixed_samples', 'replaced_tokens', 'difficulty')


def flat_statistics(
        stats: Mapping[int, HTMStatistics],
        quantities: Sequence[str] = EPOCH_QUANTITIES,
) -> Dict[str, torch.Tensor]:
    """{'htm{block}_{quantity}': tensor} for logging, blocks in order."""
    return OrderedDict(
        (f'htm{block}_{quantity}', getattr(stats[block], quantity))
        for block in sorted(stats) for quantity in quantities)


class HTMStatisticsMeter:
    """Per-epoch HTM statistics, summed on the device and read once, in `compute`.

    For each HTM block it reports `htm{block}_mixed_samples` (mean mixed samples per batch, the
    curriculum of paper Fig. 4), `htm{block}_replaced_tokens` (mean replaced tokens per mixed sample)
    and `htm{block}_difficulty` (mean ScoreNet loss per batch).
    """

    def __init__(self) -> None:
        self.sums: Dict[int, torch.Tensor] = {}

    def update(self, stats: Mapping[int, HTMStatistics], include: Optional[torch.Tensor] = None) -> None:
        """Add one step's statistics (no device-to-host copy); a step with `include` False (a bool tensor,
        e.g. whether its loss was finite) is left out."""
        for block, record in stats.items():
            values = torch.stack([
                record.mixed_samples, record.replaced_tokens * record.mixed_samples, record.difficulty,
                torch.ones_like(record.difficulty)]).detach().float()
            if include is not None:
                values = torch.where(include, values, torch.zeros_like(values))
            self.sums[block] = self.sums[block] + values if block in self.sums else values

    def compute(self, distributed: bool = False) -> Dict[str, float]:
        """The epoch's values, summed over processes with `distributed` (every rank must call it)."""
        metrics: Dict[str, float] = OrderedDict()
        for block in sorted(self.sums):
            totals = self.sums[block].clone()
            if distributed:
                torch.distributed.all_reduce(totals)
            mixed, replaced, difficulty, steps = totals.tolist()
            metrics[f'htm{block}_mixed_samples'] = mixed / max(steps, 1)
            metrics[f'htm{block}_replaced_tokens'] = replaced / mixed if mixed > 0 else 0.0
            metrics[f'htm{block}_difficulty'] = difficulty / max(steps, 1)
        return metrics
