""" Random-number generator states, saved with a checkpoint so that a resumed run continues exactly

Everything random in a training epoch draws from four generators: Python's `random` (timm's
augmentations), NumPy's global generator (timm's Mixup/CutMix), torch's CPU generator (the data
loader's shuffling and worker seeds, dropout, random erasing, HTM's random ablations) and, on CUDA,
torch's CUDA generators. `capture_rng_state` records them as tensors, lists and numbers only, so that a
checkpoint holding them still loads with `torch.load(path)` (`weights_only=True`); `restore_rng_state`
puts them back.
"""
import random
from typing import Any, Dict

import numpy as np
import torch

__all__ = ['capture_rng_state', 'restore_rng_state']


def capture_rng_state() -> Dict[str, Any]:
    """The state of every global generator a training epoch draws from, as checkpoint-safe data."""
    version, python_state, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        'python': [version, list(python_state), gauss_next],
        'numpy': [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Put back the generators recorded by `capture_rng_state`."""
    version, python_state, gauss_next = state['python']
    random.setstate((version, tuple(python_state), gauss_next))
    kind, keys, position, has_gauss, cached_gaussian = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
