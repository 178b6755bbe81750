""" Device and mixed-precision setup shared by `train.py` and `validate.py`

The default device is CUDA where it is available, else the CPU. `--amp` runs the forward passes
under `torch.autocast` in float16 or bfloat16; training in float16 on CUDA also scales the loss
(timm's `NativeScaler`), bfloat16 and the CPU need no scaling. On the CPU, autocast to either dtype is
far slower than float32, so `create_autocast` warns when it is asked for there.
"""
import logging
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Callable, Optional

import torch
from timm.utils import NativeScaler

__all__ = ['AMP_DTYPES', 'default_device', 'amp_dtype', 'create_autocast', 'create_loss_scaler']

AMP_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}

_logger = logging.getLogger(__name__)


def default_device() -> str:
    """'cuda' where CUDA is available, else 'cpu'."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def amp_dtype(name: str) -> torch.dtype:
    """The autocast dtype called `name` ('float16' or 'bfloat16')."""
    if name not in AMP_DTYPES:
        raise ValueError(f'amp dtype must be one of {sorted(AMP_DTYPES)}, got {name!r}')
    return AMP_DTYPES[name]


def create_autocast(
        device: torch.device, enabled: bool, dtype: str = 'float16') -> Callable[[], AbstractContextManager]:
    """A factory of the context each forward pass runs in: autocast to `dtype` when `enabled`.

    On the CPU it logs a warning: there float16 and bfloat16 autocast are far slower than float32.
    """
    if not enabled:
        return nullcontext
    torch_dtype = amp_dtype(dtype)
    if device.type == 'cpu':
        _logger.warning(f'--amp on the CPU: {dtype} autocast there is far slower than float32 (about 20x on a '
                        'CCT-7 training step); leave --amp off for CPU runs')
    return partial(torch.autocast, device_type=device.type, dtype=torch_dtype)


def create_loss_scaler(device: torch.device, enabled: bool, dtype: str = 'float16') -> Optional[NativeScaler]:
    """timm's loss scaler for float16 autocast on CUDA; None where no scaling is needed."""
    if enabled and amp_dtype(dtype) == torch.float16 and device.type == 'cuda':
        return NativeScaler(device=device.type)
    return None
