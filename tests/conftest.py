"""Shared test setup: no test may touch the network; fixtures used by several test files."""
import gzip
import os
import re
from pathlib import Path

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA device: without one they are skipped, saying so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device (benchmarks/device_check.sh runs these on a GPU machine)')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)


def variant_base_name(name: str) -> str:
    """The registered base of a variant name: `cct_2_3x2_htm_vtm` -> `cct_2_3x2`."""
    return re.sub(r'(_htm)?(_vtm)?$', '', name)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    yield


@pytest.fixture(scope='module')
def one_torch_thread():
    """Tensors this small gain nothing from intra-op threads, and on small VMs they cost a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# our CCT key -> the official CCT release's key (the layout `models.cct.checkpoint_filter_fn` maps back)
_OFFICIAL_CCT_KEYS = (
    (r'^tokenizer\.stages\.(\d+)\.conv\.weight$', r'tokenizer.conv_layers.\1.0.weight'),
    (r'^pos_embed$', 'classifier.positional_emb'),
    (r'^seq_pool\.attention\.', 'classifier.attention_pool.'),
    (r'^blocks\.(\d+)\.attn\.', r'classifier.blocks.\1.self_attn.'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.', r'classifier.blocks.\1.linear1.'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.', r'classifier.blocks.\1.linear2.'),
    (r'^blocks\.(\d+)\.(pre_norm|norm1)\.', r'classifier.blocks.\1.\2.'),
    (r'^norm\.', 'classifier.norm.'),
    (r'^head\.', 'classifier.fc.'),
)


def _official_cct_key(key: str) -> str:
    for pattern, replacement in _OFFICIAL_CCT_KEYS:
        renamed = re.sub(pattern, replacement, key)
        if renamed != key:
            return renamed
    raise AssertionError(f'no official name for {key}')


@pytest.fixture(scope='session')
def official_cct_layout():
    """A function renaming a CCT state dict of ours to the official CCT release's key names."""
    return lambda state_dict: {_official_cct_key(key): value for key, value in state_dict.items()}


# a tiny MNIST-format dataset (tests/test_idx_datasets.py, tests/test_benchmarks.py)
IDX_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
             'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
IDX_SIZES = {'train': 60, 'test': 20}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b''.join(int(size).to_bytes(4, 'big') for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder: Path, compressed: bool = True, seed: int = 0, skip: str = '') -> dict:
    """The four idx files of a tiny 10-class dataset in `folder`; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, (images_name, labels_name) in IDX_FILES.items():
        labels = np.arange(IDX_SIZES[split]) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(IDX_SIZES[split], 28, 28), dtype=np.uint8)
        arrays[split] = (images, labels)
        for name, array in ((images_name, images), (labels_name, labels)):
            if name == skip:
                continue
            data = idx_bytes(array)
            if compressed:
                (folder / (name + '.gz')).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return arrays
