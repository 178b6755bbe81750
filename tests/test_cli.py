"""How the tools end on a user error, and their switch flags (tokenmixup_tools.cli).

`train.py`, `validate.py` and `python -m hub.publish` turn expected mistakes (an unknown model, a missing or
unreadable checkpoint, weights that do not fit, an invalid TokenMixup setting, a dataset that is not where
`--data-dir` says, a damaged exported folder) into one line on stderr and exit status 2, without a traceback;
`TOKENMIXUP_DEBUG=1` shows the traceback. Each case runs the real command in a subprocess. Flags a YAML config
can switch on can be switched off again, and `--amp` on the CPU warns that it is slow.
"""
import argparse
import logging
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import train  # tools at the repository root: setup.cfg puts the root on pytest's python path
import validate
from hub import publish
from tokenmixup_tools import cli, runtime
from tokenmixup_tools.checkpoints import describe_model, save_training_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
ARCH = 'cct_2_3x2_htm_vtm'


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> dict:
    """The inputs the error cases name: an empty folder, files that are no checkpoint, a train.py-style
    checkpoint with its model record, and an exported folder whose model.safetensors is garbage."""
    root = tmp_path_factory.mktemp('cli')
    (root / 'empty').mkdir()
    (root / 'random.pth').write_bytes(os.urandom(4096))
    (root / 'text.pth').write_text('epoch: 3\nthis is not a checkpoint\n')
    model = timm.create_model(ARCH, num_classes=10, img_size=8)
    save_training_checkpoint(str(root / 'run.pth.tar'), {
        'epoch': 0, 'arch': ARCH, 'state_dict': model.state_dict(),
        'model_config': describe_model(model, ARCH, {'img_size': 8})})
    torch.save(model.state_dict(), root / 'weights.pth')
    publish.main([str(root / 'weights.pth'), '--model', ARCH, '--model-kwargs', 'img_size=8', '--no-push',
                  '--local-dir', str(root / 'damaged')])
    (root / 'damaged' / 'model.safetensors').write_bytes(b'\x00garbage, not safetensors' * 8)
    return {'empty': str(root / 'empty'), 'random': str(root / 'random.pth'), 'text': str(root / 'text.pth'),
            'checkpoint': str(root / 'run.pth.tar'), 'damaged': str(root / 'damaged')}


def _run(*command: str, debug: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    env.pop(cli.DEBUG_ENV, None)
    if debug:
        env[cli.DEBUG_ENV] = '1'
    return subprocess.run([sys.executable, *command], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _error_line(completed: subprocess.CompletedProcess, prog: str) -> str:
    """The one stderr line of a usage error (exit status 2, no traceback)."""
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert 'Traceback' not in completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'{prog}: error: '), lines[0]
    return lines[0]


# command (paths as {name} of the `files` fixture), what the one line must say
CASES = {
    'train-unknown-model': (
        ['train.py', '--model', 'no_such_model'],
        ['--model no_such_model', 'not a registered model name', "timm.list_models('cct_*')"]),
    'train-negative-tau': (['train.py', '--tau', '-1'], ['tau must be', '>= 0', 'got -1']),
    'train-kappa-above-the-tokens': (['train.py', '--kappa', '100000'], ['kappa must be', 'got 100000']),
    'train-empty-cifar100-folder': (
        ['train.py', '--dataset', 'torch/cifar100', '--data-dir', '{empty}'],
        ["--dataset 'torch/cifar100'", '{empty}', '--dataset-download']),
    'train-empty-image-folder': (
        ['train.py', '--dataset', '', '--data-dir', '{empty}'], ["--dataset ''", 'no images', '{empty}']),
    'validate-unknown-model': (
        ['validate.py', '--model', 'no_such_model'],
        ['--model no_such_model', 'not a registered model name', "timm.list_models('cct_*')"]),
    'validate-missing-checkpoint': (
        ['validate.py', '--checkpoint', 'missing.pth'], ['--checkpoint missing.pth: no such file']),
    'validate-random-bytes': (
        ['validate.py', '--checkpoint', '{random}'], ['--checkpoint {random}: not a PyTorch checkpoint']),
    'validate-text-file': (
        ['validate.py', '--checkpoint', '{text}'], ['--checkpoint {text}: not a PyTorch checkpoint']),
    'validate-other-architecture': (
        ['validate.py', '--checkpoint', '{checkpoint}', '--model', 'cct_4_3x2_htm_vtm'],
        ['--checkpoint {checkpoint}', f'holds {ARCH} weights', '--model cct_4_3x2_htm_vtm']),
    'validate-damaged-local-dir': (
        ['validate.py', '--model', 'local-dir:{damaged}', '--pretrained'],
        ['{damaged}/model.safetensors', 'not a readable safetensors file']),
    'validate-empty-cifar100-folder': (
        ['validate.py', '--model', ARCH, '--dataset', 'torch/cifar100', '--data-dir', '{empty}'],
        ["--dataset 'torch/cifar100'", '{empty}', '--dataset-download']),
    'publish-missing-checkpoint': (
        ['-m', 'hub.publish', 'missing.pth', '--no-push', '--local-dir', '{empty}/out'],
        ['CHECKPOINT missing.pth: no such file']),
    'publish-random-bytes': (
        ['-m', 'hub.publish', '{random}', '--no-push', '--local-dir', '{empty}/out'],
        ['CHECKPOINT {random}: not a PyTorch checkpoint']),
    'publish-unknown-model': (
        ['-m', 'hub.publish', '{checkpoint}', '--model', 'no_such_model', '--no-push', '--local-dir', '{empty}/out'],
        ['--model no_such_model', 'not a registered model name']),
    'publish-push-without-repo-id': (
        ['-m', 'hub.publish', '{checkpoint}', '--token', 'hf_unused'], ['pushing to the Hub needs --repo-id']),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_a_user_error_is_one_line_on_stderr_with_exit_status_2(case, files):
    command, expected = CASES[case]
    completed = _run(*(part.format(**files) for part in command))
    prog = 'python -m hub.publish' if command[0] == '-m' else command[0]
    line = _error_line(completed, prog)
    for fragment in expected:
        assert fragment.format(**files) in line, line
    assert 'weights_only' not in line  # torch's advice to load untrusted files as code is never passed on
    assert not os.path.exists(os.path.join(files['empty'], 'out'))


def test_debug_shows_the_traceback(files):
    completed = _run('validate.py', '--checkpoint', 'missing.pth', debug=True)
    assert completed.returncode != 0
    assert 'Traceback' in completed.stderr and 'UsageError: --checkpoint missing.pth: no such file' in completed.stderr


def test_a_checkpoint_holding_objects_is_refused_in_our_words(tmp_path):
    """A pickle with other objects is not loaded (that could run code); torch's advice is not repeated."""
    path = tmp_path / 'objects.pth'
    torch.save({'state_dict': {}, 'where': pathlib.PurePosixPath('/data')}, path)
    with pytest.raises(cli.UsageError) as error:
        cli.read_checkpoint_argument(str(path), '--checkpoint')
    message = str(error.value)
    assert message.startswith(f'--checkpoint {path}: it holds Python objects other than tensors and plain data')
    assert 'PurePosixPath' in message and 'weights_only' not in message
    torch.save(torch.zeros(2), path)
    with pytest.raises(cli.UsageError, match='does not hold a checkpoint dict or a state dict'):
        cli.read_checkpoint_argument(str(path), '--checkpoint')
    with pytest.raises(cli.UsageError, match=f'--checkpoint {tmp_path} is a folder'):
        cli.read_checkpoint_argument(str(tmp_path), '--checkpoint')


# ---------------------------------------------------------------------------------------------
# run_tool

def _raising(error: BaseException):
    def main():
        raise error
    return main


def test_run_tool_ends_usage_errors_and_messages_with_status_2(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    for error in (cli.UsageError('--checkpoint x: no such\nfile'), SystemExit('--checkpoint x: no such file')):
        with pytest.raises(SystemExit) as ended:
            cli.run_tool(_raising(error), 'tool.py')
        assert ended.value.code == 2
        assert capsys.readouterr().err == 'tool.py: error: --checkpoint x: no such file\n'
    assert cli.run_tool(lambda: 'result', 'tool.py') == 'result'


def test_run_tool_passes_exit_codes_interrupts_and_bugs_on(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    for code in (0, 2, None):  # sys.exit(0), argparse's exit(2): they already said what they had to
        with pytest.raises(SystemExit) as ended:
            cli.run_tool(_raising(SystemExit(code)), 'tool.py')
        assert ended.value.code == code
    with pytest.raises(SystemExit) as ended:
        cli.run_tool(_raising(KeyboardInterrupt()), 'tool.py')
    assert ended.value.code == 130
    with pytest.raises(RuntimeError, match='a bug'):  # anything else keeps its traceback
        cli.run_tool(_raising(RuntimeError('a bug')), 'tool.py')
    capsys.readouterr()


def test_run_tool_raises_user_errors_in_debug_mode(monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, '1')
    with pytest.raises(cli.UsageError, match='no such file'):
        cli.run_tool(_raising(cli.UsageError('no such file')), 'tool.py')
    with pytest.raises(cli.UsageError, match='unknown keys') as raised:
        cli.run_tool(_raising(SystemExit('unknown keys')), 'tool.py')
    assert isinstance(raised.value.__cause__, SystemExit)
    monkeypatch.setenv(cli.DEBUG_ENV, '0')
    assert not cli.debug_enabled()


def test_in_process_callers_get_the_usage_error(files):
    """main() raises UsageError (a plain Exception); only run_tool turns it into an exit status."""
    with pytest.raises(cli.UsageError, match=r'^--checkpoint missing.pth: no such file$'):
        validate.main(['--checkpoint', 'missing.pth'])
    with pytest.raises(cli.UsageError, match=f'holds {ARCH} weights, which do not fit --model cct_4_3x2_htm_vtm'):
        validate.main(['--checkpoint', files['checkpoint'], '--model', 'cct_4_3x2_htm_vtm'])
    with pytest.raises(cli.UsageError, match="--model no_such_model: not a registered model name"):
        train.build_model(train.parse_args(['--model', 'no_such_model']), num_classes=10)
    with pytest.raises(cli.UsageError, match=r'cannot build --model cct_2_3x2_htm_vtm: tau must be'):
        train.build_model(train.parse_args(['--tau', '-1']), num_classes=10)


@pytest.mark.parametrize('text, expected', [
    ('epochs: [1, 2\n', 'not valid YAML at line 2, column 1'),
    ('epochs 3\n  lr: 0.1\n', 'not valid YAML at line 2'),
    ('- epochs\n- 3\n', 'expected a mapping of argument names to values, got a list'),
])
def test_a_malformed_config_is_one_line_and_exit_2(tmp_path, text, expected):
    config = tmp_path / 'bad.yaml'
    config.write_text(text)
    with pytest.raises(cli.UsageError, match=expected):
        train.parse_args(['-c', str(config)])
    completed = subprocess.run([sys.executable, str(REPO_ROOT / 'train.py'), '-c', str(config)], cwd=REPO_ROOT,
                               capture_output=True, text=True)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [f'train.py: error: -c {config}: ' +
                                                     completed.stderr.split(f'-c {config}: ', 1)[1].strip()]
    assert 'Traceback' not in completed.stderr and expected.split(' at ')[0] in completed.stderr


def test_a_missing_config_is_a_usage_error(tmp_path):
    with pytest.raises(cli.UsageError, match='cannot read it'):
        train.parse_args(['-c', str(tmp_path / 'absent.yaml')])


# ---------------------------------------------------------------------------------------------
# switch flags and --amp on the CPU

def test_config_switches_can_be_turned_off_on_the_command_line(tmp_path):
    config = tmp_path / 'run.yaml'
    config.write_text('amp: true\nmodel_ema: true\npretrained: true\nno_aug: true\nno_resume_opt: true\n'
                      'pin_mem: true\n')
    on = train.parse_args(['-c', str(config)])
    assert (on.amp, on.model_ema, on.pretrained, on.no_aug, on.no_resume_opt, on.pin_mem) == (True,) * 6
    off = train.parse_args(['-c', str(config), '--no-amp', '--no-model-ema', '--no-pretrained', '--aug',
                            '--resume-opt', '--no-pin-mem'])
    assert (off.amp, off.model_ema, off.pretrained, off.no_aug, off.no_resume_opt, off.pin_mem) == (False,) * 6
    defaults = train.parse_args([])
    assert not any(getattr(defaults, name) for name in (
        'amp', 'model_ema', 'model_ema_warmup', 'pretrained', 'no_aug', 'no_resume_opt', 'pin_mem',
        'sched_on_updates', 'dataset_download'))
    switched = train.parse_args(['--no-aug', '--no-resume-opt', '--amp', '--sched-on-updates'])
    assert switched.no_aug and switched.no_resume_opt and switched.amp and switched.sched_on_updates


def test_no_store_true_flags_are_left_in_train_py():
    """Every switch of train.py can be set both ways (a YAML config may have turned it on)."""
    _, parser = train.build_parsers()
    one_way = [action.option_strings for action in parser.arguments if isinstance(action, argparse._StoreTrueAction)]
    assert one_way == []


def test_amp_on_the_cpu_warns_that_it_is_slow(caplog):
    cpu = torch.device('cpu')
    with caplog.at_level(logging.WARNING, logger='tokenmixup_tools.runtime'):
        runtime.create_autocast(cpu, enabled=False)
        assert caplog.records == []
        runtime.create_autocast(cpu, enabled=True, dtype='bfloat16')
    record, = caplog.records
    assert record.levelno == logging.WARNING
    assert 'far slower than float32' in record.getMessage() and 'bfloat16' in record.getMessage()


def test_validate_amp_on_the_cpu_warns_too(caplog):
    with caplog.at_level(logging.WARNING, logger='tokenmixup_tools.runtime'):
        with pytest.raises(cli.UsageError, match='No pretrained weights exist'):  # the model comes after the device
            validate.main(['--model', 'cct_4_3x2', '--amp', '--device', 'cpu'])
    assert any('far slower than float32' in record.getMessage() for record in caplog.records)


def test_train_py_records_every_argument_as_it_is_added():
    """train.py's parser keeps the arguments it adds (cli.RecordingParser): exactly the names a parse sets."""
    _, parser = train.build_parsers()
    assert sorted(parser.destinations) == sorted(vars(parser.parse_args([])))
    assert len(parser.destinations) == len(set(parser.destinations)) and 'tau' in parser.destinations
