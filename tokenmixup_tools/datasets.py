""" Datasets of the tools: the embedded quickstart set and timm's datasets

`train.py` and `validate.py` default to a small real dataset that ships inside this package, so the
quickstart runs with no download: 1,797 8x8 handwritten digits (UCI, CC BY 4.0; see
`tokenmixup_tools/data/README.md` for provenance). Its split is fixed: sample i is in the validation
split when i % 6 == 0 (300 images), in the training split otherwise (1,497 images).

`torch/fashion_mnist`, `torch/mnist` and `torch/kmnist` are read from their idx files (`idx_datasets`, no
download while the files are there). Any other name goes to timm's `create_dataset` (an ImageFolder under a data
folder, `torch/cifar100`, `hfds/...`, ...); `dataset_num_classes` reads the class count every kind of dataset
declares.
"""
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Type

import numpy as np
import timm.data
import torch.utils.data
from PIL import Image

from .cli import UsageError
from .idx_datasets import IDX_DATASETS, GreyscaleImages, IdxDataset, IdxFilesMissing, is_idx_dataset

__all__ = [
    'DEFAULT_DATASET', 'EMBEDDED_DATASETS', 'EmbeddedDigits', 'is_embedded_dataset', 'create_embedded_dataset',
    'needs_data_dir', 'create_dataset_split', 'dataset_num_classes', 'ImageMode', 'image_mode', 'set_image_mode',
    'with_channels',
    'model_in_chans',
]

DEFAULT_DATASET = 'embedded/digits'
_DATA_DIR = Path(__file__).resolve().parent / 'data'
_VALIDATION_EVERY = 6
# timm datasets that are read from a library or a stream rather than from a folder under --data-dir
_NO_FOLDER_PREFIXES = ('hfds/', 'hfids/', 'tfds/', 'wds/')
# the split folders timm's ImageFolder datasets look for, in its order (timm.data.create_dataset)
_SPLIT_FOLDERS = (('train', 'training'), ('val', 'valid', 'validation', 'eval', 'evaluation'))


class EmbeddedDigits(GreyscaleImages):
    """UCI handwritten digits as RGB PIL images, with a fixed train/validation split.

    Args:
        split: 'train' or 'validation' ('val' and 'test' mean 'validation').
        transform: applied to each PIL image; timm's `create_loader` sets it.
        target_transform: applied to each integer label.
    """

    pil_mode = 'RGB'
    num_classes = 10
    label_names = tuple(str(digit) for digit in range(10))

    def __init__(
            self,
            split: str = 'train',
            transform: Optional[Callable] = None,
            target_transform: Optional[Callable] = None,
    ) -> None:
        split = {'val': 'validation', 'test': 'validation'}.get(split, split)
        if split not in ('train', 'validation'):
            raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
        with np.load(_DATA_DIR / 'uci_digits.npz') as data:
            images, labels = data['images'], data['labels']
        in_validation = np.arange(len(labels)) % _VALIDATION_EVERY == 0
        keep = in_validation if split == 'validation' else ~in_validation
        # pixel counts 0..16 -> 0..255 grey levels
        self.images = (images[keep].astype(np.float32) * (255.0 / 16.0)).round().astype(np.uint8)
        self.labels = labels[keep].astype(np.int64)
        self.split = split
        self.transform = transform
        self.target_transform = target_transform


EMBEDDED_DATASETS: Dict[str, Type[EmbeddedDigits]] = {DEFAULT_DATASET: EmbeddedDigits}


def is_embedded_dataset(name: Optional[str]) -> bool:
    """Whether `name` is a dataset that ships with this package."""
    return name in EMBEDDED_DATASETS


def create_embedded_dataset(name: str, split: str) -> EmbeddedDigits:
    """The split `split` of the embedded dataset called `name`."""
    if name not in EMBEDDED_DATASETS:
        raise ValueError(f'name must be one of the embedded datasets {sorted(EMBEDDED_DATASETS)}, got {name!r}')
    return EMBEDDED_DATASETS[name](split)


def needs_data_dir(name: str) -> bool:
    """Whether the dataset `name` is read from a folder that has to be named (`--data-dir`)."""
    return not is_embedded_dataset(name) and not name.startswith(_NO_FOLDER_PREFIXES)


def create_dataset_split(
        name: str,
        split: str,
        data_dir: Optional[str] = None,
        is_training: bool = False,
        download: bool = False,
        batch_size: int = 1,
        seed: int = 42,
) -> torch.utils.data.Dataset:
    """One split of a dataset: the embedded set, or any dataset timm's `create_dataset` knows.

    `batch_size` and `seed` matter to iterable datasets only (timm's defaults). Raises UsageError for an
    unknown embedded split, a folder dataset without `data_dir` or whose `data_dir` does not exist, and a
    torchvision or ImageFolder dataset that is not (complete) in `data_dir`; the caller names the dataset.
    """
    if is_embedded_dataset(name):
        try:
            return create_embedded_dataset(name, split)
        except ValueError as e:
            raise UsageError(str(e)) from e
    folder = needs_data_dir(name)
    if is_idx_dataset(name):
        return _create_idx_dataset(name, split, data_dir, download)
    if folder and not data_dir:
        raise UsageError('needs a data folder: pass its root with --data-dir')
    if folder and not download and not os.path.exists(data_dir):
        raise UsageError(f'--data-dir {data_dir}: no such folder')
    try:
        return timm.data.create_dataset(
            name, root=data_dir, split=split, is_training=is_training, download=download, batch_size=batch_size,
            seed=seed)
    except RuntimeError as e:  # torchvision: not found or corrupted; timm's ImageFolder: no images
        if not folder:
            raise
        raise UsageError(_not_found_message(name, split, data_dir, download)) from e


def _create_idx_dataset(name: str, split: str, data_dir: Optional[str], download: bool) -> IdxDataset:
    """An MNIST-format split read from its idx files; torchvision downloads them only when they are missing and
    `download` allows it."""
    if not data_dir:
        raise UsageError('needs a data folder: pass the folder holding its idx files with --data-dir '
                         '(e.g. /usr/share/datasets/fashion-mnist from Debian\'s dataset-fashion-mnist)')
    if not download and not os.path.isdir(data_dir):
        raise UsageError(f'--data-dir {data_dir}: no such folder')
    try:
        try:
            return IdxDataset(name, data_dir, split)
        except IdxFilesMissing:
            if not download:
                raise
        _download_idx(name, data_dir)
        return IdxDataset(name, data_dir, split)
    except (IdxFilesMissing, ValueError) as e:
        raise UsageError(str(e)) from e


def _download_idx(name: str, data_dir: str) -> None:
    """torchvision's download of an MNIST-format dataset into `data_dir/<folder>/raw` (needs a network)."""
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, IDX_DATASETS[name.lower()].folder)
    for train in (True, False):
        dataset_class(data_dir, train=train, download=True)


def _not_found_message(name: str, split: str, data_dir: str, download: bool) -> str:
    """Why a folder dataset could not be read from `data_dir`, and what is expected there."""
    if name.lower().startswith('torch/'):
        if download:
            return f'no complete copy under {data_dir} even with --dataset-download (missing or corrupt files)'
        return (f'no complete copy under {data_dir} (missing or corrupt files): put torchvision\'s files for '
                f'{name} there, or pass --dataset-download to fetch them')
    searched = _split_folder(data_dir, split)
    return (f'found no images in class folders under {searched}: expected {data_dir}/{split}/CLASS/IMAGE '
            f'(or {data_dir}/CLASS/IMAGE) with .png, .jpg or .jpeg images')


def _split_folder(data_dir: str, split: str) -> str:
    """The folder timm's ImageFolder reads split `split` from: DIR/SPLIT, else a synonym's, else DIR."""
    split_name = split.split('[')[0]
    candidates = [split_name] + next((list(group) for group in _SPLIT_FOLDERS if split_name in group), [])
    for candidate in candidates:
        if os.path.exists(os.path.join(data_dir, candidate)):
            return os.path.join(data_dir, candidate)
    return data_dir


def dataset_num_classes(dataset: torch.utils.data.Dataset) -> Optional[int]:
    """The class count a dataset declares (embedded, torchvision or timm ImageFolder), else None."""
    if hasattr(dataset, 'num_classes'):
        return int(dataset.num_classes)
    classes = getattr(dataset, 'classes', None) or getattr(getattr(dataset, 'reader', None), 'class_to_idx', None)
    return len(classes) if classes else None


# ---------------------------------------------------------------------------------------------
# images of another channel count (train.py --in-chans, and validate.py for such a model)

class ImageMode:
    """A transform that first converts each PIL image to `mode` ('L', 'RGB', 'RGBA', ...), then applies `transform`."""

    def __init__(self, mode: str, transform: Optional[Any]) -> None:
        self.mode = mode
        self.transform = transform

    def __call__(self, image):
        if hasattr(image, 'convert') and image.mode != self.mode:
            image = image.convert(self.mode)
        return self.transform(image) if self.transform is not None else image


# the PIL mode each channel count is read in when --input-img-mode is not given (timm's train.py rule, extended)
_DEFAULT_IMAGE_MODES = {1: 'L', 3: 'RGB', 4: 'RGBA'}


def image_mode(in_chans: int, input_img_mode: Optional[str] = None) -> Optional[str]:
    """The PIL mode images are converted to for an `in_chans`-channel model: `input_img_mode` when given (its band
    count must be `in_chans`), else L / RGB / RGBA for 1 / 3 / 4 channels (None for other counts: left to the
    dataset). Raises UsageError naming --input-img-mode for an unknown mode or one of another channel count."""
    if input_img_mode is None:
        return _DEFAULT_IMAGE_MODES.get(in_chans)
    try:
        bands = Image.getmodebands(input_img_mode)
    except (KeyError, ValueError) as e:
        raise UsageError(f'--input-img-mode {input_img_mode!r}: not a PIL image mode (e.g. L, RGB, RGBA)') from e
    if bands != in_chans:
        raise UsageError(f'--input-img-mode {input_img_mode} gives {bands}-channel images, but the model takes '
                         f'{in_chans} channels')
    return input_img_mode


def set_image_mode(dataset, mode: Optional[str]) -> None:
    """Make `dataset` (its transform set by create_loader) convert every image to the PIL `mode` first, so that a
    greyscale dataset feeds a 3-channel model and an RGB one a 1-channel model. None leaves it as it is."""
    if mode is None or not hasattr(dataset, 'transform'):
        return
    transform = dataset.transform
    if isinstance(transform, ImageMode):
        transform = transform.transform
    dataset.transform = ImageMode(mode, transform)


def with_channels(data_config: Dict[str, Any], in_chans: int) -> Dict[str, Any]:
    """A copy of timm's data config for `in_chans`-channel input: its input size says so, and a mean or std of
    another length (a pretrained config's 3 values for a 1-channel model) becomes its average."""
    data_config = dict(data_config, input_size=(in_chans, *data_config['input_size'][1:]))
    for key in ('mean', 'std'):
        value = tuple(data_config[key])
        if len(value) != in_chans:
            data_config[key] = (sum(value) / len(value),) * in_chans
    return data_config


def model_in_chans(model: Any) -> Optional[int]:
    """The input channels of a timm model, read from the layer its pretrained cfg names `first_conv`."""
    first_conv = (getattr(model, 'pretrained_cfg', None) or {}).get('first_conv')
    if not first_conv:
        return None
    try:
        layer = model.get_submodule(first_conv)
    except AttributeError:
        return None
    return getattr(layer, 'in_channels', None)
