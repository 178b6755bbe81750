""" The model card (README.md) of an exported TokenMixup checkpoint

`render_model_card` writes Markdown with the Hub's YAML metadata block on top: what TokenMixup is,
the model and its TokenMixup settings, the training recipe read from the checkpoint's `train.py`
arguments, the validation results of `validate.py`'s CSV, how to load the model, the citation and the
licence. It is a pure function of `CardInputs`, so tests can check the text directly.
"""
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tokenmixup.settings import SETTINGS
from tokenmixup_tools.datasets import DEFAULT_DATASET, needs_data_dir

__all__ = ['CardInputs', 'render_model_card', 'RECIPE_FIELDS']

TOKENMIXUP_CITATION = """@inproceedings{choi2022tokenmixup,
  title     = {TokenMixup: Efficient Attention-guided Token-level Data Augmentation for Transformers},
  author    = {Choi, Hyeong Kyu and Choi, Joonmyung and Kim, Hyunwoo J.},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2022}
}"""

CCT_CITATION = """@article{hassani2021escaping,
  title   = {Escaping the Big Data Paradigm with Compact Transformers},
  author  = {Hassani, Ali and Walton, Steven and Shah, Nikhil and Abuduweili, Abulikemu and Li, Jiachen
             and Shi, Humphrey},
  journal = {arXiv preprint arXiv:2104.05704},
  year    = {2021}
}"""

VIT_CITATION = """@inproceedings{dosovitskiy2021an,
  title     = {An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale},
  author    = {Dosovitskiy, Alexey and Beyer, Lucas and Kolesnikov, Alexander and Weissenborn, Dirk
               and Zhai, Xiaohua and Unterthiner, Thomas and Dehghani, Mostafa and Minderer, Matthias
               and Heigold, Georg and Gelly, Sylvain and Uszkoreit, Jakob and Houlsby, Neil},
  booktitle = {International Conference on Learning Representations},
  year      = {2021}
}"""

# train.py flag (argparse dest): how the card names it
RECIPE_FIELDS = (
    ('dataset', 'dataset'),
    ('train_split', 'train split'),
    ('val_split', 'validation split'),
    ('epochs', 'epochs'),
    ('cooldown_epochs', 'cooldown epochs'),
    ('batch_size', 'batch size (per process)'),
    ('world_size', 'processes'),
    ('opt', 'optimizer'),
    ('lr', 'learning rate'),
    ('momentum', 'momentum'),
    ('weight_decay', 'weight decay'),
    ('clip_grad', 'gradient clipping'),
    ('sched', 'schedule'),
    ('warmup_epochs', 'warmup epochs'),
    ('warmup_lr', 'warmup learning rate'),
    ('min_lr', 'minimum learning rate'),
    ('img_size', 'image size'),
    ('scale', 'random-resized-crop scale'),
    ('ratio', 'random-resized-crop ratio'),
    ('hflip', 'horizontal flip'),
    ('color_jitter', 'colour jitter'),
    ('aa', 'auto augment'),
    ('reprob', 'random erasing'),
    ('mixup', 'mixup alpha'),
    ('cutmix', 'cutmix alpha'),
    ('mixup_prob', 'mixup/cutmix probability'),
    ('smoothing', 'label smoothing'),
    ('drop', 'dropout'),
    ('drop_path', 'stochastic depth'),
    ('model_ema', 'model EMA'),
    ('model_ema_decay', 'EMA decay'),
    ('amp', 'mixed precision'),
    ('pretrained', 'started from pretrained weights'),
    ('initial_checkpoint', 'initial checkpoint'),
    ('seed', 'seed'),
    ('config', 'config file'),
)

RESULT_COLUMNS = ('model', 'top1', 'top1_err', 'top5', 'top5_err', 'loss', 'param_count', 'img_size', 'crop_pct',
                  'interpolation')


@dataclass
class CardInputs:
    """Everything the model card says.

    repo_id: 'ORG/NAME' the folder is published as, None for a folder exported without one; local_dir: where
    the folder is exported (the card's name and `local-dir:` usage when there is no repo_id);
    architecture: the registered model name;
    tag: the pretrained tag in config.json; num_classes, param_count, input_size (C, H, W);
    tokenmixup: the resolved TokenMixup settings; model_args: every reconstruction argument;
    data_config: eval preprocessing (input_size, interpolation, crop_pct, mean, std);
    train_args: the checkpoint's `train.py` arguments, a dict (None when it has none); epoch, metric: the
    checkpoint's epoch and eval metric; weights: 'main' or 'EMA'; results: validate.py result rows;
    results_source: the CSV they came from; label_names: class names (None when unknown);
    licence: the weights' licence; base_licence_note: where the base weights' licence comes from.
    """
    repo_id: Optional[str]
    architecture: str
    tag: str
    num_classes: int
    param_count: int
    input_size: Tuple[int, int, int]
    tokenmixup: Optional[Dict[str, Any]]
    model_args: Dict[str, Any]
    data_config: Dict[str, Any]
    train_args: Optional[Dict[str, Any]] = None
    epoch: Optional[int] = None
    metric: Optional[float] = None
    weights: str = 'main'
    results: List[Dict[str, Any]] = field(default_factory=list)
    results_source: Optional[str] = None
    label_names: Optional[Sequence[str]] = None
    licence: str = 'apache-2.0'
    local_dir: Optional[str] = None

    @property
    def name(self) -> str:
        """The model's name: the repository's, else the export folder's."""
        if self.repo_id:
            return self.repo_id.split('/')[-1]
        return os.path.basename(os.path.normpath(self.local_dir)) if self.local_dir else self.architecture

    @property
    def load_name(self) -> str:
        """What `timm.create_model` loads it as: `hf-hub:ORG/NAME`, else `local-dir:DIR`."""
        if self.repo_id:
            return f'hf-hub:{self.repo_id}'
        if self.local_dir:
            return f'local-dir:{self.local_dir}'
        raise ValueError('a model card needs repo_id or local_dir: the name the model is loaded by')


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ', '.join(_text(v) for v in value) if value else 'none'
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        return f'{value:.6g}'
    if value is None or value == '':
        return '-'
    return str(value)


def _cell(value: Any) -> str:
    """A value as a Markdown table cell."""
    return _text(value).replace('|', '\\|').replace('\n', ' ')


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(_cell(value) for value in row) + ' |' for row in rows]
    return '\n'.join(lines)


def _family(architecture: str) -> str:
    return 'cct' if architecture.startswith('cct_') else 'vit' if architecture.startswith('vit_') else 'other'


def _base_name(architecture: str, model_args: Dict[str, Any]) -> str:
    """The model TokenMixup was added to: `base_model` for `tokenmixup_vit`, else the name without its suffix."""
    if model_args.get('base_model'):
        return str(model_args['base_model'])
    for suffix in ('_htm_vtm', '_htm', '_vtm'):
        if architecture.endswith(suffix):
            return architecture[:-len(suffix)]
    return architecture


def _dataset_name(train_args: Optional[Dict[str, Any]]) -> Optional[str]:
    dataset = (train_args or {}).get('dataset')
    if dataset is None:
        return None
    if dataset == DEFAULT_DATASET:
        return f'UCI handwritten digits (`{DEFAULT_DATASET}`, 8x8 images shipped with the repository)'
    return f'`{dataset}`' if dataset else 'an ImageFolder dataset'


def _what_is_enabled(tokenmixup: Optional[Dict[str, Any]]) -> str:
    if not tokenmixup:
        return 'no TokenMixup'
    parts = []
    if tokenmixup.get('htm_layers'):
        parts.append('Horizontal TokenMixup in front of block' + ('s ' if len(tokenmixup['htm_layers']) > 1 else ' ')
                     + ', '.join(str(i) for i in tokenmixup['htm_layers']))
    if tokenmixup.get('vtm_layers'):
        parts.append('Vertical TokenMixup at block' + ('s ' if len(tokenmixup['vtm_layers']) > 1 else ' ')
                     + ', '.join(str(i) for i in tokenmixup['vtm_layers']))
    return ' and '.join(parts) if parts else 'TokenMixup switched off (a baseline)'


def _front_matter(inputs: CardInputs) -> str:
    tags = ['image-classification', 'timm', 'tokenmixup', 'vision-transformer']
    lines = ['---', 'tags:'] + [f'- {tag}' for tag in tags]
    lines += ['library_name: timm', 'pipeline_tag: image-classification', f'license: {inputs.licence}', '---']
    return '\n'.join(lines)


def _recipe_section(inputs: CardInputs) -> str:
    args = inputs.train_args
    if args is None:
        return ('## Training recipe\n\nThe checkpoint records no `train.py` arguments (a plain state dict or a '
                'checkpoint written elsewhere), so the recipe is not known.')
    rows = []
    for name, label in RECIPE_FIELDS:
        value = args.get(name)
        if value is None or (isinstance(value, str) and not value):
            continue
        if name == 'model_ema_decay' and not args.get('model_ema', False):
            continue
        if name == 'momentum' and args.get('opt', '') in ('adamw', 'adam', 'lamb', 'lion'):
            continue
        if name == 'mixup_prob' and not (args.get('mixup', 0) or args.get('cutmix', 0)):
            continue
        rows.append((label, value))
    text = ['## Training recipe', '',
            "Trained with this repository's `train.py` (timm's recipe plus TokenMixup); the values below are "
            "the checkpoint's own arguments.", '', _table(('setting', 'value'), rows)]
    if inputs.epoch is not None:
        line = f'\nThe exported weights are the {inputs.weights} weights saved after epoch {inputs.epoch} (0-based)'
        if inputs.metric is not None:
            line += f', when the eval metric ({args.get("eval_metric", "top1")}) was {inputs.metric:.4g}'
        text.append(line + '.')
    return '\n'.join(text)


def _results_section(inputs: CardInputs) -> str:
    if not inputs.results:
        return ('## Results\n\nNo validation results were given at export (`--results-file`); run `validate.py` '
                'as shown below to measure them.')
    columns = [column for column in RESULT_COLUMNS if any(column in row for row in inputs.results)]
    columns += [column for row in inputs.results for column in row if column not in columns]
    source = f' (`{inputs.results_source}`)' if inputs.results_source else ''
    return '\n'.join([
        '## Results', '',
        f"`validate.py`'s results{source}: top-1 / top-5 accuracy and error in %, cross-entropy loss, "
        'parameters in millions, the eval image size, centre-crop fraction and interpolation.', '',
        _table(columns, [[row.get(column, '') for column in columns] for row in inputs.results])])


def _usage_section(inputs: CardInputs) -> str:
    load_name = inputs.load_name
    dataset = (inputs.train_args or {}).get('dataset')
    validate_flags = ''
    if dataset:
        validate_flags = f' --dataset {dataset}' + (' --data-dir DATA' if needs_data_dir(dataset) else '')
    return f"""## How to use

The architecture is registered with timm by the `models` package of the TokenMixup model zoo this
checkpoint was exported from: install it (`pip install -e .` in its repository) and import it before
`timm.create_model`.

```python
import timm
import models  # registers the TokenMixup architectures with timm

model = timm.create_model('{load_name}', pretrained=True).eval()
data_config = timm.data.resolve_data_config({{}}, model=model)
transform = timm.data.create_transform(**data_config)
logits = model(transform(image).unsqueeze(0))  # image: a PIL image
```

`model(x)` returns logits, as for any timm model; in eval mode every TokenMixup variant is its base
model. To fine-tune with TokenMixup, call `model(images, labels)` in training mode: it returns a
`tokenmixup.TokenMixupOutput(logits, target, aux_loss, stats)`, or use `train.py`:

```bash
python train.py --model {load_name} --pretrained ...
python validate.py --model {load_name} --pretrained{validate_flags}
```

{_where_it_loads_from(inputs)}
`config.json` holds every reconstruction argument (`model_args`, TokenMixup settings included), so no
keyword argument needs to be repeated; passing `num_classes` replaces the classifier (and the ScoreNet's)."""


def _where_it_loads_from(inputs: CardInputs) -> str:
    if inputs.repo_id:
        return (f"A downloaded copy of this folder loads the same way with "
                f"`timm.create_model('local-dir:PATH/{inputs.name}', pretrained=True)`.")
    return ('This folder was exported without a Hub repository, so it loads from where it lies; once uploaded to '
            "one, `timm.create_model('hf-hub:ORG/NAME', pretrained=True)` loads it the same way.")


def render_model_card(inputs: CardInputs) -> str:
    """The README.md of an exported checkpoint."""
    family = _family(inputs.architecture)
    base = _base_name(inputs.architecture, inputs.model_args)
    dataset = _dataset_name(inputs.train_args)
    title = inputs.name
    data = inputs.data_config
    intro = (f'`{inputs.architecture}` ({_what_is_enabled(inputs.tokenmixup)}) with {inputs.num_classes} classes'
             + (f', trained on {dataset}' if dataset else '') + '. Exported from a `train.py` checkpoint of the '
             'TokenMixup model zoo for timm.')

    details = [
        ('architecture', f'`{inputs.architecture}` (base `{base}`)'),
        ('pretrained tag', inputs.tag),
        ('parameters', f'{inputs.param_count:,}'),
        ('classes', inputs.num_classes),
        ('input size', 'x'.join(str(s) for s in inputs.input_size)),
        ('eval preprocessing', f"{data.get('interpolation')} resize, crop {data.get('crop_pct')}, "
                               f"mean {_cell(data.get('mean'))}, std {_cell(data.get('std'))}"),
        ('dataset', dataset or 'not recorded'),
        ('weights', inputs.weights),
    ]
    if inputs.label_names:
        details.append(('labels', list(inputs.label_names)))
    details.append(('papers', 'TokenMixup, arXiv:2210.07562' + (
        '; CCT, arXiv:2104.05704' if family == 'cct' else '; ViT, arXiv:2010.11929' if family == 'vit' else '')))

    if inputs.tokenmixup is not None:
        settings = [(f'`{setting.name}`', inputs.tokenmixup.get(setting.name), setting.help) for setting in SETTINGS]
        settings_text = _table(('setting', 'value', 'meaning'), settings)
    else:
        settings_text = 'This model has no TokenMixup settings.'
    other_args = [(f'`{key}`', value) for key, value in inputs.model_args.items()
                  if inputs.tokenmixup is None or key not in inputs.tokenmixup]

    citations = [TOKENMIXUP_CITATION] + {'cct': [CCT_CITATION], 'vit': [VIT_CITATION]}.get(family, [])
    licence_text = f'The weights are released under `{inputs.licence}`'
    if family == 'vit' and (inputs.train_args or {}).get('pretrained', False):
        licence_text += ", fine-tuned from timm's ViT weights (whose own licence also applies)"
    licence_text += '; the TokenMixup model zoo code is Apache-2.0.'

    sections = [
        _front_matter(inputs),
        f'# Model card for {title}',
        intro,
        '## TokenMixup\n\n'
        'TokenMixup (Choi, Choi & Kim, NeurIPS 2022, [arXiv:2210.07562](https://arxiv.org/abs/2210.07562)) '
        'augments the intermediate tokens of a vision transformer while it trains. **Horizontal TokenMixup '
        '(HTM)** sits in front of a block: a small ScoreNet predicts each sample\'s label from its tokens; '
        'samples it already finds easy are paired, by Hungarian matching on attention saliency, with partners '
        'whose more salient tokens are swapped in, and the labels are reweighted by the saliency kept and '
        'received. **Vertical TokenMixup (VTM)** lets a block also attend to the `kappa` most salient tokens '
        'of every earlier block. Both act only in training: in eval mode the model computes exactly its base '
        'architecture.',
        '## Model details\n\n' + _table(('', ''), details),
        '## TokenMixup settings\n\n' + settings_text + (
            '\n\nOther model arguments: ' + ', '.join(f'{key} = {_cell(value)}' for key, value in other_args) + '.'
            if other_args else ''),
        _recipe_section(inputs),
        _results_section(inputs),
        _usage_section(inputs),
        '## Citation\n\n' + '\n\n'.join(f'```bibtex\n{citation}\n```' for citation in citations),
        '## Licence\n\n' + licence_text,
    ]
    return '\n\n'.join(sections) + '\n'
