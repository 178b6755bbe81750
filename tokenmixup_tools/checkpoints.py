""" Training checkpoints: what `train.py` writes and what `validate.py` and `hub.publish` read

A checkpoint is timm's training checkpoint (`epoch`, `arch`, `state_dict`, `optimizer`, ..., and
`state_dict_ema` for runs with EMA) plus two records that make it self-describing:

- `model_config`: the registered architecture, the number of classes and every model keyword
  argument, TokenMixup settings resolved to the values the model used, so the model can be rebuilt
  without the run's flags. A model created from a Hub or local folder (`hf-hub:ORG/NAME`,
  `local-dir:DIR`) is recorded under its real architecture, with the folder's `model_args`; TokenMixup
  in a timm ViT outside the zoo as 'tokenmixup_vit' with `base_model` (docs/design.md §5.2).
- `args`: the run's arguments as plain data (a dict), so that `torch.load(path)` with its default
  `weights_only=True` reads the file. Checkpoints of earlier versions stored an `argparse.Namespace`;
  `load_training_checkpoint` reads both and returns the arguments as a dict either way.
"""
import argparse
import os
from dataclasses import asdict
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import timm
import torch
import torch.nn as nn
from timm.models import clean_state_dict, load_model_config_from_hf
# timm has no public name for reading a local folder's config.json (the `local-dir:` source); this is
# the one place it is imported, and tests/test_tools.py pins the behaviour relied on
from timm.models._hub import load_model_config_from_path

import models  # registers the zoo with timm, so recorded architectures resolve; tokenmixup_model_args

from .files import atomic_path

__all__ = [
    'MODEL_CONFIG_KEY', 'RUN_ARGS_KEY', 'describe_model', 'plain_data', 'plain_run_arguments',
    'save_training_checkpoint', 'load_training_checkpoint', 'read_checkpoint', 'is_plain_state_dict',
    'checkpoint_weights', 'model_config_from_checkpoint', 'create_model_from_config', 'load_weights',
    'resolve_model_source',
]

MODEL_CONFIG_KEY = 'model_config'
RUN_ARGS_KEY = 'args'
MODEL_SOURCES = ('hf-hub', 'hf_hub', 'local-dir')  # timm's name prefixes for a Hub repo or a local folder


def describe_model(model: nn.Module, architecture: str, model_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The configuration record of `model`, built as `timm.create_model(architecture, **model_kwargs)`.

    Returns a dict with 'architecture', 'num_classes' and 'model_kwargs'; the TokenMixup settings in
    `model_kwargs` are the model's resolved ones (every setting of `tokenmixup.SETTINGS`, lists for block
    indices, so that the record is plain data), which replace the preset they may have come from. A timm
    ViT outside the zoo with TokenMixup is recorded as `models.ANY_VIT_ARCHITECTURE` ('tokenmixup_vit')
    with `base_model` (the timm name) among its keyword arguments (`models.tokenmixup_model_args`).
    """
    kwargs = {key: value for key, value in model_kwargs.items() if value is not None}
    kwargs.pop('num_classes', None)
    settings = getattr(model, 'tokenmixup_cfg', None)
    if settings is not None:
        kwargs.pop('tokenmixup_preset', None)
        for key, value in asdict(settings).items():
            kwargs[key] = list(value) if isinstance(value, tuple) else value
        architecture, kwargs = models.tokenmixup_model_args(architecture, kwargs)
    return {'architecture': architecture, 'num_classes': int(model.num_classes), 'model_kwargs': kwargs}


def plain_data(value: Any, name: str) -> Any:
    """`value` as plain data: str, int, float, bool, None, and lists and str-keyed dicts of them.

    Tuples become lists. Anything else raises ValueError naming `name` (the dotted path to the value).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain_data(item, f'{name}[{index}]') for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(key): plain_data(item, f'{name}.{key}') for key, item in value.items()}
    raise ValueError(f'{name} = {value!r} is not plain data (expected str, int, float, bool, None, '
                     'or lists and dicts of them)')


def plain_run_arguments(args: Union[argparse.Namespace, Mapping[str, Any]]) -> Dict[str, Any]:
    """A run's arguments (`argparse.Namespace` or dict) as the plain dict a checkpoint stores."""
    items = vars(args) if isinstance(args, argparse.Namespace) else args
    return {str(name): plain_data(value, f'args.{name}') for name, value in items.items()}


def save_training_checkpoint(path: str, checkpoint: Dict[str, Any]) -> None:
    """Write `checkpoint` to `path` with `torch.save`, replacing the file whole (`files.atomic_path`).

    Its run arguments (`args`, a Namespace or a dict) are stored as plain data, so the file loads with
    `torch.load(path)` and its default `weights_only=True`.
    """
    if checkpoint.get(RUN_ARGS_KEY) is not None:
        checkpoint = {**checkpoint, RUN_ARGS_KEY: plain_run_arguments(checkpoint[RUN_ARGS_KEY])}
    with atomic_path(path) as tmp_path:
        torch.save(checkpoint, tmp_path)


def load_training_checkpoint(path: str) -> Dict[str, Any]:
    """Load a `train.py` checkpoint (or a plain state dict) on the CPU, without executing code.

    The run arguments come back as a dict (None if they are neither a dict nor a Namespace), also from
    checkpoints that stored them as an `argparse.Namespace`.
    """
    with torch.serialization.safe_globals([argparse.Namespace]):  # what earlier checkpoints stored
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f'{path} does not hold a checkpoint dict or a state dict')
    run_args = checkpoint.get(RUN_ARGS_KEY)
    if isinstance(run_args, argparse.Namespace):
        checkpoint[RUN_ARGS_KEY] = dict(vars(run_args))
    elif RUN_ARGS_KEY in checkpoint and not isinstance(run_args, dict):
        checkpoint[RUN_ARGS_KEY] = None
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


def model_config_from_checkpoint(checkpoint: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The recorded configuration of a loaded checkpoint, or None for a plain state dict."""
    return checkpoint.get(MODEL_CONFIG_KEY)


def create_model_from_config(config: Dict[str, Any], **overrides: Any) -> nn.Module:
    """`timm.create_model` from a recorded configuration; `overrides` (those not None) win over the record.

    A timm ViT name outside the zoo with TokenMixup settings is built as `models.ANY_VIT_ARCHITECTURE`
    (`models.tokenmixup_model_args`), as train.py records it."""
    missing = {'architecture', 'num_classes', 'model_kwargs'} - set(config)
    if missing:
        raise ValueError(f'model configuration lacks {sorted(missing)}: got keys {sorted(config)}')
    kwargs = dict(config['model_kwargs'], num_classes=config['num_classes'])
    architecture = overrides.pop('architecture', None) or config['architecture']
    kwargs.update({key: value for key, value in overrides.items() if value is not None})
    architecture, kwargs = models.tokenmixup_model_args(architecture, kwargs)
    return timm.create_model(architecture, **kwargs)  # recorded block lists are lists, which the settings accept


def load_weights(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """Load `state_dict` into `model` strictly; ValueError, on one line, naming the keys that do not fit."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise ValueError(' '.join(str(e).split())) from e


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
