"""torchvision's classification sets by name (torchvision:NAME): tiny files written in each set's
own on-disk format, read back through torchvision's own class, with the split it defines."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
from torchvision import datasets as tv

from actconv.cli import main
from actconv.run.store import STORE_NAME
from actconv.study import config
from actconv.study import data as datasets

RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTCONV_CACHE", str(tmp_path / "cache"))  # unpacked IDX files land here
    datasets.load.cache_clear()


def images(n, c, h, w):
    return RNG.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def write_cifar100(root, n_train=6, n_test=4):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x, y = images(n, 3, 32, 32), RNG.integers(0, 100, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x.reshape(n, -1), "fine_labels": y, "coarse_labels": [0] * n}, f)
        out[name] = (x, y)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []}, f)
    return out


def write_svhn(root, n_train=6, n_test=4):
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x, y = images(n, 3, 32, 32), RNG.integers(1, 11, size=n)  # SVHN's labels: 10 is the digit 0
        scipy.io.savemat(root / f"{name}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": y.reshape(-1, 1)})
        out[name] = (x, np.where(y == 10, 0, y).tolist())
    return out


def write_stl10(root, n_train=3, n_test=2):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x, y = images(n, 3, 96, 96), RNG.integers(1, 11, size=n).astype(np.uint8)  # labels 1..10 on disk
        (folder / f"{name}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())  # column-major, as STL-10
        (folder / f"{name}_y.bin").write_bytes(y.tobytes())
        out[name] = (x, (y - 1).tolist())
    return out


def idx(array: np.ndarray) -> bytes:
    """The IDX format: a magic of dtype uint8 (0x08) and rank, big-endian sizes, the bytes."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(folder, names, n_train=6, n_test=4, classes=10):
    """(train images, train labels, test images, test labels), gzipped as distributed."""
    folder.mkdir(parents=True)
    arrays = [images(n_train, 1, 28, 28)[:, 0], RNG.integers(0, classes, size=n_train).astype(np.uint8),
              images(n_test, 1, 28, 28)[:, 0], RNG.integers(0, classes, size=n_test).astype(np.uint8)]
    for name, a in zip(names, arrays):
        (folder / (name + ".gz")).write_bytes(gzip.compress(idx(a)))
    return {"train": (arrays[0][:, None], arrays[1].tolist()), "test": (arrays[2][:, None], arrays[3].tolist())}


def emnist_names(split):
    return [f"emnist-{split}-{s}-{k}-ubyte" for s in ("train", "test") for k in ("images-idx3", "labels-idx1")]


WRITERS = {
    "torchvision:CIFAR100": (write_cifar100, (3, 32, 32), 100),
    "torchvision:SVHN": (write_svhn, (3, 32, 32), 10),
    "torchvision:STL10": (write_stl10, (3, 96, 96), 10),
    "torchvision:KMNIST": (lambda root: write_idx(root / "KMNIST" / "raw", datasets.RAW_FILES), (1, 28, 28), 10),
    "torchvision:EMNIST:balanced": (lambda root: write_idx(root / "EMNIST" / "raw", emnist_names("balanced"),
                                                           classes=47), (1, 28, 28), 47),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_set_is_read_through_torchvision_with_its_own_split(name, tmp_path):
    write, shape, classes = WRITERS[name]
    written = write(tmp_path / "data")
    d = datasets.load(name, str(tmp_path / "data"))
    assert d.input_shape == shape and d.n_classes == classes
    for split, x, y in (("train", d.train_x, d.train_y), ("test", d.test_x, d.test_y)):
        images_, labels = written[split]
        assert torch.equal(x, torch.from_numpy(images_).float() / 255)  # scaled as ToTensor does
        assert y.tolist() == labels


def test_cifar10_by_its_torchvision_name_reads_what_cifar10_reads(tmp_path):
    from test_user_data import write_cifar
    write_cifar(tmp_path)
    a, b = datasets.load("cifar10", str(tmp_path)), datasets.load("torchvision:CIFAR10", str(tmp_path))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y) and b.n_classes == 10


def test_missing_files_say_where_they_were_looked_for(tmp_path):
    with pytest.raises(datasets.DataError, match="SVHN files not found.*--download"):
        datasets.load("torchvision:SVHN", str(tmp_path / "empty"))


def test_config_validates_the_names_data_loads():
    assert config.TORCHVISION_DATASETS == list(datasets.TORCHVISION_SETS)
    assert config.EMNIST_SPLITS == datasets.EMNIST_SPLITS == list(tv.EMNIST.splits)
    assert all(hasattr(tv, n) for n in config.TORCHVISION_DATASETS)
    assert config.dataset_ref("", "torchvision:EMNIST:letters") == ("torchvision:EMNIST:letters", "")


@pytest.mark.parametrize("name, message", [
    ("torchvision:Nope", "unknown torchvision dataset 'Nope'; choose from: CIFAR10"),
    ("torchvision:EMNIST", "EMNIST needs its split"),
    ("torchvision:EMNIST:bogus", "EMNIST needs its split"),
    ("torchvision:SVHN:extra", "torchvision:SVHN takes no split"),
])
def test_a_bad_torchvision_name_is_one_line_exit_2_before_the_store(name, message, tmp_path, capsys):
    capsys.readouterr()
    assert main(["run", "--out", str(tmp_path / "out"), "--dataset", name, "--seeds", "1", "--n-train", "4",
                 "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()


def test_a_study_trains_on_svhn_from_its_mat_files(tmp_path, capsys):
    write_svhn(tmp_path / "data", n_train=12, n_test=4)
    assert main(["run", "--out", str(tmp_path / "out"), "--dataset", "torchvision:SVHN", "--data-dir",
                 str(tmp_path / "data"), "--models", "mlp", "--hidden-units", "4", "--activations", "relu",
                 "--seeds", "1", "--n-train", "8", "--epochs", "1", "--jobs", "1", "--quiet"]) == 0, \
        capsys.readouterr().err
    import sqlite3
    with sqlite3.connect(tmp_path / "out" / STORE_NAME) as c:
        assert c.execute("SELECT status, dataset, input_shape, n_classes FROM runs").fetchall() == [
            ("done", "torchvision:SVHN", "3x32x32", 10)]
