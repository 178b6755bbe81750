"""train.py under torchrun: two CPU processes on gloo (docs/design.md §6.1).

One run of `python -m torch.distributed.run --nproc_per_node 2 ...` serves every test here. torchrun
starts a helper script the fixture writes into the test's folder: it imports train, instruments it
from outside (train.py itself is not changed) and calls `train.main(argv)`. Per rank it records

- every path given to `torch.save`, and every file opened for writing (`open`, `os.open`) under the
  output folder, while `train.main` runs (`writes_rank{RANK}.json`);
- for every call of `horizontal_mix` made by the model's HTM layer (patched where
  tokenmixup/horizontal.py looks it up): the local batch size, the easy rows and the partners
  (`htm_rank{RANK}.json`);
- after `train.main` returns, the trained model's state_dict (`rank{RANK}.pt`).
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PER_PROCESS_BATCH = 32
WORLD_SIZE = 2

HELPER = r'''
import builtins
import json
import os
import sys

sys.path.insert(0, {repo_root!r})
import torch

import tokenmixup.horizontal
import train

rank = int(os.environ['RANK'])
record_dir = {record_dir!r}
output_dir = os.path.realpath({output_dir!r})
recording = True
saves, opened, htm_calls = [], [], []
held = {{}}

original_save = torch.save


def logging_save(obj, f, *args, **kwargs):
    if recording:
        saves.append(os.path.realpath(os.fspath(f)) if isinstance(f, (str, os.PathLike)) else repr(f))
    return original_save(obj, f, *args, **kwargs)


torch.save = logging_save

original_open = builtins.open


def logging_open(file, mode='r', *args, **kwargs):
    if recording and isinstance(file, (str, os.PathLike)) and any(flag in mode for flag in 'wax+'):
        path = os.path.realpath(os.fspath(file))
        if path.startswith(output_dir):
            opened.append(path)
    return original_open(file, mode, *args, **kwargs)


builtins.open = logging_open

original_os_open = os.open
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def logging_os_open(path, flags, *args, **kwargs):  # tempfile.mkstemp, which atomic_path uses, goes through os.open
    if recording and flags & WRITE_FLAGS and isinstance(path, (str, os.PathLike)):
        real = os.path.realpath(os.fspath(path))
        if real.startswith(output_dir):
            opened.append(real)
    return original_os_open(path, flags, *args, **kwargs)


os.open = logging_os_open

original_mix = tokenmixup.horizontal.horizontal_mix


def recording_mix(x, y, saliency, easy, rho, **kwargs):
    result = original_mix(x, y, saliency, easy, rho, **kwargs)
    htm_calls.append(dict(batch_size=int(x.shape[0]), easy=easy.tolist(), partner=result.partner.tolist(),
                          max_partner=int(result.partner.max())))
    return result


tokenmixup.horizontal.horizontal_mix = recording_mix

original_init = train.TokenMixupTask.__init__


def keeping_init(self, model, *args, **kwargs):
    held['model'] = model
    original_init(self, model, *args, **kwargs)


train.TokenMixupTask.__init__ = keeping_init

train.setup_logging()
result = train.main(sys.argv[1:])
recording = False
builtins.open = original_open
os.open = original_os_open
torch.save = original_save

with open(os.path.join(record_dir, f'writes_rank{{rank}}.json'), 'w') as f:
    json.dump(dict(saves=saves, opened=opened, output_dir=result['output_dir']), f)
with open(os.path.join(record_dir, f'htm_rank{{rank}}.json'), 'w') as f:
    json.dump(htm_calls, f)
state = {{name: tensor.detach().cpu().clone() for name, tensor in held['model'].state_dict().items()}}
torch.save(state, os.path.join(record_dir, f'rank{{rank}}.pt'))
'''


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def ddp_run(tmp_path_factory):
    """One epoch of the quickstart model on two gloo processes, batch 32 per process. --tau 100 makes every
    sample easy, so that every HTM row takes a partner from the Hungarian solve and the in-batch check bites."""
    root = tmp_path_factory.mktemp('ddp')
    output = root / 'out'
    records = root / 'records'
    records.mkdir()
    helper = root / 'train_and_record.py'
    helper.write_text(HELPER.format(repo_root=str(REPO_ROOT), record_dir=str(records), output_dir=str(output)))
    command = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(WORLD_SIZE),
        '--master_port', str(_free_port()), str(helper),
        '--device', 'cpu', '--workers', '0', '--img-size', '16', '--batch-size', str(PER_PROCESS_BATCH),
        '--epochs', '1', '--warmup-epochs', '0', '--log-interval', '1000', '--no-progress',
        '--output', str(output), '--experiment', 'ddp', '--tau', '100']
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                               env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert completed.returncode == 0, (completed.stdout[-2000:], completed.stderr[-4000:])
    assert 'process 1 of 2' in completed.stderr + completed.stdout
    return output, records


@pytest.mark.slow
def test_parameters_identical_across_ranks_after_training(ddp_run):
    """DDP keeps the replicas equal: after the training steps every entry of the two ranks' state_dicts, the
    ScoreNet parameters (names containing 'scorenet') included, is bit-identical (torch.equal)."""
    _, records = ddp_run
    states = [torch.load(records / f'rank{rank}.pt') for rank in range(WORLD_SIZE)]
    assert set(states[0]) == set(states[1])
    assert any('scorenet' in name for name in states[0]), 'the model has no ScoreNet to compare'
    different = [name for name in states[0] if not torch.equal(states[0][name], states[1][name])]
    assert different == []


@pytest.mark.slow
def test_only_rank_0_writes_files(ddp_run):
    """Only rank 0 writes: one run folder (train/ddp) holding the checkpoints and summary, and rank 1 neither
    calls torch.save nor opens any file under the output folder for writing (open or os.open)."""
    output, records = ddp_run
    assert sorted(os.listdir(output / 'train')) == ['ddp']
    run_dir = output / 'train' / 'ddp'
    assert {'last.pth.tar', 'summary.csv', 'args.yaml'} <= set(os.listdir(run_dir))
    writes = [json.loads((records / f'writes_rank{rank}.json').read_text()) for rank in range(WORLD_SIZE)]
    assert writes[1] == dict(saves=[], opened=[], output_dir=None)
    assert writes[0]['output_dir'] == str(run_dir)
    assert writes[0]['saves'] and all(path.startswith(os.path.realpath(run_dir)) for path in writes[0]['saves'])


@pytest.mark.slow
def test_htm_pairs_form_within_each_process_batch(ddp_run):
    """Each rank's HTM layer only sees its own per-process batch of 32 (DistributedSampler shards the data,
    DDP synchronises gradients, not activations), so `horizontal_mix` gets x of batch size 32 and every partner
    indexes into that local batch: partner < 32, never into the global batch of 64. With every sample easy
    the partners of a call are a permutation of the local batch (docs/design.md §6.1, as the paper's 4 x 126
    ViT runs)."""
    _, records = ddp_run
    for rank in range(WORLD_SIZE):
        calls = json.loads((records / f'htm_rank{rank}.json').read_text())
        assert calls, f'rank {rank} never mixed'
        for call in calls:
            assert call['batch_size'] == PER_PROCESS_BATCH
            assert call['max_partner'] < PER_PROCESS_BATCH
            assert len(call['partner']) == PER_PROCESS_BATCH
            if all(call['easy']):
                assert sorted(call['partner']) == list(range(PER_PROCESS_BATCH))
        assert any(all(call['easy']) for call in calls), f'rank {rank}: no call with every sample easy'
        assert any(partner != row for call in calls for row, partner in enumerate(call['partner'])), \
            f'rank {rank}: no row ever took a partner other than itself'
