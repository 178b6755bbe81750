""" Model configurations recorded in training checkpoints

`train.py` stores, next to the weights, everything needed to rebuild the model: the registered
name, the number of classes and every model keyword argument (TokenMixup settings resolved to the
values the model actually used). `validate.py` and `hub/` rebuild models from it. A model created
from a Hub or local folder (`hf-hub:ORG/NAME`, `local-dir:DIR`) is recorded under its real
architecture, with the arguments of the folder's config.json.
"""
import argparse
from dataclasses import asdict
from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn as nn
from timm.models._hub import load_model_config_from_hf, load_model_config_from_path

__all__ = [
    'MODEL_CONFIG_KEY', 'describe_model', 'load_training_checkpoint', 'create_model_from_config',
    'model_config_from_checkpoint', 'resolve_model_source',
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
