"""Shared test setup: no test may touch the network."""
import os

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('HF_HUB_DISABLE_TELEMETRY', '1')

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    yield
