import struct

import numpy as np
import pytest
import torch

from precode import data as data_module
from precode.data import DataFallbackWarning, DataUnavailableError, ImageData, load_data


def write_idx(path, array):
    """Write an array in the IDX format that torchvision's MNIST readers parse."""
    array = np.asarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim))
        f.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.tobytes())


def make_tiny_mnist(root, folder, n_train=12, n_test=6):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("name,folder", [("fashion-mnist", "FashionMNIST"), ("mnist", "MNIST")])
def test_torchvision_path_reads_real_format(tmp_path, name, folder):
    arrays = make_tiny_mnist(tmp_path, folder)
    d = load_data(name, "test", root=tmp_path, download=False)
    images, labels = arrays["t10k"]
    assert d.images.shape == (6, 1, 28, 28) and d.images.dtype == torch.float32
    assert torch.allclose(d.images[:, 0] * 255, torch.from_numpy(images).float())
    assert d.labels.tolist() == labels.tolist()
    assert d.num_classes == 10 and str(tmp_path) in d.source
    assert len(load_data(name, "train", root=tmp_path, download=False)) == 12


def test_root_from_environment(tmp_path, monkeypatch):
    make_tiny_mnist(tmp_path, "MNIST")
    monkeypatch.setenv("PRECODE_DATA", str(tmp_path))
    assert len(load_data("mnist", download=False)) == 6


def test_missing_data_without_download_is_clear(tmp_path):
    with pytest.raises(DataUnavailableError, match="PRECODE_DATA"):
        load_data("cifar10", root=tmp_path, download=False)


def test_fashion_mnist_falls_back_to_sample_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.warns(DataFallbackWarning, match="embedded"):
        d = load_data("fashion-mnist", root=tmp_path, download=False)
    assert d.name == "fashion-mnist-sample" and len(d) == 10_000
    # the data line a chapter prints says it, and why, without a path
    assert "embedded part of Fashion-MNIST" in d.source and "could not be downloaded" in d.source
    assert "/" not in d.source


def test_the_fallback_warning_is_kept_for_the_library_and_silenced_in_a_chapter(tmp_path, monkeypatch):
    import warnings

    from precode.notebook import setup_chapter

    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    import matplotlib

    with warnings.catch_warnings(record=True) as seen, matplotlib.rc_context():  # restore what setup_chapter sets
        warnings.simplefilter("always")
        load_data("fashion-mnist", root=tmp_path, download=False)
        assert [w.category for w in seen] == [DataFallbackWarning]
        seen.clear()
        setup_chapter(store=False)
        load_data("fashion-mnist", root=tmp_path, download=False)
        warnings.warn("another warning still shows", UserWarning, stacklevel=1)
        assert [str(w.message) for w in seen] == ["another warning still shows"]


def test_debian_files_are_used_when_installed(tmp_path, monkeypatch):
    import gzip

    debian = tmp_path / "debian"
    debian.mkdir()
    src = tmp_path / "src"
    make_tiny_mnist(src, "X")
    for f in (src / "X" / "raw").iterdir():
        with open(f, "rb") as a, gzip.open(debian / (f.name + ".gz"), "wb") as b:
            b.write(a.read())
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", debian)
    d = load_data("fashion-mnist", root=tmp_path / "cache", download=False)
    assert len(d) == 6 and "Debian" in d.source


def test_embedded_sample_is_the_start_of_fashion_mnist_and_small():
    assert data_module.SAMPLE_FILE.stat().st_size <= 10_000_000
    train, test = load_data("fashion-mnist-sample", "train"), load_data("fashion-mnist-sample", "test")
    assert len(train) == 10_000 and len(test) == 10_000
    # The original order: the test split of Fashion-MNIST starts with these labels, and both
    # splits are balanced (the test split exactly, the first 10,000 training images nearly).
    assert test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert torch.bincount(train.labels, minlength=10).min() >= 900
    assert 0 <= float(test.images.min()) and float(test.images.max()) <= 1
    assert test.classes[0] == "T-shirt/top" and "first 10,000" in train.source


def test_photos():
    d = load_data("photos")
    assert d.images.shape == (224, 3, 32, 32)
    assert len(d.first(128)) == 128  # the full profile's victims
    # The crops are distinct images, and the first 80 (the whole photos and their quarters) come first.
    flat_all = d.images.flatten(1)
    assert torch.cdist(flat_all, flat_all).add(torch.eye(224) * 1e9).min() > 0.5
    assert d.labels.max() < 10
    # The first 16 victims are 16 different photos.
    flat = d.images[:16].flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(16) * 1e9).min() > 1.0
    with pytest.raises(ValueError, match="victims only"):
        load_data("photos", "train")


def test_npz_victims(tmp_path):
    path = tmp_path / "mine.npz"
    images = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.array([0, 3, 1, 2]))
    d = load_data(path)
    assert d.images.shape == (4, 3, 16, 16) and d.num_classes == 4
    assert torch.allclose(d.images[1].permute(1, 2, 0) * 255, torch.from_numpy(images[1]).float())
    np.savez(tmp_path / "grey.npz", images=images[..., 0], labels=np.zeros(4, dtype=int))
    assert load_data(tmp_path / "grey.npz").input_shape == (1, 16, 16)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"pictures": np.zeros((2, 8, 8), np.uint8), "labels": np.zeros(2, int)}, "lacks the array"),
        ({"images": np.zeros((2, 8, 8), np.float32), "labels": np.zeros(2, int)}, "uint8"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.zeros(3, int)}, "one per image"),
        ({"images": np.zeros((2, 8, 8, 5), np.uint8), "labels": np.zeros(2, int)}, "N x H x W"),
        ({"images": np.zeros((0, 8, 8), np.uint8), "labels": np.zeros(0, int)}, "empty"),
        ({"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0.5, 1.0])}, "integers"),
    ],
)
def test_malformed_npz(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_data(path)


def test_npz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such .npz"):
        load_data(tmp_path / "none.npz")


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        load_data("imagenet")
    with pytest.raises(ValueError, match="unknown split"):
        load_data("photos", "validation")


def test_first_and_subset(sample):
    assert torch.equal(sample.first(3).images, sample.images[:3])
    with pytest.raises(ValueError, match=f"asked for {len(sample) + 1} images"):
        sample.first(len(sample) + 1)
    # Without a seed: the first n images, so a subset does not depend on the split's size.
    assert torch.equal(sample.subset(100).images, sample.images[:100])
    assert torch.equal(sample.subset(100).images, sample.first(400).subset(100).images)
    assert sample.subset(None) is sample and sample.subset(len(sample) + 5) is sample
    with pytest.raises(ValueError, match="at least one image"):
        sample.subset(0)


def test_seeded_subset_is_stratified_and_reproducible(sample):
    sub = sample.subset(100, seed=1)
    assert len(sub) == 100 and torch.equal(sub.images, sample.subset(100, seed=1).images)
    assert not torch.equal(sub.images, sample.subset(100, seed=2).images)
    # Every class keeps its share of the data, to within one image.
    share = torch.bincount(sample.labels, minlength=10).double() * 100 / len(sample)
    counts = torch.bincount(sub.labels, minlength=10).double()
    assert (counts - share).abs().max() < 1


def test_empty_imagedata_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        ImageData(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.long), ["a", "b"], "x", "y")
