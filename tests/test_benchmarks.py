"""The benchmark scripts (benchmarks/README.md) run on a tiny configuration and print what they document.

Each script runs as a user runs it (`python benchmarks/<script>.py ...` from the repository root, one thread) and,
with --json, prints exactly one JSON object with the documented keys, positive finite times and positive memory
ratios. Nothing here asserts anything about speed: the scripts measure, they do not judge.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ('--batch-size', '4', '--img-size', '16', '--warmup', '0')
VERSION_KEYS = {'torch', 'timm', 'python', 'platform', 'cpu_count', 'torch_threads'}


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / 'benchmarks' / script), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def load_script(script: str) -> Any:
    """A benchmark script imported as a module (its `main` is not run)."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO_ROOT / 'benchmarks' / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_json(script: str, *args: str) -> Dict[str, Any]:
    """Run with --json: exit status 0 and stdout exactly one JSON object (warnings go to stderr)."""
    completed = run_script(script, *args, '--json')
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)  # one object and nothing else: json.loads rejects trailing text
    assert isinstance(result, dict)
    return result


def assert_positive_finite(result: Dict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        value = result[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)


def test_saliency_prints_one_json_object_with_the_four_passes_and_the_table_3_ratios():
    result = run_json('saliency.py', '--model', 'cct_2_3x2_htm', '--repeats', '1', *TINY)
    assert_positive_finite(result, ['gradient_ms', 'attention_ms', 'random_ms', 'rollout_ms',
                                    'gradient_over_attention', 'attention_over_random'])
    assert result['gradient_over_attention'] == pytest.approx(result['gradient_ms'] / result['attention_ms'])
    assert result['attention_over_random'] == pytest.approx(result['attention_ms'] / result['random_ms'])
    config = result['config']
    assert (config['model'], config['batch_size'], config['img_size'], config['device'], config['repeats']) == \
        ('cct_2_3x2_htm', 4, [16, 16], 'cpu', 1)
    assert config['block'] == 1  # the HTM block of cct_2_3x2_htm (docs/design.md §5.3)
    assert VERSION_KEYS <= set(result['versions'])


def test_saliency_without_json_prints_a_table_and_the_command_line():
    completed = run_script('saliency.py', '--model', 'cct_2_3x2_htm', '--repeats', '1', *TINY)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert [line.split()[0] for line in lines[2:6]] == ['gradient', 'attention', 'random', 'rollout']
    assert lines[-1].startswith('command: ') and '--model cct_2_3x2_htm' in lines[-1]


def test_train_step_reports_every_variant_against_the_base():
    result = run_json('train_step.py', '--model', 'cct_2_3x2', '--memory-batch-size', '2', '--repeats', '2', *TINY)
    variants = result['variants']
    assert list(variants) == ['cct_2_3x2', 'cct_2_3x2_htm', 'cct_2_3x2_vtm', 'cct_2_3x2_htm_vtm']
    for entry in variants.values():
        assert_positive_finite(entry, ['step_ms', 'step_ratio', 'eval_ms', 'eval_ratio', 'saved_bytes',
                                       'memory_ratio', 'memory_floor_ratio', 'memory_floor_with_norm_ratio'])
        assert entry['step_iqr_ms'] >= 0 and entry['step_q25_ms'] <= entry['step_ms'] <= entry['step_q75_ms']
        assert entry['step_ratio'] == pytest.approx(entry['step_ms'] / variants['cct_2_3x2']['step_ms'])
    assert variants['cct_2_3x2']['step_goal'] is None and variants['cct_2_3x2']['memory_ratio'] == 1.0
    goals = {name: (entry['step_goal'], entry['eval_goal'], entry['memory_goal'])
             for name, entry in list(variants.items())[1:]}
    assert goals == {'cct_2_3x2_htm': (1.03, 1.0, 1.02), 'cct_2_3x2_vtm': (1.05, 1.0, 1.05),
                     'cct_2_3x2_htm_vtm': (1.05, 1.0, 1.03)}
    for entry in list(variants.values())[1:]:
        assert isinstance(entry['step_conclusive'], bool) and isinstance(entry['goal_below_floor'], bool)
    # VTM attends to N + kappa keys at its block, so its floor lies above 1; a base has none
    assert variants['cct_2_3x2_vtm']['memory_floor_ratio'] > 1.0 == variants['cct_2_3x2']['memory_floor_ratio']
    assert set(variants['cct_2_3x2_htm']['htm_mixed_samples']) == {'1'}
    config = result['config']
    assert (config['model'], config['batch_size'], config['memory_batch_size'], config['repeats']) == \
        ('cct_2_3x2', 4, 2, 2)
    assert config['memory_measure'] == 'saved_bytes'
    assert VERSION_KEYS <= set(result['versions'])


def test_htm_layer_compares_the_whole_layer_with_random_tokens_and_random_saliency():
    # every sample easy and rho 0, so that matching and mixing run even on a fresh model
    result = run_json('htm_layer.py', '--model', 'cct_2_3x2_htm', '--repeats', '1', '--easy-fraction', '1',
                      '--rho', '0', *TINY)
    assert_positive_finite(result, ['full_ms', 'random_tokens_ms', 'random_saliency_ms', 'full_over_random_tokens',
                                    'full_over_random_saliency'])
    assert result['goal'] == 2.0
    assert result['full_easy'] == 4 and result['full_mixed'] > 0
    assert (result['config']['model'], result['config']['rho']) == ('cct_2_3x2_htm', 0.0)
    assert VERSION_KEYS <= set(result['versions'])


def test_profile_step_lists_the_operators_that_differ_from_the_base():
    completed = run_script('profile_step.py', '--model', 'cct_2_3x2_vtm', '--base', 'cct_2_3x2', '--batch-size', '4',
                           '--warmup', '0', '--top', '3')
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[0].startswith('one train step, batch 4') and 'ratio' in lines[0]
    assert lines[1].startswith('operator') and len(lines) == 2 + 3 + 1  # header, column names, 3 operators, command
    assert all(line.rstrip().endswith(' ms') for line in lines[2:5])
    assert lines[-1].startswith('command: python benchmarks/profile_step.py')


def test_ab_digits_trains_each_arm_and_seed_and_reads_finished_runs_back(tmp_path):
    """One epoch per run: the JSON has every run and each arm's summary; a second call retrains nothing."""
    args = ('--arms', 'base', 'random_tokens', '--seeds', '3', '--jobs', '1', '--output', str(tmp_path), '--json',
            '--', '--epochs', '1')  # after '--': train.py's flags, so --json goes before it

    def study():
        completed = run_script('ab_digits.py', *args)
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout)

    first = study()
    runs = {(run['arm'], run['seed']): run for run in first['runs']}
    assert set(runs) == {('base', 3), ('random_tokens', 3)}
    for (arm, seed), run in runs.items():
        folder = tmp_path / 'train' / f'{arm}-s{seed}'
        assert run['folder'] == str(folder) and run['epochs'] == 1
        assert 0 <= run['final_top1'] <= 100 and run['best_top1'] == run['final_top1']
        expected = '--token-selection random' if arm == 'random_tokens' else '--model cct_2_3x2 '
        assert expected in run['command']
    assert set(runs[('random_tokens', 3)]['last_epoch_htm']) == {'htm1_mixed_samples', 'htm1_replaced_tokens'}
    arms = first['arms']
    assert arms['base']['final_top1']['gap_to_base'] == 0
    assert arms['random_tokens']['final_top1']['mean'] == runs[('random_tokens', 3)]['final_top1']
    assert first['config']['train_args'] == ['--epochs', '1']
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.glob('train/*/summary.csv')}
    second = study()
    assert second['runs'] == first['runs']
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob('train/*/summary.csv')} == stamps


@pytest.mark.slow
def test_fashion_mnist_study_pairs_seeds_and_resumes_a_stopped_run(tmp_path):
    """Two arms, two seeds, one epoch on a tiny idx folder: the paired differences are the per-seed ones; a run whose
    folder holds a checkpoint but no finished record resumes from it instead of restarting; another budget is
    another study, in folders of its own; the ledger's records outlive the run folders, are read back only for the
    same run, and a record of another run is never overwritten."""
    import shutil
    from conftest import write_idx_folder
    data = tmp_path / 'data'
    write_idx_folder(data)
    ledger = tmp_path / 'ledger'
    common = ('--data-dir', str(data), '--regime', 'subset', '--eval', 'test', '--arms', 'base', 'htm_vtm',
              '--seeds', '1', '2', '--jobs', '1', '--output', str(tmp_path / 'study'), '--ledger', str(ledger),
              '--json')
    train_flags = ('--', '--batch-size', '20', '--workers', '0', '--warmup-epochs', '0')

    def run(*own, flags=train_flags):
        return run_script('fashion_mnist.py', *common, *own, *flags)

    def study(*own, flags=train_flags):
        completed = run(*own, flags=flags)
        assert completed.returncode == 0, completed.stderr
        return json.loads(completed.stdout)

    first = study('--epochs', '1')
    runs = {(run['arm'], run['seed']): run for run in first['runs']}
    assert set(runs) == {('base', 1), ('base', 2), ('htm_vtm', 1), ('htm_vtm', 2)}
    assert all(run['epochs'] == 1 and '--train-split train[:6000] --val-split test --epochs 1' in run['command']
               for run in runs.values())
    difference = first['arms']['htm_vtm']['paired_difference']
    per_seed = [runs[('htm_vtm', seed)]['final_top1'] - runs[('base', seed)]['final_top1'] for seed in (1, 2)]
    assert difference['mean'] == pytest.approx(sum(per_seed) / 2) and difference['pairs'] == 2
    assert difference['low'] <= difference['mean'] <= difference['high']
    assert 'paired_difference' not in first['arms']['base']

    # a stopped run: its checkpoint is there, its finished record and its ledger record are not
    folder = tmp_path / 'study' / 'subset-test-1ep' / 'train' / 'base-s1'
    summary, stamp = (folder / 'summary.csv').read_text(), (folder / 'summary.csv').stat().st_mtime_ns
    (folder / 'study_command.json').unlink()
    (ledger / 'subset-test-1ep' / 'base-s1.json').unlink()
    resumed = study('--epochs', '1')
    assert resumed['runs'] == first['runs']
    assert (folder / 'summary.csv').stat().st_mtime_ns == stamp  # resumed at its end, not trained again

    longer = study('--epochs', '2', '--arms', 'base', '--seeds', '1')
    assert [run['epochs'] for run in longer['runs']] == [2]
    assert (folder / 'summary.csv').read_text() == summary  # the 1-epoch run is left as it was, not extended
    assert (tmp_path / 'study' / 'subset-test-2ep' / 'train' / 'base-s1' / 'summary.csv').is_file()

    record = json.loads((ledger / 'subset-test-1ep' / 'base-s1.json').read_text())
    assert record['key'][:6] == ['-c', 'configs/fashion_mnist_cct_2_3x2.yaml', '--model', 'cct_2_3x2', '--seed', '1']
    assert str(data) not in json.dumps(record['key']) and len(record['rows']) == 1
    shutil.rmtree(tmp_path / 'study')  # a new machine: the run folders are gone, the ledger is not
    again = study('--epochs', '1', '--report-only')
    assert again['runs'] == first['runs'] and again['arms'] == first['arms']
    assert not (tmp_path / 'study' / 'subset-test-1ep' / 'train').exists()  # nothing trained
    assert study('--epochs', '3', '--report-only')['runs'] == []  # another budget's records are not read back

    other = run('--epochs', '1', flags=(*train_flags, '--smoothing', '0.2'))  # same place, another run
    assert other.returncode != 0 and 'never overwritten' in other.stderr and '--ledger' in other.stderr
    assert json.loads((ledger / 'subset-test-1ep' / 'base-s1.json').read_text()) == record
    for misplaced_flags in (('--epochs', '2'), ('--epochs=2',)):
        misplaced = run(flags=(*train_flags, *misplaced_flags))
        assert misplaced.returncode == 2 and "the study's --epochs" in misplaced.stderr


def test_clean_vs_mixed_reports_a_checkpoint_on_clean_and_mixed_images(tmp_path):
    """One epoch of cct_2_3x2_htm_vtm on a tiny idx folder: the clean numbers are consistent, with VTM off and on,
    and the mixed forward reports its HTM block."""
    import train
    from conftest import write_idx_folder
    data = tmp_path / 'data'
    write_idx_folder(data)
    result = train.main(['--dataset', 'torch/fashion_mnist', '--data-dir', str(data), '--model', 'cct_2_3x2_htm_vtm',
                         '--epochs', '1', '--batch-size', '20', '--workers', '0', '--warmup-epochs', '0',
                         '--no-progress', '--output', str(tmp_path), '--experiment', 'run', '--tau', '100',
                         '--rho', '0'])
    checkpoint = str(Path(result['output_dir']) / 'last.pth.tar')
    completed = run_script('clean_vs_mixed.py', checkpoint, '--split', 'test', '--train-split', 'train',
                           '--count', '40', '--json')
    assert completed.returncode == 0, completed.stderr
    row, = json.loads(completed.stdout)['results']
    clean = row['clean']
    assert 0 <= clean['top1'] <= clean['top2'] <= 100
    assert 0 < clean['second_prob'] <= clean['max_prob'] <= 1 and 0 < clean['most_predicted_share'] <= 1
    vtm_on = row['clean_vtm_on']
    assert vtm_on is not None and 0 <= vtm_on['top1'] <= vtm_on['top2'] <= 100
    block = row['mixed_train']['htm_blocks']['1']
    assert block['mixed_share'] > 0.5  # tau 100, rho 0: every sample is easy and any saliency gain is taken
    assert 0 < block['own_label_weight'] < 1 and 0 <= block['partner_of_other_class'] <= 1


def test_training_without_dropout_differs_from_eval_only_by_vtm():
    """With every dropout probability at 0, a training-mode forward of the base model is its eval forward exactly
    (timm's fused attention reads `attn_drop.p` while its Attention is training, so putting the Dropout modules in
    eval mode is not enough); with a VTM block it differs; the probabilities and eval mode come back on exit."""
    import timm
    import torch
    clean_vs_mixed = load_script('clean_vs_mixed.py')
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name, vtm in (('cct_2_3x2', False), ('cct_2_3x2_vtm', True)):
        model = timm.create_model(name, num_classes=10).eval()
        attn_drop = model.blocks[0].attn.attn_drop.p
        assert attn_drop > 0 and clean_vs_mixed.has_vtm(model) == vtm
        with torch.no_grad():
            expected = model(x)
            with clean_vs_mixed.training_without_dropout(model):
                assert model.training and model.blocks[0].attn.attn_drop.p == 0
                got = model(x)
        assert not model.training and model.blocks[0].attn.attn_drop.p == attn_drop
        assert torch.equal(got, expected) != vtm
