""" MNIST-format datasets (MNIST, Fashion-MNIST, KMNIST) read from their idx files

These three datasets ship as four idx files each (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`), gzip-compressed or not. `IdxDataset` reads them from
torchvision's layout (`DIR/FashionMNIST/raw/`) or from a plain folder holding the four files (the
datasets' own distribution, Debian's `dataset-fashion-mnist` package in `/usr/share/datasets/fashion-mnist`),
so no download is attempted when the files are there; torchvision's checksums are not needed.

Splits: `train` (60,000 images) and `test` (10,000; `validation`, `val` and `eval` mean the same, as for
timm's `torch/` datasets). A slice `train[START:STOP]` (integers or percentages, e.g. `train[:10%]`) takes
images in a fixed class-stratified order: every prefix holds each class in proportion to its count, so
`train[:6000]` is a class-balanced 10% subset of Fashion-MNIST and `train[54000:]` a balanced held-out
split disjoint from `train[:54000]`. The order is the same on every machine (a fixed seed).

Images come out as single-channel PIL images ('L'); the tools convert them to the model's channels.
"""
import gzip
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
import torch.utils.data

__all__ = [
    'IdxSpec', 'IDX_DATASETS', 'GreyscaleImages', 'IdxDataset', 'IdxFilesMissing', 'is_idx_dataset', 'find_idx_files',
    'read_idx', 'parse_split', 'stratified_order',
]

_SPLIT_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
_TEST_SYNONYMS = ('test', 'validation', 'val', 'eval', 'evaluation')
_ORDER_SEED = 0  # the stratified order of a split's slices; fixed so that every machine slices alike
# idx element types (the third byte of the magic number) this reader accepts
_IDX_DTYPES = {0x08: np.dtype('>u1')}


@dataclass(frozen=True)
class IdxSpec:
    """One idx dataset: the torchvision folder name, the class names and the training set's pixel statistics
    (mean and std of the grey level scaled to [0, 1], over all training pixels)."""
    title: str
    folder: str
    classes: Tuple[str, ...]
    mean: float
    std: float


IDX_DATASETS: Dict[str, IdxSpec] = {
    'torch/mnist': IdxSpec('MNIST', 'MNIST', tuple(str(digit) for digit in range(10)), 0.1307, 0.3081),
    'torch/fashion_mnist': IdxSpec(
        'Fashion-MNIST', 'FashionMNIST',
        ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'),
        0.2860, 0.3530),
    'torch/kmnist': IdxSpec('KMNIST', 'KMNIST', ('o', 'ki', 'su', 'tsu', 'na', 'ha', 'ma', 'ya', 're', 'wo'),
                            0.1918, 0.3483),
}


class IdxFilesMissing(Exception):
    """The idx files of a split are not in the folder; the message names the files and where they were sought."""


def is_idx_dataset(name: Optional[str]) -> bool:
    """Whether `name` (e.g. 'torch/fashion_mnist') is read by `IdxDataset`."""
    return name is not None and name.lower() in IDX_DATASETS


def parse_split(split: str) -> Tuple[str, Optional[str], Optional[str]]:
    """'train', 'test' (or a synonym), optionally sliced: 'train[:6000]', 'train[54000:]', 'train[:10%]'.

    Returns (base split, start, stop) with start/stop as written (None when absent). Raises ValueError.
    """
    match = re.fullmatch(r'\s*(\w+)\s*(?:\[\s*([0-9]*%?)\s*:\s*([0-9]*%?)\s*\])?\s*', split or '')
    if match is None:
        raise ValueError(f"split must be 'train' or 'test', optionally sliced as in 'train[:6000]' or "
                         f"'train[90%:]', got {split!r}")
    name = match.group(1).lower()
    if name in _TEST_SYNONYMS:
        name = 'test'
    if name not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test' (or validation/val/eval), got {split!r}")
    start, stop = match.group(2) or None, match.group(3) or None
    return name, start, stop


def _slice_bound(value: Optional[str], length: int, default: int) -> int:
    if value is None:
        return default
    if value.endswith('%'):
        return min(length, round(length * int(value[:-1]) / 100))
    return min(length, int(value))


def find_idx_files(data_dir: str, spec: IdxSpec, split: str) -> Tuple[str, str]:
    """The (images, labels) files of `split` ('train' or 'test') under `data_dir`.

    Looked up in `data_dir/<folder>/raw/` (torchvision's layout), then `data_dir/`, each name plain or with
    `.gz`. Raises IdxFilesMissing naming every file expected when a file of the split is not there.
    """
    folders = [os.path.join(data_dir, spec.folder, 'raw'), data_dir]
    found: List[str] = []
    for name in _SPLIT_FILES[split]:
        path = next((os.path.join(folder, name + suffix) for folder in folders for suffix in ('', '.gz')
                     if os.path.isfile(os.path.join(folder, name + suffix))), None)
        if path is None:
            expected = ', '.join(f'{file}[.gz]' for pair in _SPLIT_FILES.values() for file in pair)
            raise IdxFilesMissing(
                f'{spec.title}: {name}[.gz] is not in {data_dir} nor in {folders[0]}; a {spec.title} folder holds '
                f'the four idx files {expected} (compressed or not)')
        found.append(path)
    return found[0], found[1]


def read_idx(path: str) -> np.ndarray:
    """The array in one idx file (plain or gzip-compressed); ValueError naming the file if it is not one."""
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as file:
            data = file.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f'{path}: cannot be read as an idx file ({e})') from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f'{path}: not an idx file of unsigned bytes (bad magic number)')
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f'{path}: truncated idx header')
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(data) != header + count:
        raise ValueError(f'{path}: idx header says shape {shape} ({count} bytes), the file holds '
                         f'{len(data) - header} bytes of data')
    return np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=header).reshape(shape)


def stratified_order(labels: np.ndarray, seed: int = _ORDER_SEED) -> np.ndarray:
    """A fixed permutation of `labels`' indices whose every prefix holds each class in proportion to its count.

    Each class's images are shuffled with `seed`; image k of a class of n images is placed at (k + 0.5) / n
    of the way through the order, ties broken by class.
    """
    rng = np.random.default_rng(seed)
    position = np.empty(len(labels), dtype=np.float64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((labels, position))


class GreyscaleImages(torch.utils.data.Dataset):
    """Images held as a (N, H, W) uint8 array with (N,) int64 labels, given out as PIL images of `pil_mode`.

    Subclasses set `images`, `labels`, `transform` (timm's `create_loader` sets it) and `target_transform`.
    """

    pil_mode = 'L'
    images: np.ndarray
    labels: np.ndarray
    transform: Optional[Callable]
    target_transform: Optional[Callable]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[object, int]:
        image = Image.fromarray(np.asarray(self.images[index]), mode='L')
        if self.pil_mode != 'L':
            image = image.convert(self.pil_mode)
        label = int(self.labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label


class IdxDataset(GreyscaleImages):
    """One split of an MNIST-format dataset as single-channel PIL images.

    Args:
        name: 'torch/mnist', 'torch/fashion_mnist' or 'torch/kmnist'.
        root: the folder holding the idx files (see the module docstring).
        split: 'train', 'test' (or validation/val/eval), optionally sliced ('train[:6000]').
        transform: applied to each PIL image; timm's `create_loader` sets it.
        target_transform: applied to each integer label.
    Raises IdxFilesMissing when a file is missing, ValueError for a bad split or file.
    """

    def __init__(
            self,
            name: str,
            root: str,
            split: str = 'train',
            transform: Optional[Callable] = None,
            target_transform: Optional[Callable] = None,
    ) -> None:
        if not is_idx_dataset(name):
            raise ValueError(f'name must be one of {sorted(IDX_DATASETS)}, got {name!r}')
        self.spec = IDX_DATASETS[name.lower()]
        base, start, stop = parse_split(split)
        images_path, labels_path = find_idx_files(root, self.spec, base)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f'{images_path} and {labels_path}: expected (N, H, W) images and (N,) labels, got '
                             f'{images.shape} and {labels.shape}')
        if labels.size and int(labels.max()) >= len(self.spec.classes):
            raise ValueError(f'{labels_path}: labels up to {int(labels.max())}, but {self.spec.title} has '
                             f'{len(self.spec.classes)} classes')
        if start is not None or stop is not None:
            order = stratified_order(labels)
            keep = order[_slice_bound(start, len(order), 0):_slice_bound(stop, len(order), len(order))]
            images, labels = images[keep], labels[keep]
        self.images = images
        self.labels = labels.astype(np.int64)
        self.split = split
        self.root = root
        self.files = (images_path, labels_path)
        self.transform = transform
        self.target_transform = target_transform

    @property
    def classes(self) -> Tuple[str, ...]:
        return self.spec.classes

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)
