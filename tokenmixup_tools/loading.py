""" The model an evaluation command names: a train.py checkpoint, a state dict, or pretrained weights

`validate.py` and `visualize.py` take the same model flags (`--model`, `--checkpoint`, `--pretrained`,
`--num-classes`, `--img-size`, `--model-kwargs`, `--use-ema`); `load_eval_model` turns them into a model with its
weights, and every mistake in them into a `UsageError` that names the flag.
"""
from typing import Any, Dict, Mapping, Optional, Tuple

import torch.nn as nn
from timm.data import resolve_data_config
from timm.models import split_model_name_tag

from .checkpoints import (
    RUN_ARGS_KEY, checkpoint_weights, create_model_from_config, load_weights, model_config_from_checkpoint)
from .cli import UsageError, check_model_name, create_model_checked, one_line
from .datasets import model_in_chans, with_channels

__all__ = ['load_eval_model', 'recorded_img_size', 'recorded_data_config']


def load_eval_model(
        model_name: Optional[str],
        checkpoint: Optional[Dict[str, Any]],
        checkpoint_path: str = '',
        *,
        num_classes: Optional[int] = None,
        img_size: Optional[int] = None,
        model_kwargs: Optional[Mapping[str, Any]] = None,
        use_ema: bool = False,
        dataset_classes: Optional[int] = None,
) -> Tuple[nn.Module, str]:
    """The model to evaluate, with its weights, and its name for reports.

    Without `checkpoint` it is `model_name` with its pretrained weights (a registered name or tag,
    `hf-hub:` or `local-dir:`). With one, the model is rebuilt from the configuration the checkpoint
    records (`model_name`, `num_classes`, `img_size` and `model_kwargs` override the record), or, for a
    plain state dict, built as `model_name` with `num_classes` (default `dataset_classes`).
    """
    overrides: Dict[str, Any] = {'img_size': img_size} if img_size is not None else {}
    overrides.update(model_kwargs or {})  # --model-kwargs img_size=... wins over --img-size
    given = _describe_overrides(model_name, num_classes, img_size, model_kwargs or {})
    if checkpoint is None:
        if not model_name:
            raise UsageError('nothing to evaluate: give --checkpoint PATH (a train.py checkpoint) or --model NAME')
        model = create_model_checked(model_name, pretrained=True, num_classes=num_classes, **overrides)
        return model, model_name

    record = model_config_from_checkpoint(checkpoint)
    if record is not None:
        if model_name:
            check_model_name(model_name)
        try:
            model = create_model_from_config(
                record, architecture=model_name, num_classes=num_classes,
                **{key: value for key, value in overrides.items() if value is not None})
        except (ValueError, TypeError) as e:
            built = f'--model {model_name}' if model_name else record.get('architecture')
            raise UsageError(f'cannot build {built} from the configuration --checkpoint {checkpoint_path} records'
                             f'{given}: {one_line(e)}') from e
        name = model_name or record['architecture']
    elif model_name:
        model = create_model_checked(model_name, num_classes=num_classes or dataset_classes, **overrides)
        name = model_name
    else:
        raise UsageError(
            f'--checkpoint {checkpoint_path} records no model configuration (a plain state dict or a '
            'checkpoint not written by train.py): pass --model NAME (and --num-classes / --img-size / '
            '--model-kwargs as it was trained)')

    try:
        state_dict = checkpoint_weights(checkpoint, use_ema)
    except ValueError as e:
        raise UsageError(f'{"--use-ema" if use_ema else "--checkpoint"}: {checkpoint_path} {e}') from e
    try:
        load_weights(model, state_dict)
    except ValueError as e:
        recorded = record['architecture'] if record is not None else None
        if model_name and recorded and _architecture(model_name) != _architecture(recorded):
            raise UsageError(
                f'--checkpoint {checkpoint_path} holds {recorded} weights, which do not fit --model {model_name}: '
                f'leave --model out to rebuild {recorded}, or name the architecture it was trained as') from e
        raise UsageError(
            f'--checkpoint {checkpoint_path}: its weights do not fit {name} with {model.num_classes} classes'
            f'{given}; check --model, --num-classes, --img-size and --model-kwargs. {e}') from e
    return model, name


def recorded_img_size(checkpoint: Optional[Dict[str, Any]]) -> Optional[int]:
    """The `img_size` a checkpoint's model record was built with, or None."""
    record = model_config_from_checkpoint(checkpoint) if checkpoint is not None else None
    return (record or {}).get('model_kwargs', {}).get('img_size')


def recorded_data_config(model: nn.Module, checkpoint: Optional[Dict[str, Any]],
                         img_size: Optional[int] = None) -> Dict[str, Any]:
    """timm's eval data config of `model` with the preprocessing its run recorded (crop_pct, mean, std,
    interpolation), at `img_size` (default: the size the record built it for), for the model's input channels."""
    run_args = (checkpoint or {}).get(RUN_ARGS_KEY) or {}
    recorded = {key: run_args.get(key) for key in ('crop_pct', 'mean', 'std', 'interpolation') if run_args.get(key)}
    data_config = resolve_data_config(dict(recorded, img_size=img_size or recorded_img_size(checkpoint)), model=model)
    in_chans = model_in_chans(model)
    if in_chans is not None and in_chans != data_config['input_size'][0]:  # e.g. trained with --in-chans 1
        data_config = with_channels(data_config, in_chans)
    return data_config


def _architecture(name: str) -> str:
    """A model name without its pretrained tag (`cct_7_3x1.c100_300e` -> `cct_7_3x1`)."""
    return split_model_name_tag(name)[0]


def _describe_overrides(model_name: Optional[str], num_classes: Optional[int], img_size: Optional[int],
                        model_kwargs: Mapping[str, Any]) -> str:
    given = {'--model': model_name, '--num-classes': num_classes, '--img-size': img_size}
    given.update({f'--model-kwargs {key}': value for key, value in model_kwargs.items()})
    shown = ', '.join(f'{flag} {value}' for flag, value in given.items() if value is not None)
    return f' (given {shown})' if shown else ''
