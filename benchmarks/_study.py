""" What the accuracy studies share (`ab_digits.py`, `fashion_mnist.py`): their command line, each run's summary """
import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# the CCT-2/3x2 arms both studies train: train.py flags of each
TOKENMIXUP_ARMS: Dict[str, Tuple[str, ...]] = {
    'base': ('--model', 'cct_2_3x2'),
    'htm': ('--model', 'cct_2_3x2_htm'),
    'vtm': ('--model', 'cct_2_3x2_vtm'),
    'htm_vtm': ('--model', 'cct_2_3x2_htm_vtm'),
    'random_tokens': ('--model', 'cct_2_3x2_htm_vtm', '--token-selection', 'random'),
}

__all__ = ['TOKENMIXUP_ARMS', 'split_train_args', 'add_study_args', 'check_study_args', 'read_summary', 'finished']


def split_train_args(argv: Optional[Sequence[str]]) -> Tuple[List[str], List[str]]:
    """(the study's own arguments, the train.py flags after `--` that every run gets)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if '--' not in argv:
        return argv, []
    split = argv.index('--')
    return argv[:split], argv[split + 1:]


def add_study_args(parser: argparse.ArgumentParser, arms: Sequence[str], output: str) -> None:
    """--arms, --seeds, --jobs, --threads, --output and --json."""
    parser.add_argument('--arms', nargs='+', default=list(arms), choices=list(arms), help='arms (default: all)')
    parser.add_argument('--seeds', nargs='+', type=int, default=[42, 43, 44], help='train.py --seed values')
    parser.add_argument('--jobs', type=int, default=2, help='runs at once (default 2)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per run (default 1)')
    parser.add_argument('--output', default=output, help=f'where the runs go (default {output})')
    parser.add_argument('--json', action='store_true', help='print one JSON object on stdout and nothing else')


def check_study_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.jobs < 1 or args.threads < 1:
        parser.error('--jobs and --threads must be >= 1')
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f'--seeds must be distinct, got {args.seeds}')


def read_summary(folder: Path) -> List[Dict[str, float]]:
    """The rows of a run's summary.csv, as numbers."""
    with open(folder / 'summary.csv', newline='') as f:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


def finished(folder: Path, command: Sequence[str], record: str) -> bool:
    """Whether `folder` holds a finished run of exactly `command` (the study writes the command of a run that
    exited cleanly to the file `record` in its folder)."""
    path = folder / record
    return path.is_file() and json.loads(path.read_text()) == list(command) and (folder / 'summary.csv').is_file()
