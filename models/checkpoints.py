""" Model configurations recorded in training checkpoints

`train.py` stores, next to the weights, everything needed to rebuild the model: the registered
name, the number of classes and every model keyword argument (TokenMixup settings resolved to the
values the model actually used). `validate.py` and `hub/` rebuild models from it. A model created
from a Hub or local folder (`hf-hub:ORG/NAME`, `local-dir:DIR`) is recorded under its real
architecture, with the arguments of the folder's config.json.
"""
import argparse
import os
from dataclasses import asdict
from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn as nn
from timm.models import clean_state_dict
from timm.models._hub import load_model_config_from_hf, load_model_config_from_path

__all__ = [
    'MODEL_CONFIG_KEY', 'describe_model', 'load_training_checkpoint', 'create_model_from_config',
    'model_config_from_checkpoint', 'resolve_model_source', 'read_checkpoint', 'is_plain_state_dict',
    'checkpoint_weights',
]

MODEL_CONFIG_KEY = 'model_config'
MODEL_SOURCES = ('hf-hub', 'hf_hub', 'local-dir')  # timm's name prefixes for a Hub repo or a local folder


def describe_model(model: nn.Module, architecture: str, model_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The configuration record of `model`, built as `timm.create_model(architecture, **model_kwargs)`.

    Returns a dict with 'architecture', 'num_classes' and 'model_kwargs'; the TokenMixup settings in
    `model_kwargs` are the model's resolved ones (lists, so that the record is plain data).
    """
    kwargs = {key: value for key, value in model_kwargs.items() if value is not None}
    kwargs.pop('num_classes', None)
    settings = getattr(model, 'tokenmixup_cfg', None)
    if settings is not None:
        for key, value in asdict(settings).items():
            kwargs[key] = list(value) if isinstance(value, tuple) else value
    return {'architecture': architecture, 'num_classes': int(model.num_classes), 'model_kwargs': kwargs}


def load_training_checkpoint(path: str) -> Dict[str, Any]:
    """Load a `train.py` checkpoint (or a plain state dict) on the CPU, without executing code."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} does not hold a checkpoint dict or a state dict')
    return checkpoint


def read_checkpoint(path: str) -> Dict[str, Any]:
    """`load_training_checkpoint` with errors that say what is wrong with `path`.

    Raises IsADirectoryError for a folder, FileNotFoundError for a missing file and ValueError for a
    file that is not a checkpoint; each message starts with the path.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f'{path} is a folder: name a file in it, e.g. {os.path.join(path, "last.pth.tar")}')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such file')
    try:
        return load_training_checkpoint(path)
    except Exception as e:  # torch.load raises several types for files that are no checkpoint
        raise ValueError(f'{path}: cannot read it as a checkpoint ({type(e).__name__}: {e})') from e


def is_plain_state_dict(checkpoint: Dict[str, Any]) -> bool:
    """Whether a loaded checkpoint is only weights (no training record)."""
    return bool(checkpoint) and all(isinstance(value, torch.Tensor) for value in checkpoint.values())


def checkpoint_weights(checkpoint: Dict[str, Any], use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """The model weights of a loaded checkpoint: its EMA weights with `use_ema`, else its main ones.

    Understands `train.py` / timm checkpoints ('state_dict', 'state_dict_ema'), checkpoints that use
    'model' / 'model_ema', and plain state dicts; strips DataParallel/DDP 'module.' prefixes. Raises
    ValueError when the weights asked for are not there.
    """
    keys = ('state_dict_ema', 'model_ema') if use_ema else ('state_dict', 'model')
    for key in keys:
        if isinstance(checkpoint.get(key), dict):
            return clean_state_dict(checkpoint[key])
    if use_ema:
        raise ValueError('holds no EMA weights (no state_dict_ema; train with --model-ema)')
    if not is_plain_state_dict(checkpoint):
        raise ValueError(f'holds no model weights (no state_dict; keys {sorted(checkpoint)[:8]})')
    return clean_state_dict(checkpoint)


def create_model_from_config(config: Dict[str, Any], **overrides: Any) -> nn.Module:
    """`timm.create_model` from a recorded configuration; `overrides` win over the record."""
    missing = {'architecture', 'num_classes', 'model_kwargs'} - set(config)
    if missing:
        raise ValueError(f'model configuration lacks {sorted(missing)}: got keys {sorted(config)}')
    kwargs = dict(config['model_kwargs'], num_classes=config['num_classes'])
    architecture = overrides.pop('architecture', None) or config['architecture']
    kwargs.update({key: value for key, value in overrides.items() if value is not None})
    for key in ('htm_layers', 'vtm_layers'):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return timm.create_model(architecture, **kwargs)


def model_config_from_checkpoint(checkpoint: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The recorded configuration of a loaded checkpoint, or None for a plain state dict."""
    return checkpoint.get(MODEL_CONFIG_KEY)


def resolve_model_source(model_name: str, model_kwargs: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """The architecture and keyword arguments that `timm.create_model(model_name, **model_kwargs)` builds.

    For `hf-hub:ORG/NAME` and `local-dir:DIR` these come from the folder's config.json (its
    `architecture`, and its `model_args` under `model_kwargs`, as timm applies them); a registered
    name is returned unchanged with `model_kwargs`.
    """
    source, _, model_id = model_name.partition(':')
    if source.lower() not in MODEL_SOURCES or not model_id:
        return model_name, dict(model_kwargs)
    if source.lower() == 'local-dir':
        _, architecture, model_args = load_model_config_from_path(model_id)
    else:
        _, architecture, model_args = load_model_config_from_hf(model_id)
    return architecture, dict(model_args or {}, **model_kwargs)
