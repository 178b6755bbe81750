"""MNIST-format datasets (Fashion-MNIST, MNIST, KMNIST) from their idx files, on folders the tests write.

The folders hold a few random images in the real idx format, compressed or not, in torchvision's layout or
flat (as the datasets' own distribution and Debian's package ship them); nothing is downloaded.
"""
import csv
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets

import train
import validate
import visualize
from tokenmixup_tools.cli import UsageError
from tokenmixup_tools.datasets import create_dataset_split, dataset_num_classes, image_mode
from tokenmixup_tools.idx_datasets import IDX_DATASETS, IdxDataset, parse_split, read_idx, stratified_order

from conftest import IDX_FILES as FILES, IDX_SIZES as SIZES, idx_bytes as _idx_bytes, write_idx_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to download fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError('a download was attempted')
    monkeypatch.setattr(torchvision.datasets.utils, 'download_and_extract_archive', refuse)
    monkeypatch.setattr(torchvision.datasets.utils, 'download_url', refuse)


@pytest.mark.parametrize('layout', ['flat', 'torchvision'])
@pytest.mark.parametrize('compressed', [True, False])
def test_reads_every_layout_without_downloading(tmp_path, layout, compressed, no_download):
    """Plain or gzip files, in DIR or DIR/FashionMNIST/raw: the pixels and labels written come back."""
    folder = tmp_path / 'FashionMNIST' / 'raw' if layout == 'torchvision' else tmp_path
    arrays = write_idx_folder(folder, compressed=compressed)
    for split, given in (('train', 'train'), ('test', 'test'), ('test', 'validation')):
        dataset = create_dataset_split('torch/fashion_mnist', given, data_dir=str(tmp_path))
        images, labels = arrays[split]
        assert len(dataset) == len(labels)
        image, label = dataset[3]
        assert image.mode == 'L' and image.size == (28, 28)
        np.testing.assert_array_equal(np.asarray(image), images[3])
        assert label == labels[3]
    assert dataset_num_classes(dataset) == 10
    assert dataset.classes == IDX_DATASETS['torch/fashion_mnist'].classes


def test_mnist_and_kmnist_use_their_torchvision_folders(tmp_path, no_download):
    for name, folder in (('torch/mnist', 'MNIST'), ('torch/kmnist', 'KMNIST')):
        write_idx_folder(tmp_path / folder / 'raw')
        assert len(create_dataset_split(name, 'train', data_dir=str(tmp_path))) == SIZES['train']


def test_a_missing_file_is_one_line_naming_the_files(tmp_path, no_download):
    write_idx_folder(tmp_path, skip='t10k-labels-idx1-ubyte')
    assert len(create_dataset_split('torch/fashion_mnist', 'train', data_dir=str(tmp_path))) == SIZES['train']
    with pytest.raises(UsageError) as error:
        create_dataset_split('torch/fashion_mnist', 'test', data_dir=str(tmp_path))
    message = str(error.value)
    assert '\n' not in message
    assert 't10k-labels-idx1-ubyte[.gz] is not in' in message
    for pair in FILES.values():
        for name in pair:
            assert name in message


def test_a_missing_folder_and_no_folder_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match='no such folder'):
        create_dataset_split('torch/fashion_mnist', 'train', data_dir=str(tmp_path / 'absent'))
    with pytest.raises(UsageError, match='--data-dir'):
        create_dataset_split('torch/fashion_mnist', 'train', data_dir=None)


def test_download_is_used_only_when_files_are_missing(tmp_path, monkeypatch):
    """With --dataset-download and no files, torchvision's download is asked for, then the files are read."""
    calls = []

    def fake_download(self, *args, **kwargs):
        calls.append(self.raw_folder)
        write_idx_folder(Path(self.raw_folder), compressed=False)  # torchvision extracts what it fetches
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, 'download', fake_download)
    dataset = create_dataset_split('torch/fashion_mnist', 'train', data_dir=str(tmp_path), download=True)
    assert len(dataset) == SIZES['train'] and calls
    calls.clear()
    create_dataset_split('torch/fashion_mnist', 'train', data_dir=str(tmp_path), download=True)
    assert not calls


def test_a_corrupt_file_is_named(tmp_path):
    write_idx_folder(tmp_path, compressed=False)
    (tmp_path / 'train-images-idx3-ubyte').write_bytes(b'\x01\x02\x03\x04garbage')
    with pytest.raises(UsageError, match='train-images-idx3-ubyte: not an idx file'):
        create_dataset_split('torch/fashion_mnist', 'train', data_dir=str(tmp_path))
    path = tmp_path / 'short'
    path.write_bytes(_idx_bytes(np.zeros((4, 2, 2)))[:-3])
    with pytest.raises(ValueError, match='idx header says shape'):
        read_idx(str(path))


def test_stratified_order_prefixes_are_balanced_and_slices_are_disjoint():
    labels = np.repeat(np.arange(10), 600)
    np.random.default_rng(1).shuffle(labels)
    order = stratified_order(labels)
    assert sorted(order.tolist()) == list(range(len(labels)))
    for prefix in (10, 600, 6000, 5400):
        assert np.bincount(labels[order[:prefix]], minlength=10).tolist() == [prefix // 10] * 10
    np.testing.assert_array_equal(order, stratified_order(labels))  # the same order every time
    unbalanced = np.array([0] * 90 + [1] * 10)
    counts = np.bincount(unbalanced[stratified_order(unbalanced)[:50]])
    assert counts.tolist() == [45, 5]


def test_sliced_splits(tmp_path):
    write_idx_folder(tmp_path)
    full = IdxDataset('torch/fashion_mnist', str(tmp_path), 'train')
    head = IdxDataset('torch/fashion_mnist', str(tmp_path), 'train[:20]')
    tail = IdxDataset('torch/fashion_mnist', str(tmp_path), 'train[20:]')
    percent = IdxDataset('torch/fashion_mnist', str(tmp_path), 'train[:50%]')
    assert (len(head), len(tail), len(percent)) == (20, 40, 30)
    assert np.bincount(head.labels, minlength=10).tolist() == [2] * 10
    rows = {bytes(image) for image in full.images.reshape(len(full), -1)}
    head_rows = {bytes(image) for image in head.images.reshape(20, -1)}
    tail_rows = {bytes(image) for image in tail.images.reshape(40, -1)}
    assert head_rows | tail_rows == rows and not head_rows & tail_rows
    assert parse_split('val[10%:]') == ('test', '10%', None)
    for bad in ('training[:3]', 'train[a:b]', 'train[:3'):
        with pytest.raises(ValueError, match='split must be'):
            parse_split(bad)


def test_image_mode_follows_the_model_or_the_flag():
    assert [image_mode(channels) for channels in (1, 3, 4, 2)] == ['L', 'RGB', 'RGBA', None]
    assert image_mode(3, 'RGB') == 'RGB'
    with pytest.raises(UsageError, match='--input-img-mode L gives 1-channel images, but the model takes 3'):
        image_mode(3, 'L')
    with pytest.raises(UsageError, match='not a PIL image mode'):
        image_mode(3, 'XYZ')


def test_the_dataset_statistics_are_the_configs(tmp_path):
    """The Fashion-MNIST config normalises with the statistics the dataset declares."""
    import yaml
    config = yaml.safe_load((REPO_ROOT / 'configs' / 'fashion_mnist_cct_2_3x2.yaml').read_text())
    spec = IDX_DATASETS['torch/fashion_mnist']
    assert config['mean'] == [spec.mean] and config['std'] == [spec.std]
    assert config['dataset'] == 'torch/fashion_mnist'


QUICK = ['--batch-size', '20', '--workers', '0', '--epochs', '1', '--warmup-epochs', '0', '--log-interval', '1000',
         '--no-progress', '--dataset', 'torch/fashion_mnist']


@pytest.mark.slow
@pytest.mark.parametrize('channels', [3, 1])
def test_train_and_validate_a_greyscale_dataset(tmp_path, channels, no_download):
    """A greyscale dataset trains a 3-channel model (converted to RGB) and a 1-channel one; validate.py on the
    checkpoint reproduces the run's top-1 on the test split, and visualize.py draws from the same dataset."""
    data = tmp_path / 'data'
    write_idx_folder(data)
    flags = ['--in-chans', '1'] if channels == 1 else ['--input-img-mode', 'RGB']
    result = train.main([*QUICK, '--data-dir', str(data), '--model', 'cct_2_3x2_htm', '--output', str(tmp_path),
                         '--experiment', 'run', '--mean', '0.286', '--std', '0.353', *flags])
    run = Path(result['output_dir'])
    with open(run / 'summary.csv') as f:
        last = list(csv.DictReader(f))[-1]
    row, = validate.main(['--checkpoint', str(run / 'last.pth.tar')])
    assert row['top1'] == pytest.approx(float(last['eval_top1']), abs=1e-6)
    assert row['img_size'] == 32
    visualize.main(['saliency', '--checkpoint', str(run / 'last.pth.tar'), '--dataset', 'torch/fashion_mnist',
                    '--data-dir', str(data), '--split', 'test', '--count', '2', '--output', str(tmp_path / 'viz')])
    assert (tmp_path / 'viz' / 'saliency_000.png').is_file() and (tmp_path / 'viz' / 'saliency_001.png').is_file()


def test_train_refuses_a_mode_that_does_not_fit_the_model(tmp_path):
    data = tmp_path / 'data'
    write_idx_folder(data)
    with pytest.raises(UsageError, match='--input-img-mode L'):
        train.main([*QUICK, '--data-dir', str(data), '--model', 'cct_2_3x2', '--output', str(tmp_path),
                    '--experiment', 'run', '--input-img-mode', 'L'])
