""" Does TokenMixup help on the embedded digits? An A/B of the quickstart recipe over arms and seeds

Trains every arm with every seed by running `train.py` (the quickstart recipe: its defaults, plus whatever follows
`--` on this command line, applied to every run) and reads each run's `summary.csv`:

  base           cct_2_3x2                 (no TokenMixup)
  htm            cct_2_3x2_htm
  vtm            cct_2_3x2_vtm
  htm_vtm        cct_2_3x2_htm_vtm         (the quickstart model)
  random_tokens  cct_2_3x2_htm_vtm --token-selection random   (paper Table 4's random-token ablation)

Reported per arm: mean, sample standard deviation, min and max over the seeds of the final and of the best
validation top-1, the mean gap to the base arm, and what HTM did in the last epoch (mixed samples per batch,
replaced tokens per mixed sample), so that an arm that loses can be traced to how much it mixed. Runs go to
`--output`/train/<arm>-s<seed> (<arm>-<tag>-s<seed> with `--tag`); a run folder that already holds a finished run of
the same command is read, not retrained (so an interrupted study continues). Asserts nothing: it measures.

Each run is a separate process with `--threads` torch threads (OMP_NUM_THREADS); `--jobs` runs go at once. The
thread count changes the order of float sums, which over a run moves the top-1 about as much as a seed does: compare
arms at one thread count. Run from the repository root:

    python benchmarks/ab_digits.py [--arms base htm vtm htm_vtm random_tokens] [--seeds 42 43 44]
        [--jobs 2 --threads 1] [--output ./output/ab_digits] [--json] [-- <train.py flags for every run>]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from _study import TOKENMIXUP_ARMS, add_study_args, check_study_args, finished, read_summary, split_train_args

REPO_ROOT = Path(__file__).resolve().parents[1]
ARMS = TOKENMIXUP_ARMS
RECORD = 'ab_command.json'  # the command of a finished run, written by this script


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    own, train_args = split_train_args(argv)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0].strip())
    add_study_args(parser, ARMS, './output/ab_digits')
    parser.add_argument('--tag', default='', help='part of the run folder names (ARM-TAG-sSEED), to keep studies of '
                        'other train.py flags apart')
    args = parser.parse_args(own)
    check_study_args(parser, args)
    return args, train_args


def run_name(arm: str, seed: int, tag: str) -> str:
    """The run folder's name: ARM-sSEED, or ARM-TAG-sSEED."""
    return f'{arm}-{tag}-s{seed}' if tag else f'{arm}-s{seed}'


def run_command(arm: str, seed: int, args: argparse.Namespace, train_args: Sequence[str]) -> List[str]:
    return [sys.executable, str(REPO_ROOT / 'train.py'), *ARMS[arm], '--seed', str(seed), '--output', args.output,
            '--experiment', run_name(arm, seed, args.tag), '--no-progress', *train_args]


def train(arm: str, seed: int, args: argparse.Namespace, train_args: Sequence[str]) -> Dict[str, Any]:
    """Train one run (unless its folder already holds it finished) and summarise its summary.csv."""
    folder = Path(args.output) / 'train' / run_name(arm, seed, args.tag)
    command = run_command(arm, seed, args, train_args)
    if not finished(folder, command, RECORD):
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        force = ['--force'] if folder.exists() else []
        completed = subprocess.run(command + force, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if completed.returncode != 0:
            raise SystemExit(f'{arm} seed {seed} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}')
        (folder / RECORD).write_text(json.dumps(list(command)))
    rows = read_summary(folder)
    top1 = [row['eval_top1'] for row in rows]
    best = max(range(len(top1)), key=lambda epoch: (top1[epoch], -epoch))
    last = rows[-1]
    htm = {key[len('train_'):]: value for key, value in last.items()
           if key.startswith('train_htm') and key.endswith(('_mixed_samples', '_replaced_tokens'))}
    return {'arm': arm, 'seed': seed, 'folder': str(folder), 'epochs': len(rows), 'final_top1': top1[-1],
            'best_top1': top1[best], 'best_epoch': best, 'last_epoch_htm': htm,
            'command': ' '.join(['python', 'train.py', *command[2:]])}


def describe(values: Sequence[float]) -> Dict[str, float]:
    """mean, sample standard deviation (0 for one value), min and max."""
    return {'mean': statistics.fmean(values), 'std': statistics.stdev(values) if len(values) > 1 else 0.0,
            'min': min(values), 'max': max(values)}


def summarise(runs: Sequence[Dict[str, Any]], arms: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    result = {}
    for arm in arms:
        mine = [run for run in runs if run['arm'] == arm]
        htm_keys = sorted({key for run in mine for key in run['last_epoch_htm']})
        result[arm] = {
            'final_top1': describe([run['final_top1'] for run in mine]),
            'best_top1': describe([run['best_top1'] for run in mine]),
            'last_epoch_htm': {key: statistics.fmean(run['last_epoch_htm'][key] for run in mine) for key in htm_keys},
        }
    if 'base' in result:
        for arm in arms:
            for metric in ('final_top1', 'best_top1'):
                result[arm][metric]['gap_to_base'] = result[arm][metric]['mean'] - result['base'][metric]['mean']
    return result


def table(result: Dict[str, Any]) -> str:
    lines = ['| arm | model | final top-1 mean ± std (min-max) | best top-1 mean ± std (min-max) | '
             'gap to base (final / best) | last epoch: mixed / replaced |', '|---|---|---|---|---|---|']
    for arm, row in result['arms'].items():
        cells = []
        for metric in ('final_top1', 'best_top1'):
            m = row[metric]
            cells.append(f"{m['mean']:.2f} ± {m['std']:.2f} ({m['min']:.2f}-{m['max']:.2f})")
        gap = (f"{row['final_top1']['gap_to_base']:+.2f} / {row['best_top1']['gap_to_base']:+.2f}"
               if 'gap_to_base' in row['final_top1'] else '-')
        htm = row['last_epoch_htm']
        blocks = sorted({key.split('_')[0] for key in htm})
        mixing = ', '.join(f"{block}: {htm[block + '_mixed_samples']:.1f} / {htm[block + '_replaced_tokens']:.1f}"
                           for block in blocks) or '-'
        cells.extend([gap, mixing])
        lines.append(f"| {arm} | {' '.join(ARMS[arm][1:])} | " + ' | '.join(cells) + ' |')
    config = result['config']
    lines.append('')
    lines.append(f"seeds {config['seeds']}, {config['threads']} thread(s) per run; train.py flags for every run: "
                 f"{' '.join(config['train_args']) or '(the quickstart defaults)'}")
    lines.append(f"command: {config['command']}")
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args, train_args = parse_args(argv)
    jobs = [(arm, seed) for arm in args.arms for seed in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(lambda job: train(*job, args, train_args), jobs))
    result = {
        'arms': summarise(runs, args.arms),
        'runs': runs,
        'config': {'arms': args.arms, 'seeds': args.seeds, 'threads': args.threads, 'jobs': args.jobs,
                   'train_args': list(train_args), 'output': args.output,
                   'command': ' '.join([Path(sys.executable).name] + sys.argv)},
        'versions': {'python': platform.python_version(), 'platform': platform.platform(),
                     'cpu_count': os.cpu_count(), 'torch': version('torch'), 'timm': version('timm')},
    }
    print(json.dumps(result, allow_nan=False) if args.json else table(result))


if __name__ == '__main__':
    main()
