"""Shared test setup: no test may touch the network; fixtures used by several test files."""
import os
import re

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

import pytest  # noqa: E402
import torch  # noqa: E402


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
