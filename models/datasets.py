""" The embedded quickstart dataset

`train.py` and `validate.py` default to a small real dataset that ships inside this package, so the
quickstart runs with no download: 1,797 8x8 handwritten digits (UCI, CC BY 4.0; see
`models/data/README.md` for provenance). The split is fixed: sample i is in the validation split when
i % 6 == 0 (300 images), in the training split otherwise (1,497 images).
"""
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch.utils.data
from PIL import Image

__all__ = ['EMBEDDED_DATASETS', 'EmbeddedDigits', 'create_embedded_dataset', 'is_embedded_dataset']

_DATA_DIR = Path(__file__).resolve().parent / 'data'
_VALIDATION_EVERY = 6
EMBEDDED_DATASETS = ('embedded/digits',)


class EmbeddedDigits(torch.utils.data.Dataset):
    """UCI handwritten digits as RGB PIL images, with a fixed train/validation split.

    Args:
        split: 'train' or 'validation' ('val' and 'test' mean 'validation').
        transform: applied to each PIL image; timm's `create_loader` sets it.
        target_transform: applied to each integer label.
    """

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

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[object, int]:
        image = Image.fromarray(self.images[index], mode='L').convert('RGB')
        label = int(self.labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label


def is_embedded_dataset(name: str) -> bool:
    return name in EMBEDDED_DATASETS


def create_embedded_dataset(name: str, split: str) -> EmbeddedDigits:
    """The embedded dataset called `name` ('embedded/digits'), for `split`."""
    if name != 'embedded/digits':
        raise ValueError(f'unknown embedded dataset {name!r}; available: {EMBEDDED_DATASETS}')
    return EmbeddedDigits(split)
