#!/usr/bin/env python3
""" Export a `train.py` checkpoint as a timm Hub folder and push it to the Hugging Face Hub

    python -m hub.publish output/train/RUN/last.pth.tar --repo-id ORG/NAME --results-file results.csv
    python -m hub.publish output/train/RUN/last.pth.tar --repo-id ORG/NAME --local-dir exports/NAME --no-push
    python -m hub.publish output/train/RUN/last.pth.tar --local-dir exports/NAME --no-push

`--repo-id` is needed to push. An export only (`--no-push --local-dir DIR`) may leave it out: the card is
then named after the folder, shows how to load it as `local-dir:DIR` (instead of `hf-hub:ORG/NAME`), and
the tag is `--tag` or, by default, DATASET_EPOCHSe from the run.

The checkpoint is a `train.py` (timm format) checkpoint: `arch` and `state_dict`, optionally
`state_dict_ema`, `args` and the recorded model configuration; or a plain state dict, which needs
`--model`. The model is rebuilt exactly (every TokenMixup setting), its weights loaded strictly, and the
folder written holds:

- `model.safetensors`: the weights (the EMA copy with `--use-ema`);
- `config.json`: timm's layout (`architecture`, `num_classes`, `num_features`, `label_names` where
  known, `model_args`, `pretrained_cfg` with the tag and the eval preprocessing of the run), with
  `model_args` written here explicitly: every TokenMixup setting and every other reconstruction argument,
  whatever the installed timm records by itself. TokenMixup in a timm ViT outside the zoo
  (`models.create_tokenmixup_vit`) is written as architecture `tokenmixup_vit` with `base_model`, the
  timm name, in `model_args` (docs/design.md §5.2), which `local-dir:` and `hf-hub:` rebuild;
- `README.md`: the model card (`hub/card.py`).

Before the folder goes anywhere it is loaded back through `timm.create_model('local-dir:...')` and must
give the exported model's eval logits. It is built in a temporary folder next to `--local-dir` and moved
into place only when complete; an existing non-empty `--local-dir` is replaced only with `--force`, and
only after the new folder is complete. Pushing uses `huggingface_hub.HfApi` (`create_repo`,
`upload_folder`); timm's `push_to_hf_hub` is not used because it writes its own README and derives
`model_args` from what the installed timm version records.

`--model-kwargs` (parsed as in train.py) take precedence over everything read from the checkpoint,
`num_classes` included. Mistakes in the arguments (a missing or unreadable checkpoint, an unknown model
name, a malformed repo id, ...) end the command with one line on stderr and exit status 2
(`tokenmixup_tools.cli`; `TOKENMIXUP_DEBUG=1` shows the traceback).
"""
import argparse
import csv
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import safetensors.torch
import timm
import torch
import torch.nn as nn
from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id
from timm.data import resolve_data_config
from timm.models import filter_pretrained_cfg, get_pretrained_cfg, split_model_name_tag
from timm.utils import ParseKwargs

import models  # registers the zoo with timm; tokenmixup_model_args
from tokenmixup.settings import SETTING_NAMES
from tokenmixup_tools.checkpoints import (
    RUN_ARGS_KEY, checkpoint_weights, create_model_from_config, describe_model, is_plain_state_dict, load_weights,
    model_config_from_checkpoint, plain_data, resolve_model_source)
from tokenmixup_tools.cli import UsageError, check_model_name, one_line, read_checkpoint_argument, run_tool
from tokenmixup_tools.datasets import EMBEDDED_DATASETS, is_embedded_dataset
from tokenmixup_tools.files import ordinary_mode, replace_folder

from .card import CardInputs, render_model_card


WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'
EXPORTED_FILES = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)
_TAG_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_\-]*')
_REPO_ID_FORM = "ORG/NAME (letters, digits, '-', '_' and '.'; no '--' or '..')"

ApiFactory = Callable[[str], Any]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m hub.publish',
        description='Export a train.py checkpoint as a timm Hub folder (model.safetensors, config.json, README.md) '
                    'and push it to the Hugging Face Hub.')
    parser.add_argument('checkpoint', metavar='CHECKPOINT',
                        help='a train.py checkpoint, or a plain state dict (with --model)')
    parser.add_argument('--repo-id', default=None, metavar='ORG/NAME',
                        help='the Hub repository to publish as (needed to push; optional with --no-push)')
    parser.add_argument('--local-dir', default=None, metavar='DIR', help='also keep the exported folder here')
    parser.add_argument('--no-push', action='store_true', default=False,
                        help='export only (needs --local-dir; no token)')
    parser.add_argument('--force', action='store_true', default=False, help='replace a non-empty --local-dir')
    parser.add_argument('--private', action='store_true', default=False, help='create the Hub repository as private')
    parser.add_argument('--token', default=None, help='Hub token (default: HF_TOKEN or the `hf auth login` token)')
    parser.add_argument('--commit-message', default=None, help='Hub commit message')
    parser.add_argument('--results-file', default=None, metavar='CSV', help="validate.py's results CSV for the card")
    parser.add_argument('--tag', default=None, help="pretrained tag in config.json (default: the repo name's "
                                                    "'.TAG' suffix, else DATASET_EPOCHSe from the run, else "
                                                    "'custom')")
    parser.add_argument('--model', default=None, metavar='NAME',
                        help="registered model name (default: the checkpoint's); needed for a plain state dict")
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                        help='model keyword arguments k=v, over everything read from the checkpoint')
    parser.add_argument('--use-ema', action='store_true', default=False, help="export the checkpoint's EMA weights")
    return parser


# ---------------------------------------------------------------------------------------------
# checks that run before any work

def check_destination(args: argparse.Namespace) -> Optional[str]:
    """The checked --repo-id (None for an export only), after the checks of where the folder goes: pushing
    needs --repo-id, --no-push needs --local-dir, --tag must be a timm tag."""
    if args.tag is not None and not _TAG_PATTERN.fullmatch(args.tag):
        raise UsageError(f"--tag {args.tag!r}: expected letters, digits, '_' and '-' (timm names it ARCH.TAG)")
    if args.no_push and not args.local_dir:
        raise UsageError('--no-push needs --local-dir DIR: otherwise nothing would be kept')
    if args.repo_id is None and not args.no_push:
        raise UsageError('pushing to the Hub needs --repo-id ORG/NAME (the repository to create or update); '
                         'to export only, pass --no-push --local-dir DIR')
    return check_repo_id(args.repo_id) if args.repo_id is not None else None


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a Hub model repo id of the form ORG/NAME, else UsageError saying why."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UsageError(f'--repo-id {repo_id!r} is not a Hub repo id: expected {_REPO_ID_FORM}. {e}') from e
    if repo_id.count('/') != 1 or not all(repo_id.split('/')):
        raise UsageError(f'--repo-id {repo_id!r} is not a Hub repo id: expected {_REPO_ID_FORM}, '
                         'with the owner, so that hf-hub:ORG/NAME names it')
    return repo_id


def resolve_token(token: Optional[str]) -> str:
    """The token to push with: --token, else HF_TOKEN / the saved login; UsageError when there is none."""
    token = token or get_token()
    if not token:
        raise UsageError('pushing to the Hub needs a token: pass --token, set HF_TOKEN, or log in with '
                         '`hf auth login`; or export only with --no-push --local-dir DIR')
    return token


def check_local_dir(path: Optional[str], force: bool) -> Optional[Path]:
    """The --local-dir destination; UsageError if it is a file, or a non-empty folder without --force."""
    if path is None:
        return None
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f'--local-dir {path} exists and is not a folder')
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UsageError(
            f'--local-dir {path} is not empty: pass --force to replace it, or choose an empty or new folder')
    return dest


def read_results(path: str) -> List[Dict[str, Any]]:
    """The rows of validate.py's results CSV (numbers as numbers)."""
    if not os.path.isfile(path):
        raise UsageError(f'--results-file {path}: no such file')
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows or 'top1' not in rows[0]:
        raise UsageError(f'--results-file {path}: expected validate.py\'s CSV (a header with model, top1, ... and '
                         f'one row per model), got {"no rows" if not rows else "columns " + str(list(rows[0]))}')
    parsed = []
    for row in rows:
        values = {}
        for key, value in row.items():
            try:
                number = float(value)
                values[key] = int(number) if key == 'img_size' and number.is_integer() else number
            except (TypeError, ValueError):
                values[key] = value
        parsed.append(values)
    return parsed


# ---------------------------------------------------------------------------------------------
# the model

def _classes_in_weights(architecture: str, state_dict: Dict[str, torch.Tensor]) -> Optional[int]:
    """The class count of the classifier weight in `state_dict`, for the classifier `architecture` names."""
    cfg = get_pretrained_cfg(architecture)
    classifier = cfg.classifier if cfg is not None else 'head'
    classifier = classifier[0] if isinstance(classifier, (tuple, list)) else classifier
    weight = state_dict.get(f'{classifier}.weight') if classifier else None
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def resolve_model_config(
        checkpoint: Dict[str, Any],
        state_dict: Dict[str, torch.Tensor],
        model_name: Optional[str],
        model_kwargs: Dict[str, Any],
        path: str,
) -> Dict[str, Any]:
    """The configuration to build: the checkpoint's record (or its args), then --model and --model-kwargs.

    Returns {'architecture', 'num_classes', 'model_kwargs'} as `tokenmixup_tools.checkpoints` records them;
    `num_classes` may be None (the model's default).
    """
    record = None if is_plain_state_dict(checkpoint) else model_config_from_checkpoint(checkpoint)
    train_args = checkpoint.get(RUN_ARGS_KEY) or {}
    if record is not None:
        architecture = record['architecture']
        num_classes = record['num_classes']
        kwargs = dict(record['model_kwargs'])
    else:
        architecture = None if is_plain_state_dict(checkpoint) else checkpoint.get('arch')
        num_classes = train_args.get('num_classes')
        kwargs = {}
        if train_args:  # a timm-format checkpoint without our record: rebuild from its flags
            kwargs['img_size'] = train_args.get('img_size')
            kwargs.update({key: train_args[key] for key in ('tokenmixup_preset', *SETTING_NAMES)
                           if train_args.get(key) is not None})
            kwargs.update(train_args.get('model_kwargs') or {})
    architecture = model_name or architecture
    if architecture and ':' in architecture:  # a run started from hf-hub:ORG/NAME or local-dir:DIR
        try:
            architecture, kwargs = resolve_model_source(architecture, kwargs)
        except (OSError, ValueError, KeyError) as e:  # no such folder or repo, or no readable config.json in it
            raise UsageError(f'cannot resolve the model name {architecture!r} to an architecture '
                             f'({one_line(e)}): pass --model NAME') from e
    if not architecture:
        raise UsageError(f'CHECKPOINT {path} is a plain state dict (or names no architecture): pass --model NAME '
                         '(and --model-kwargs num_classes=N img_size=N ... as it was trained)')
    check_model_name(architecture, '--model' if model_name else f'CHECKPOINT {path} records the architecture')
    kwargs.update(model_kwargs)
    num_classes = kwargs.pop('num_classes', num_classes)
    if num_classes is None:
        num_classes = _classes_in_weights(architecture, state_dict)
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    architecture, kwargs = models.tokenmixup_model_args(architecture, kwargs)  # a timm ViT with TokenMixup settings
    return {'architecture': architecture, 'num_classes': num_classes, 'model_kwargs': kwargs}


def build_model(config: Dict[str, Any], state_dict: Dict[str, torch.Tensor], model_kwargs: Dict[str, Any],
                path: str) -> nn.Module:
    """The model `config` records, with `state_dict` loaded strictly; UsageError if they do not fit."""
    try:
        model = create_model_from_config(config)
    except (ValueError, TypeError) as e:
        raise UsageError(f'cannot build {config["architecture"]} with {_describe(config)}: {one_line(e)}') from e
    try:
        load_weights(model, state_dict)
    except ValueError as e:
        given = ', '.join(f'{key}={value!r}' for key, value in model_kwargs.items())
        raise UsageError(
            f'CHECKPOINT {path}: its weights do not fit {config["architecture"]} with {model.num_classes} classes'
            + (f' (given --model-kwargs {given})' if given else '')
            + f'; check --model and --model-kwargs. {e}') from e
    return model.eval()


def _describe(config: Dict[str, Any]) -> str:
    return ', '.join(f'{key}={value!r}' for key, value in
                     dict(config['model_kwargs'], num_classes=config['num_classes']).items())


# ---------------------------------------------------------------------------------------------
# the folder

def _is_training_only(key: str) -> bool:
    """Drop rates describe training, not the model (timm leaves them out of exported model_args too)."""
    return key in ('drop_rate', 'drop_path_rate', 'drop_block_rate') or key.endswith('_drop_rate')


def _model_img_size(model: nn.Module) -> Optional[Tuple[int, int]]:
    """The (H, W) a fixed-size zoo model was built for (CCT: `img_size`, ViT: `patch_embed.img_size`)."""
    size = getattr(model, 'img_size', None) or getattr(getattr(model, 'patch_embed', None), 'img_size', None)
    return tuple(int(s) for s in size) if isinstance(size, (tuple, list)) and len(size) == 2 else None


def export_model_args(model: nn.Module, config: Dict[str, Any]) -> Dict[str, Any]:
    """Every reconstruction argument of `model`: the resolved TokenMixup settings, the image size of fixed-size
    models and every other recorded keyword argument (drop rates aside). num_classes is not one of them: it is
    config.json's top-level `num_classes` and the pretrained cfg's, as timm writes it, which timm's loaders and
    transformers' TimmWrapper pass as a keyword of their own."""
    record = describe_model(model, config['architecture'], config['model_kwargs'])
    args = {key: value for key, value in record['model_kwargs'].items()
            if not _is_training_only(key) and key != 'num_classes'}
    size = _model_img_size(model)
    if model.pretrained_cfg.get('fixed_input_size', False) and 'img_size' not in args and size is not None:
        args['img_size'] = size[0] if size[0] == size[1] else list(size)
    return {key: plain_data(value, f'model_args.{key}') for key, value in args.items()}


def eval_data_config(model: nn.Module, model_args: Dict[str, Any],
                     train_args: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The eval preprocessing the run validated with (train.py: `resolve_data_config(vars(args), model)`),
    at the exported model's image size."""
    train_args = train_args or {}
    data_args = {key: train_args.get(key) for key in ('mean', 'std', 'crop_pct', 'interpolation')}
    size = model_args.get('img_size')
    if isinstance(size, int):
        data_args['img_size'] = size
    elif isinstance(size, list):
        data_args['input_size'] = (3, *size)
    return resolve_data_config(data_args, model=model)


def default_tag(repo_id: Optional[str], architecture: str, train_args: Optional[Dict[str, Any]]) -> str:
    """timm's convention: a repo named ARCH.TAG carries TAG; else (also without a repo id) DATASET_EPOCHSe
    from the run, else 'custom'."""
    name = repo_id.split('/')[-1] if repo_id else ''
    if name.startswith(architecture + '.') and _TAG_PATTERN.fullmatch(name[len(architecture) + 1:]):
        return name[len(architecture) + 1:]
    dataset = (train_args or {}).get('dataset')
    if dataset is None:
        return 'custom'
    short = re.sub(r'[^a-z0-9]+', '_', dataset.rsplit('/', 1)[-1].lower()).strip('_') or 'imagefolder'
    epochs = train_args.get('epochs')
    return f'{short}_{epochs}e' if epochs else short


def label_names_for(train_args: Optional[Dict[str, Any]], num_classes: int) -> Optional[List[str]]:
    """Class names where the dataset ships with this repository (the embedded sets), else None."""
    dataset = (train_args or {}).get('dataset')
    if is_embedded_dataset(dataset) and num_classes == EMBEDDED_DATASETS[dataset].num_classes:
        return list(EMBEDDED_DATASETS[dataset].label_names)
    return None


def hub_config(model: nn.Module, architecture: str, model_args: Dict[str, Any], data_config: Dict[str, Any],
               tag: str, label_names: Optional[List[str]]) -> Dict[str, Any]:
    """config.json in timm's layout (`timm.models.save_config_for_hf`), written explicitly."""
    source = {key: value for key, value in model.pretrained_cfg.items() if key != 'state_dict'}
    pretrained_cfg = filter_pretrained_cfg(source, remove_source=True, remove_null=True)
    for key in ('architecture', 'label_offset', 'test_input_size', 'test_crop_pct', 'test_pool_size', 'description'):
        pretrained_cfg.pop(key, None)
    if model.num_classes != source.get('num_classes'):
        pretrained_cfg.pop('label_names', None)
        pretrained_cfg.pop('label_descriptions', None)
    if tuple(data_config['input_size']) != tuple(source.get('input_size', ())):
        pretrained_cfg['pool_size'] = None
    pretrained_cfg.update(
        tag=tag, custom_load=False, num_classes=model.num_classes,
        input_size=data_config['input_size'], interpolation=data_config['interpolation'],
        crop_pct=data_config['crop_pct'], crop_mode=data_config.get('crop_mode', 'center'),
        mean=data_config['mean'], std=data_config['std'])
    config = {'architecture': architecture, 'num_classes': model.num_classes,
              'num_features': int(getattr(model, 'num_features', 0))}
    global_pool = getattr(model, 'global_pool', None)
    if isinstance(global_pool, str) and global_pool:
        config['global_pool'] = global_pool
    if label_names:
        config['label_names'] = list(label_names)
    config['model_args'] = model_args
    config['pretrained_cfg'] = pretrained_cfg
    return plain_data(config, 'config')


def write_folder(folder: Path, model: nn.Module, config: Dict[str, Any], card: str) -> None:
    """model.safetensors, config.json and README.md in `folder`."""
    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    safetensors.torch.save_file(tensors, str(folder / WEIGHTS_NAME), metadata={'format': 'pt'})
    with open(folder / CONFIG_NAME, 'w') as f:
        json.dump(config, f, indent=2)
        f.write('\n')
    (folder / CARD_NAME).write_text(card, encoding='utf-8')
    for name in EXPORTED_FILES:  # safetensors writes a private file; give each an ordinary file's mode
        os.chmod(folder / name, ordinary_mode())


class ExportMismatch(RuntimeError):
    """The exported folder loads back as another model than the one exported."""


@torch.no_grad()
def check_folder(folder: Path, model: nn.Module) -> None:
    """Load `folder` through timm's `local-dir:` source; it must be `model` (settings and eval logits), else
    ExportMismatch. A folder that does not load at all raises what timm raises (a bug here, with its traceback)."""
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    expected_cfg = getattr(model, 'tokenmixup_cfg', None)
    if getattr(loaded, 'tokenmixup_cfg', None) != expected_cfg:
        raise ExportMismatch(f'TokenMixup settings {getattr(loaded, "tokenmixup_cfg", None)} != {expected_cfg}')
    input_size = loaded.pretrained_cfg['input_size']
    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    expected, got = model(x), loaded(x)
    if expected.shape != got.shape or not torch.allclose(expected, got, rtol=1e-5, atol=1e-6):
        raise ExportMismatch('the folder loads a model with different eval logits')


def default_api_factory(token: str) -> HfApi:
    return HfApi(token=token, library_name='timm', library_version=timm.__version__)


def push_folder(api: Any, folder: Path, repo_id: str, private: bool, commit_message: str) -> Any:
    """create_repo (exist_ok) then upload_folder; returns upload_folder's commit info."""
    repo_url = api.create_repo(repo_id=repo_id, repo_type='model', private=private, exist_ok=True)
    repo_id = getattr(repo_url, 'repo_id', None) or repo_id
    return api.upload_folder(repo_id=repo_id, repo_type='model', folder_path=str(folder), commit_message=commit_message)


# ---------------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None, api_factory: Optional[ApiFactory] = None) -> Dict[str, Any]:
    """Export (and push); returns {'repo_id', 'local_dir', 'config', 'card', 'pushed', 'commit'}.

    `api_factory(token)` makes the Hub client (default: `huggingface_hub.HfApi`); tests pass a fake.
    """
    args = build_parser().parse_args(argv)
    repo_id = check_destination(args)
    dest = check_local_dir(args.local_dir, args.force)
    token = None if args.no_push else resolve_token(args.token)
    results = read_results(args.results_file) if args.results_file else []

    checkpoint = read_checkpoint_argument(args.checkpoint, 'CHECKPOINT')
    try:
        state_dict = checkpoint_weights(checkpoint, args.use_ema)
    except ValueError as e:
        raise UsageError(f'{"--use-ema" if args.use_ema else "CHECKPOINT"}: {args.checkpoint} {e}') from e
    train_args = checkpoint.get(RUN_ARGS_KEY)
    config = resolve_model_config(checkpoint, state_dict, args.model, args.model_kwargs, args.checkpoint)
    model = build_model(config, state_dict, args.model_kwargs, args.checkpoint)
    architecture = split_model_name_tag(config['architecture'])[0]  # config.json names the architecture only

    model_args = export_model_args(model, config)
    data_config = eval_data_config(model, model_args, train_args)
    tag = args.tag or default_tag(repo_id, architecture, train_args)
    label_names = label_names_for(train_args, model.num_classes)
    hf_config = hub_config(model, architecture, model_args, data_config, tag, label_names)
    settings = getattr(model, 'tokenmixup_cfg', None)
    card = render_model_card(CardInputs(
        repo_id=repo_id, local_dir=str(dest) if dest is not None else None, architecture=architecture, tag=tag,
        num_classes=model.num_classes,
        param_count=sum(p.numel() for p in model.parameters()), input_size=tuple(data_config['input_size']),
        tokenmixup=plain_data(asdict(settings), 'tokenmixup') if settings is not None else None,
        model_args=model_args, data_config=data_config, train_args=train_args,
        epoch=checkpoint.get('epoch') if not is_plain_state_dict(checkpoint) else None,
        metric=checkpoint.get('metric') if isinstance(checkpoint.get('metric'), (int, float)) else None,
        weights='EMA' if args.use_ema else 'main', results=results,
        results_source=os.path.basename(args.results_file) if args.results_file else None,
        label_names=label_names, licence=model.pretrained_cfg.get('license') or 'apache-2.0'))

    parent = dest.parent if dest is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f'.{dest.name if dest else "hub-export"}.tmp-', dir=parent))
    try:
        write_folder(staged, model, hf_config, card)
        try:
            check_folder(staged, model)
        except ExportMismatch as e:
            raise UsageError(f'export check failed, nothing written: the exported folder does not rebuild '
                             f'{architecture} ({type(e).__name__}: {one_line(e)})') from e
        if dest is not None:
            replace_folder(staged, dest)
            folder = dest
            print(f'Exported {architecture} ({model.num_classes} classes, tag {tag}) to {dest}: '
                  f'{", ".join(EXPORTED_FILES)}', flush=True)
        else:
            folder = staged

        commit = None
        if not args.no_push:
            api = (api_factory or default_api_factory)(token)
            message = args.commit_message or f'Add {architecture}.{tag} (TokenMixup)'
            try:
                commit = push_folder(api, folder, repo_id, args.private, message)
            except (OSError, ValueError) as e:  # the Hub's HTTP errors and a lost connection are OSErrors
                kept = f'; the exported folder is at {dest}' if dest is not None else ''
                raise UsageError(f'push to {repo_id} failed ({type(e).__name__}: {one_line(e)}){kept}') from e
            print(f'Pushed to https://huggingface.co/{repo_id}; load it with '
                  f"timm.create_model('hf-hub:{repo_id}', pretrained=True) after `import models`", flush=True)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return {'repo_id': repo_id, 'local_dir': str(dest) if dest is not None else None, 'config': hf_config,
            'card': card, 'pushed': not args.no_push, 'commit': commit}


if __name__ == '__main__':
    run_tool(main, 'python -m hub.publish')
