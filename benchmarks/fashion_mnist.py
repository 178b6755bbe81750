""" Fashion-MNIST study: does TokenMixup beat its base, and Mixup/CutMix, on a real 10-class dataset?

Trains every arm with every seed in a regime by running `train.py` with the recipe config
(`configs/fashion_mnist_cct_2_3x2.yaml` unless `--config`), and reads each run's `summary.csv`:

  base                   cct_2_3x2
  htm                    cct_2_3x2_htm
  vtm                    cct_2_3x2_vtm
  htm_vtm                cct_2_3x2_htm_vtm
  random_tokens          cct_2_3x2_htm_vtm --token-selection random    (paper Table 4's ablation)
  mixup_cutmix           cct_2_3x2 with timm's Mixup 0.8 / CutMix 1.0   (what a practitioner uses instead)
  mixup_cutmix_htm_vtm   cct_2_3x2_htm_vtm with Mixup / CutMix, tau 1.0 (the paper's setting, Table 5, with the
                         registered tau for 10 classes; the config's tau is for training without input mixing)

Regimes: `full` (all 60,000 training images) and `subset` (the fixed class-balanced 10%, `train[:6000]`).
`--eval holdout` trains on the training images minus a balanced held-out 6,000 (`train[54000:]`) and validates on
those: use it for every choice. `--eval test` trains on the regime's images and evaluates once on the 10,000 test
images: the final numbers. Reported per arm: mean ± sample std of the final top-1 over seeds, and the difference
to the base paired by seed with its 95% t-interval; plus what HTM did in the last epoch.

The budget of every run is the config's 8 epochs unless `--epochs N`; a study at another budget is a study of its
own, `<regime>-<eval>-<N>ep` (a finished shorter run is never extended into a longer one: its LR schedule was
another).

Each run is `--output`/<study>/<arm>-s<seed>, where <study> is <regime>-<eval>[-<N>ep]. A run killed part way resumes
from its `last.pth.tar` (train.py --resume restores the exact state). A finished run leaves a record in `--ledger`
(committed with the repository, `benchmarks/results/fashion_mnist/<study>/<arm>-s<seed>.json`: its train.py
arguments without paths, its summary.csv rows, the commit and the machine), and a run whose record is there is read
back and never trained again, on any machine: run folders do not outlive a machine, the ledger does. So the study
can be stopped and restarted at will and completed in parts (`--arms`, `--seeds`), across sessions. A record of
another run at the same place (other flags after `--`) is never overwritten: the study stops and asks for another
`--ledger`. `--jobs` runs go at once with `--threads` torch threads each. Asserts nothing: it measures. From the
repository root:

    python benchmarks/fashion_mnist.py --data-dir /usr/share/datasets/fashion-mnist --regime subset --eval test
        [--epochs N] [--arms ...] [--seeds 42 43 44] [--jobs 2 --threads 1] [--output ./output/fashion_mnist]
        [--json] [--ledger DIR] [--report-only] [-- <more train.py flags for every run>]
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from scipy import stats

from _study import TOKENMIXUP_ARMS, add_study_args, check_study_args, finished, read_summary, split_train_args
from tokenmixup_tools.files import atomic_open

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / 'configs' / 'fashion_mnist_cct_2_3x2.yaml'
MIXUP_CUTMIX = ('--mixup', '0.8', '--cutmix', '1.0')
ARMS: Dict[str, Tuple[str, ...]] = {
    **TOKENMIXUP_ARMS,
    'mixup_cutmix': ('--model', 'cct_2_3x2', *MIXUP_CUTMIX),
    'mixup_cutmix_htm_vtm': ('--model', 'cct_2_3x2_htm_vtm', *MIXUP_CUTMIX, '--tau', '1.0'),
}
# (training split, evaluation split) of each regime and evaluation
SPLITS = {
    ('full', 'holdout'): ('train[:54000]', 'train[54000:]'),
    ('full', 'test'): ('train', 'test'),
    ('subset', 'holdout'): ('train[:6000]', 'train[54000:]'),
    ('subset', 'test'): ('train[:6000]', 'test'),
}
RECORD = 'study_command.json'  # the command of a finished run, written by this script
DEFAULT_LEDGER = REPO_ROOT / 'benchmarks' / 'results' / 'fashion_mnist'


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    own, train_args = split_train_args(argv)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0].strip())
    parser.add_argument('--data-dir', required=True, help='folder with the Fashion-MNIST idx files')
    parser.add_argument('--regime', choices=('full', 'subset'), required=True, help='all training images or 10%%')
    parser.add_argument('--eval', choices=('holdout', 'test'), required=True,
                        help='holdout: validate on train[54000:] (for choices); test: the test set (final runs)')
    parser.add_argument('--config', default=str(DEFAULT_CONFIG), help='train.py -c config of every run')
    parser.add_argument('--epochs', type=int, default=None, metavar='N',
                        help='the budget of every run (default: the config\'s); another budget is another study')
    parser.add_argument('--ledger', default=str(DEFAULT_LEDGER),
                        help='folder of the finished runs\' records (default: the committed benchmarks/results/...)')
    parser.add_argument('--report-only', action='store_true', help='train nothing: report the finished runs')
    add_study_args(parser, ARMS, './output/fashion_mnist')
    args = parser.parse_args(own)
    check_study_args(parser, args)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f'--epochs must be >= 1, got {args.epochs}')
    if any(flag == '--epochs' or flag.startswith('--epochs=') for flag in train_args):
        parser.error('give the budget as the study\'s --epochs, before `--`: it names the study\'s folders')
    return args, train_args


def study_name(args: argparse.Namespace) -> str:
    """<regime>-<eval>, with -<N>ep when --epochs is given (the config's budget is the study without a suffix)."""
    return f'{args.regime}-{args.eval}' + ('' if args.epochs is None else f'-{args.epochs}ep')


def study_folder(args: argparse.Namespace) -> Path:
    return Path(args.output) / study_name(args)


def budget_args(args: argparse.Namespace) -> List[str]:
    return [] if args.epochs is None else ['--epochs', str(args.epochs)]


def run_command(arm: str, seed: int, args: argparse.Namespace, train_args: Sequence[str]) -> List[str]:
    """The train.py command of one run (without --resume / --force)."""
    train_split, eval_split = SPLITS[(args.regime, args.eval)]
    return [sys.executable, str(REPO_ROOT / 'train.py'), '-c', args.config, *ARMS[arm], '--seed', str(seed),
            '--data-dir', args.data_dir, '--train-split', train_split, '--val-split', eval_split, *budget_args(args),
            '--output', str(study_folder(args)), '--experiment', f'{arm}-s{seed}', '--no-progress', *train_args]


def ledger_key(arm: str, seed: int, args: argparse.Namespace, train_args: Sequence[str]) -> List[str]:
    """What identifies a run on any machine: its train.py arguments without the paths (interpreter, script, data,
    output), the config named relative to the repository."""
    train_split, eval_split = SPLITS[(args.regime, args.eval)]
    return ['-c', os.path.relpath(args.config, REPO_ROOT), *ARMS[arm], '--seed', str(seed),
            '--train-split', train_split, '--val-split', eval_split, *budget_args(args), *train_args]


def ledger_path(arm: str, seed: int, args: argparse.Namespace) -> Path:
    return Path(args.ledger) / study_name(args) / f'{arm}-s{seed}.json'


def read_ledger(path: Path, key: Sequence[str]) -> Tuple[bool, Optional[List[Dict[str, float]]]]:
    """(whether a record is at `path`, the summary rows it holds if it is of exactly the run `key`, else None)."""
    if not path.is_file():
        return False, None
    record = json.loads(path.read_text())
    return True, (record['rows'] if record['key'] == list(key) else None)


def commit_of(folder: Path) -> str:
    """The commit of the checkout that trains (with '-dirty' when it has uncommitted changes), or 'unknown'."""
    def git(*command: str) -> str:
        return subprocess.run(['git', *command], cwd=folder, capture_output=True, text=True).stdout.strip()
    head = git('rev-parse', 'HEAD')
    if not head:
        return 'unknown'
    return head + ('-dirty' if git('status', '--porcelain', '--untracked-files=no') else '')


def write_ledger(path: Path, key: Sequence[str], rows: List[Dict[str, float]], threads: int, commit: str) -> None:
    """Record a finished run (`commit`: the code it was trained with), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {'key': list(key), 'rows': rows, 'commit': commit, 'threads': threads,
              'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                          'cpu_count': os.cpu_count()},
              'versions': {'python': platform.python_version(), 'torch': version('torch'), 'timm': version('timm')}}
    with atomic_open(path) as f:
        json.dump(record, f, indent=1)
        f.write('\n')


def train(arm: str, seed: int, args: argparse.Namespace, train_args: Sequence[str]) -> Optional[Dict[str, Any]]:
    """Train one run to its end (resuming a killed one) unless the ledger or its folder holds it finished; record it
    in the ledger and summarise it (None: not run)."""
    folder = study_folder(args) / 'train' / f'{arm}-s{seed}'
    command = run_command(arm, seed, args, train_args)
    key, record = ledger_key(arm, seed, args, train_args), ledger_path(arm, seed, args)
    recorded, rows = read_ledger(record, key)
    if rows is None:
        if recorded:
            if args.report_only:
                return None
            raise SystemExit(f'{arm} seed {seed}: the ledger record {record} is of another run (other train.py flags '
                             'after `--`); it is never overwritten: pass --ledger with another folder for this study')
        if not finished(folder, command, RECORD):
            if args.report_only:
                return None
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            checkpoint = folder / 'last.pth.tar'
            # a killed run continues from its last checkpoint; a folder without one starts over
            extra = ['--resume', str(checkpoint)] if checkpoint.is_file() else (['--force'] if folder.exists() else [])
            completed = subprocess.run(command + extra, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
            if completed.returncode != 0:
                raise SystemExit(f'{arm} seed {seed} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}')
            (folder / RECORD).write_text(json.dumps(list(command)))
        rows = read_summary(folder)
        write_ledger(record, key, rows, args.threads, commit_of(REPO_ROOT))
    last = rows[-1]
    htm = {name[len('train_'):]: value for name, value in last.items()
           if name.startswith('train_htm') and name.endswith(('_mixed_samples', '_replaced_tokens'))}
    return {'arm': arm, 'seed': seed, 'record': str(record), 'epochs': len(rows), 'final_top1': last['eval_top1'],
            'best_top1': max(row['eval_top1'] for row in rows), 'last_epoch_htm': htm,
            'command': ' '.join(['python', 'train.py', *command[2:]])}


def paired_difference(values: Sequence[float], base: Sequence[float]) -> Dict[str, float]:
    """Mean of values[i] - base[i] with its 95% t-interval (nan half-width for one pair)."""
    differences = [value - reference for value, reference in zip(values, base)]
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return {'mean': mean, 'low': math.nan, 'high': math.nan, 'pairs': len(differences)}
    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return {'mean': mean, 'low': mean - half, 'high': mean + half, 'pairs': len(differences)}


def summarise(runs: Sequence[Dict[str, Any]], arms: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    base = {run['seed']: run['final_top1'] for run in runs if run['arm'] == 'base'}
    result = {}
    for arm in arms:
        mine = sorted((run for run in runs if run['arm'] == arm), key=lambda run: run['seed'])
        if not mine:
            continue
        top1 = [run['final_top1'] for run in mine]
        row: Dict[str, Any] = {
            'seeds': [run['seed'] for run in mine], 'final_top1_mean': statistics.fmean(top1),
            'final_top1_std': statistics.stdev(top1) if len(top1) > 1 else 0.0,
            'last_epoch_htm': {key: statistics.fmean(run['last_epoch_htm'][key] for run in mine)
                               for key in sorted({key for run in mine for key in run['last_epoch_htm']})}}
        paired = [run for run in mine if run['seed'] in base]
        if arm != 'base' and paired:
            row['paired_difference'] = paired_difference(
                [run['final_top1'] for run in paired], [base[run['seed']] for run in paired])
        result[arm] = row
    return result


def table(result: Dict[str, Any]) -> str:
    lines = ['| arm | final top-1, mean ± std (seeds) | paired difference to base [95% CI] | '
             'last epoch: mixed samples / replaced tokens |', '|---|---|---|---|']
    for arm, row in result['arms'].items():
        difference = row.get('paired_difference')
        if difference is None:
            paired = '-'
        elif math.isnan(difference['low']):
            paired = f"{difference['mean']:+.2f} (1 pair)"
        else:
            paired = f"{difference['mean']:+.2f} [{difference['low']:+.2f}, {difference['high']:+.2f}]"
        htm = row['last_epoch_htm']
        blocks = sorted({key.split('_')[0] for key in htm})
        mixing = ', '.join(f"{block}: {htm[block + '_mixed_samples']:.1f} / {htm[block + '_replaced_tokens']:.1f}"
                           for block in blocks) or '-'
        lines.append(f"| {arm} | {row['final_top1_mean']:.2f} ± {row['final_top1_std']:.2f} "
                     f"({len(row['seeds'])}) | {paired} | {mixing} |")
    config = result['config']
    budget = 'the config\'s epochs' if config['epochs'] is None else f"{config['epochs']} epochs"
    lines += ['', f"regime {config['regime']}, eval {config['eval']}, {budget}, seeds {config['seeds']}, "
                  f"{config['threads']} thread(s) per run; config {config['config']}; extra flags: "
                  f"{' '.join(config['train_args']) or '-'}", f"command: {config['command']}"]
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args, train_args = parse_args(argv)
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]  # seed-major: paired runs finish together
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = [run for run in pool.map(lambda job: train(*job, args, train_args), jobs) if run is not None]
    result = {
        'arms': summarise(runs, args.arms),
        'runs': runs,
        'config': {'regime': args.regime, 'eval': args.eval, 'epochs': args.epochs,
                   'config': os.path.relpath(args.config, REPO_ROOT), 'arms': args.arms, 'seeds': args.seeds,
                   'threads': args.threads, 'jobs': args.jobs,
                   'train_args': list(train_args), 'output': args.output,
                   'command': ' '.join([Path(sys.executable).name] + (sys.argv if argv is None else list(argv)))},
        'versions': {'python': platform.python_version(), 'platform': platform.platform(),
                     'cpu_count': os.cpu_count(), 'torch': version('torch'), 'timm': version('timm')},
    }
    print(json.dumps(result, allow_nan=True) if args.json else table(result))
    return result


if __name__ == '__main__':
    main()
