""" Horizontal TokenMixup mixing step: ours vs a re-implementation of the released per-batch procedure

Times, on CPU, the mixing step of one HTM layer (gain matrix, Hungarian matching, token and label mixing)
for a CCT-7/3x1 batch at 32x32 (B=128, T=256 tokens, no prefix, D=256, C=100) at several fractions of easy
samples:
  (a) ours: `tokenmixup.horizontal_mix` (keeps the batch order, one host copy, value checks folded in);
  (b) baseline: the released TokenMixup procedure re-written here: boolean-index the easy rows, build the
      (B', B, T) saliency difference tensor with `repeat`, clamp at rho, sum over tokens, copy to the host,
      `linear_sum_assignment` on the negated matrix, gather a mask, mix tokens with arithmetic masks, compute
      the label ratios and concatenate mixed and non-mixed rows (this reorders the batch; fine for timing).

Prints one row per easy fraction: median milliseconds of each and ours / baseline. Asserts nothing about
timings. Run from the repository root:

    python benchmarks/bench_horizontal_mix.py [--threads 2] [--min-run-time 1.0]
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install -e .`
from tokenmixup import horizontal_mix  # noqa: E402

BATCH, TOKENS, DIM, CLASSES = 128, 256, 256, 100
RHO = 0.005  # the CCT CIFAR-100 recipe
EASY_FRACTIONS = (0.0, 0.25, 0.5, 1.0)


def baseline_mix(x: torch.Tensor, y: torch.Tensor, saliency: torch.Tensor, easy: torch.Tensor, rho: float):
    """Per-batch mixing in the style of the released code (see the module docstring)."""
    x_easy, y_easy, s_easy = x[easy], y[easy], saliency[easy]
    x_rest, y_rest = x[~easy], y[~easy]
    num_easy = s_easy.shape[0]
    if num_easy == 0:
        return torch.cat([x_easy, x_rest]), torch.cat([y_easy, y_rest])
    batch_size = saliency.shape[0]
    # difference[i, j, t] = S[j, t] - S_easy[i, t]
    difference = saliency.unsqueeze(0).repeat(num_easy, 1, 1) - s_easy.unsqueeze(1).repeat(1, batch_size, 1)
    gain = (difference - rho).clamp(min=0).sum(dim=-1)
    _, columns = linear_sum_assignment(-gain.cpu().numpy())
    partner = torch.as_tensor(columns, dtype=torch.long, device=x.device)
    picked = difference.gather(1, partner.view(-1, 1, 1).expand(-1, 1, difference.shape[-1])).squeeze(1)
    replace = (picked > rho).float()  # 1 = take the partner's token
    keep = 1.0 - replace
    x_mixed = keep.unsqueeze(-1) * x_easy + replace.unsqueeze(-1) * x[partner]
    s_partner = saliency[partner]
    own = (keep * s_easy).sum(dim=-1)
    taken = (replace * s_partner).sum(dim=-1)
    ratio = (own / (own + taken)).unsqueeze(-1)
    y_mixed = ratio * y_easy + (1.0 - ratio) * y[partner]
    return torch.cat([x_mixed, x_rest]), torch.cat([y_mixed, y_rest])


def make_batch(easy_fraction: float, generator: torch.Generator):
    x = torch.randn(BATCH, TOKENS, DIM, generator=generator)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    y = torch.nn.functional.one_hot(labels, CLASSES).float() * 0.9 + 0.1 / CLASSES  # label-smoothed
    # attention-like saliency: positive rows summing to 1, around 1 / T with a spread comparable to rho
    saliency = (torch.randn(BATCH, TOKENS, generator=generator) * 1.5).softmax(dim=-1)
    easy = torch.zeros(BATCH, dtype=torch.bool)
    easy[torch.randperm(BATCH, generator=generator)[:round(easy_fraction * BATCH)]] = True
    return x, y, saliency, easy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (default 2)')
    parser.add_argument('--min-run-time', type=float, default=1.0, help='seconds per measurement (default 1)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f'horizontal mixing, CPU, {args.threads} threads: B={BATCH} T={TOKENS} D={DIM} C={CLASSES} rho={RHO}')
    print(f'{"easy":>6} {"B_easy":>6} {"ours ms":>9} {"baseline ms":>12} {"ours/baseline":>14}')
    for fraction in EASY_FRACTIONS:
        x, y, saliency, easy = make_batch(fraction, torch.Generator().manual_seed(0))
        medians = {}
        for name, stmt in (('ours', 'horizontal_mix(x, y, saliency, easy, rho)'),
                           ('baseline', 'baseline_mix(x, y, saliency, easy, rho)')):
            timer = benchmark.Timer(
                stmt=stmt,
                globals=dict(horizontal_mix=horizontal_mix, baseline_mix=baseline_mix,
                             x=x, y=y, saliency=saliency, easy=easy, rho=RHO),
                num_threads=args.threads,
                label='horizontal mix', sub_label=f'easy {fraction}', description=name)
            timer.timeit(3)  # warm-up
            medians[name] = timer.blocked_autorange(min_run_time=args.min_run_time).median * 1e3
        print(f'{fraction:>6.2f} {int(easy.sum()):>6d} {medians["ours"]:>9.2f} {medians["baseline"]:>12.2f} '
              f'{medians["ours"] / medians["baseline"]:>14.2f}')


if __name__ == '__main__':
    main()
