"""validate.py: `python validate.py --checkpoint PATH` reproduces the top-1 of the train.py run.

The round trip: the checkpoint from `python train.py` gives, in `validate.py
--checkpoint`, the same top-1 as the last epoch's summary.csv row (eval_top1). Two real one-epoch
train.py runs on the embedded digits (8x8, their native size) are shared by the whole module.
"""
import csv
import json
import os
from pathlib import Path

import pytest
import torch

import train  # a tool at the repository root: setup.cfg puts the root on pytest's python path
import validate
from tokenmixup_tools.cli import UsageError

TIMM_COLUMNS = ['model', 'top1', 'top1_err', 'top5', 'top5_err', 'param_count', 'img_size', 'crop_pct',
                'interpolation']
QUICK_RUN = ['--epochs', '1', '--batch-size', '64', '--workers', '0', '--img-size', '8', '--warmup-epochs', '0',
             '--log-interval', '1000', '--experiment', 'run']


def _train(output: Path, *extra: str) -> dict:
    result = train.main(QUICK_RUN + ['--output', str(output), *extra])
    run_dir = Path(result['output_dir'])
    with open(run_dir / 'summary.csv', newline='') as f:
        last_row = list(csv.DictReader(f))[-1]
    return {'checkpoint': str(run_dir / 'last.pth.tar'), 'summary': last_row}


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """`python train.py` (the quickstart model), one epoch."""
    return _train(tmp_path_factory.mktemp('train'))


@pytest.fixture(scope='module')
def ema_run(tmp_path_factory):
    """The same with `--model-ema`: its summary.csv reports the EMA weights' metrics."""
    return _train(tmp_path_factory.mktemp('train_ema'), '--model-ema', '--model-ema-decay', '0.9')


def _read_csv(path: Path) -> list:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_checkpoint_alone_gives_the_summary_top1(run, tmp_path):
    """Issue: the checkpoint from train.py gives the same top-1 as the last summary.csv row (eval_top1)."""
    results_file = tmp_path / 'results.csv'
    rows = validate.main(['--checkpoint', run['checkpoint'], '--results-file', str(results_file)])
    assert len(rows) == 1
    row = rows[0]
    eval_top1 = float(run['summary']['eval_top1'])
    assert abs(row['top1'] - round(eval_top1, 4)) < 1e-6
    assert abs(row['top5'] - round(float(run['summary']['eval_top5']), 4)) < 1e-6
    assert abs(row['loss'] - float(run['summary']['eval_loss'])) < 1e-4
    assert row['model'] == 'cct_2_3x2_htm_vtm'
    assert row['img_size'] == 8  # the run's image size, from the checkpoint's record

    written = _read_csv(results_file)
    assert len(written) == 1
    assert set(TIMM_COLUMNS + ['loss']) <= set(written[0])
    assert list(written[0])[:5] == TIMM_COLUMNS[:5]
    assert abs(float(written[0]['top1']) - round(eval_top1, 4)) < 1e-6
    assert abs(float(written[0]['top1']) + float(written[0]['top1_err']) - 100) < 1e-3
    param_count = sum(p.numel() for p in torch.load(
        run['checkpoint'], map_location='cpu', weights_only=False)['state_dict'].values())
    assert float(written[0]['param_count']) == round(param_count / 1e6, 2)


def test_use_ema_validates_the_ema_weights(ema_run):
    """Issue: uses the EMA weights with --use-ema (train.py's summary reports the EMA's metrics)."""
    row, = validate.main(['--checkpoint', ema_run['checkpoint'], '--use-ema'])
    assert abs(row['top1'] - round(float(ema_run['summary']['eval_top1']), 4)) < 1e-6
    assert abs(row['loss'] - float(ema_run['summary']['eval_loss'])) < 1e-4


def test_use_ema_without_ema_weights_says_so(run):
    with pytest.raises(UsageError, match='--use-ema: .* no EMA weights'):
        validate.main(['--checkpoint', run['checkpoint'], '--use-ema'])


def test_num_classes_flag_overrides_the_record(run):
    """Explicit flags win over the record: a head of another size cannot take the weights."""
    with pytest.raises(UsageError, match=r'do not fit cct_2_3x2_htm_vtm with 5 classes \(given --num-classes 5\)'):
        validate.main(['--checkpoint', run['checkpoint'], '--num-classes', '5'])


def test_img_size_flag_overrides_the_record(run):
    """The CCT's learnable positional embedding fixes the token count, so another size fails clearly."""
    with pytest.raises(UsageError, match=r'--img-size 16\).*pos_embed'):
        validate.main(['--checkpoint', run['checkpoint'], '--img-size', '16'])


def test_eval_preprocessing_flags_are_reflected_in_the_row(run):
    row, = validate.main(['--checkpoint', run['checkpoint'], '--crop-pct', '0.875', '--interpolation', 'bilinear'])
    assert (row['crop_pct'], row['interpolation'], row['img_size']) == (0.875, 'bilinear', 8)


def test_eval_preprocessing_defaults_to_the_runs(run, tmp_path):
    """Without flags, the eval crop and interpolation are the ones the run evaluated with; flags win."""
    checkpoint = torch.load(run['checkpoint'], map_location='cpu')  # plain data: loads with weights_only
    checkpoint['args']['crop_pct'], checkpoint['args']['interpolation'] = 0.75, 'bilinear'
    checkpoint_file = tmp_path / 'recorded.pth.tar'
    torch.save(checkpoint, checkpoint_file)
    row, = validate.main(['--checkpoint', str(checkpoint_file)])
    assert (row['crop_pct'], row['interpolation']) == (0.75, 'bilinear')
    row, = validate.main(['--checkpoint', str(checkpoint_file), '--crop-pct', '1.0'])
    assert (row['crop_pct'], row['interpolation']) == (1.0, 'bilinear')


def test_plain_state_dict_needs_model(run, tmp_path):
    """A checkpoint without a recorded configuration is rebuilt from --model (and the flags)."""
    state_dict_file = tmp_path / 'weights.pth'
    torch.save(torch.load(run['checkpoint'], map_location='cpu', weights_only=False)['state_dict'], state_dict_file)
    with pytest.raises(UsageError, match='records no model configuration.*--model NAME'):
        validate.main(['--checkpoint', str(state_dict_file)])
    row, = validate.main(['--checkpoint', str(state_dict_file), '--model', 'cct_2_3x2_htm_vtm', '--img-size', '8'])
    assert abs(row['top1'] - round(float(run['summary']['eval_top1']), 4)) < 1e-6


def test_missing_checkpoint_names_the_flag(tmp_path):
    with pytest.raises(UsageError, match='--checkpoint .*no such file'):
        validate.main(['--checkpoint', str(tmp_path / 'absent.pth.tar')])


def test_model_without_checkpoint_validates_pretrained_weights():
    """As in timm, `--model NAME` alone means its pretrained weights; a name without any says so."""
    with pytest.raises(UsageError, match='--model cct_4_3x2 --pretrained: No pretrained weights exist'):
        validate.main(['--model', 'cct_4_3x2'])


def test_results_format_json_writes_a_list_of_rows(run, tmp_path):
    results_file = tmp_path / 'results.json'
    rows = validate.main(['--checkpoint', run['checkpoint'], '--results-file', str(results_file),
                          '--results-format', 'json'])
    with open(results_file) as f:
        written = json.load(f)
    assert written == [dict(rows[0])]
    assert set(TIMM_COLUMNS + ['loss']) <= set(written[0])


def test_unknown_results_format_names_the_flag(capsys):
    with pytest.raises(SystemExit):
        validate.main(['--model', 'cct_2_3x2', '--results-format', 'xml'])
    assert "--results-format: invalid choice: 'xml'" in capsys.readouterr().err
    with pytest.raises(ValueError, match='--results-format must be one of'):
        validate.write_results('unused.csv', [], 'xml')


def test_results_file_is_replaced_whole(tmp_path, monkeypatch):
    """A results file is written under a temp name and renamed: never half-written, no leftovers."""
    results_file = tmp_path / 'results.csv'
    rows = [{'model': 'a', 'top1': 1.0}, {'model': 'b', 'top1': 2.0, 'loss': 0.5}]
    validate.write_results(str(results_file), rows)
    assert os.listdir(tmp_path) == ['results.csv']
    assert [row['model'] for row in _read_csv(results_file)] == ['a', 'b']
    assert _read_csv(results_file)[0]['loss'] == ''  # columns are the union of the rows' keys
    before = results_file.read_bytes()

    def fail(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(validate.csv.DictWriter, 'writerows', fail)
    with pytest.raises(OSError, match='disk full'):
        validate.write_results(str(results_file), [{'model': 'c', 'top1': 3.0}])
    assert results_file.read_bytes() == before
    assert os.listdir(tmp_path) == ['results.csv']
