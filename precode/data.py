"""Data: the images whose gradients a client shares, and the training data of the chapters.

Every loader returns an :class:`ImageData`: float images in ``[0, 1]`` shaped
``(N, C, H, W)``, integer labels and class names, plus ``source``, a sentence that says where
the images came from (chapters print it).

Names understood by :func:`load_data`:

* ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``: through torchvision, from ``root``,
  else ``$PRECODE_DATA``, else ``~/.cache/precode``; downloaded where the network allows.
  Fashion-MNIST is also read offline from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``) and, when neither can be had, falls back to the
  embedded sample below, with a :class:`DataFallbackWarning` that says so (and a ``source``
  that says it too, in words).
* ``fashion-mnist-sample``: the part of Fashion-MNIST shipped inside the package (8.8 MB): the
  first 10,000 training images and the whole test split of 10,000, in their original order (MIT
  licence, see ``precode/_data/README.md``). Needs nothing. Victims (the first test images), test
  accuracies and training subsets of up to 10,000 images (:meth:`ImageData.subset`) are the
  same as with the full data set; only training on more than 10,000 images differs.
* ``photos``: 224 32x32 colour victims cut from scikit-image's 16 bundled photographs (each
  whole, its four quarters and its nine tiles of a 3x3 grid), for CIFAR-shaped models when
  CIFAR cannot be downloaded; enough for the full profile's 128 victims. Victims only (no
  training split).
* a path ending in ``.npz``: your own images, with arrays ``images`` (uint8, ``N x H x W`` or
  ``N x H x W x C``), ``labels`` (integers) and optionally ``num_classes`` (one integer; else the
  largest label + 1), at most :data:`MAX_CLASSES` classes. It has one split: the same images
  for ``train`` and ``test`` (the commands refuse to train on it).

Used in every chapter.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

__all__ = [
    "ImageData", "DATASET_NAMES", "MAX_CLASSES", "load_data", "data_root", "DataUnavailableError",
    "DataFallbackWarning",
]

DATASET_NAMES = ("fashion-mnist", "fashion-mnist-sample", "mnist", "cifar10", "cifar100", "photos")
MAX_CLASSES = 1000
"""The most classes an ``.npz`` may have (ImageNet's 1,000): a label sets the size of the model's last
layer, and a stray label of a million would build a model that does not fit in memory."""
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SAMPLE_FILE = Path(__file__).parent / "_data" / "fashion_mnist_sample.npz"
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_IDX_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


class DataUnavailableError(RuntimeError):
    """The requested data is not on disk and cannot be downloaded."""


class DataFallbackWarning(UserWarning):
    """Full Fashion-MNIST could not be had, so :func:`load_data` returned the embedded sample.

    The command line prints it as one line; the chapters ignore it
    (:func:`precode.notebook.setup_chapter`), since the data line they print says the same
    (the :attr:`ImageData.source` of the sample names it and why) without the machine's paths.
    """


@dataclasses.dataclass
class ImageData:
    """Images and labels of one split.

    Attributes:
        images: float32 tensor ``(N, C, H, W)`` with pixels in ``[0, 1]``.
        labels: int64 tensor ``(N,)``.
        classes: class names; ``len(classes)`` is the number of classes a model needs.
        name: the data set's name (``fashion-mnist``, ``photos``, a file name, ...).
        source: where the images came from, in words.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    source: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise InputError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise InputError(
                f"need one label per image: {self.images.shape[0]} images, labels of shape {tuple(self.labels.shape)}"
            )
        if len(self) == 0:
            raise InputError(f"data set {self.name!r} holds no images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def first(self, n: int) -> ImageData:
        """The first ``n`` images, in their fixed order (how victims are chosen).

        Raises:
            ValueError: ``n`` is not positive or larger than the data.
        """
        n = int(n)
        if n < 1 or n > len(self):
            raise InputError(f"asked for {n} images but {self.name!r} has {len(self)}; choose 1 to {len(self)}")
        return dataclasses.replace(self, images=self.images[:n], labels=self.labels[:n])

    def subset(self, n: int | None, seed: int | None = None) -> ImageData:
        """``n`` images to train on (all of them when ``n`` is None or at least ``len(self)``).

        Args:
            n: how many images.
            seed: ``None`` (what the chapters and commands use): the first ``n`` images in the
                data's order, the same images whatever the size of the split that holds them, so
                the embedded Fashion-MNIST sample and the full training split give the same
                subsets of up to 10,000 images. An integer: a seeded random choice that keeps
                every class's share of the data (stratified, largest remainders), in the data's
                order.

        Raises:
            ValueError: ``n`` is not positive.
        """
        if n is not None and int(n) < 1:
            raise InputError(f"a subset needs at least one image, asked for {n}")
        if n is None or n >= len(self):
            return self
        n = int(n)
        if seed is None:
            return dataclasses.replace(self, images=self.images[:n], labels=self.labels[:n])
        g = torch.Generator().manual_seed(int(seed))
        classes, counts = torch.unique(self.labels, return_counts=True)
        share = counts.double() * n / len(self)
        take = share.floor().long()
        remainder_order = torch.argsort(share - take, descending=True, stable=True)
        take[remainder_order[: n - int(take.sum())]] += 1
        chosen = []
        for c, k in zip(classes.tolist(), take.tolist()):
            members = torch.nonzero(self.labels == c).flatten()
            chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
        idx = torch.cat(chosen).sort().values
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx])

    def dataset(self) -> torch.utils.data.TensorDataset:
        """The images and labels as a ``TensorDataset`` for a ``DataLoader``."""
        return torch.utils.data.TensorDataset(self.images, self.labels)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where torchvision data sets live: ``root``, else ``$PRECODE_DATA``, else ``~/.cache/precode``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("PRECODE_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "precode"


def _in_words(path: Path) -> str:
    """``path`` for a sentence: under the home folder as ``~/...``, so no user name is printed."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)


def _from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 ``N x H x W`` or ``N x H x W x C`` -> float ``N x C x H x W`` in [0, 1]."""
    if images.ndim == 3:
        images = images[:, :, :, None]
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255.0)


def _torchvision_split(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    data = dataset.data
    data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    targets = dataset.targets
    if isinstance(targets, torch.Tensor):
        labels = targets.long()
    else:
        labels = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    return _from_uint8(data.astype(np.uint8, copy=False)), labels


def _install_debian_fashion_mnist(root: Path) -> bool:
    """Gunzip Debian's Fashion-MNIST files into ``root/FashionMNIST/raw``; True when done."""
    if not all((DEBIAN_FASHION_MNIST / f"{f}.gz").exists() for f in _IDX_FILES):
        return False
    raw = root / "FashionMNIST" / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for f in _IDX_FILES:
            target = raw / f
            if not target.exists():
                tmp = raw / (f + ".part")
                with gzip.open(DEBIAN_FASHION_MNIST / f"{f}.gz", "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                tmp.replace(target)
    except OSError as e:
        warnings.warn(f"could not unpack Debian's Fashion-MNIST into {raw}: {e}", stacklevel=3)
        return False
    return True


def _load_torchvision(name: str, split: str, root: Path, download: bool) -> ImageData:
    import torchvision

    cls = {
        "fashion-mnist": torchvision.datasets.FashionMNIST,
        "mnist": torchvision.datasets.MNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }[name]
    train = split == "train"
    try:
        ds = cls(str(root), train=train, download=False)
        source = f"{name} ({split} split) read by torchvision from {_in_words(root)}"
    except RuntimeError:
        if not download:
            raise DataUnavailableError(
                f"{name} is not in {root} and downloading is off; put it there, set PRECODE_DATA "
                f"to a folder that holds it, or allow downloads"
            ) from None
        try:
            ds = cls(str(root), train=train, download=True)
        except Exception as e:  # network errors come in many types
            raise DataUnavailableError(
                f"{name} is not in {root} and could not be downloaded ({type(e).__name__}: {e}). "
                f"Download it where the network allows and set PRECODE_DATA to its folder"
                + (", or install Debian's dataset-fashion-mnist" if name == "fashion-mnist" else "")
            ) from None
        source = f"{name} ({split} split) downloaded by torchvision into {_in_words(root)}"
    images, labels = _torchvision_split(ds)
    return ImageData(images, labels, list(ds.classes), name, source)


def _load_sample(split: str) -> ImageData:
    if not SAMPLE_FILE.exists():
        raise DataUnavailableError(
            f"the embedded Fashion-MNIST sample is missing from the package ({SAMPLE_FILE}); reinstall precode"
        )
    with np.load(SAMPLE_FILE) as f:
        images, labels = f[f"{split}_images"], f[f"{split}_labels"]
    return ImageData(
        _from_uint8(images), torch.from_numpy(labels.astype(np.int64)), list(FASHION_CLASSES),
        "fashion-mnist-sample",
        f"the embedded part of Fashion-MNIST ({split} split: {len(labels):,d} images, "
        + ("the first 10,000 of 60,000" if split == "train" else "all of them") + "; MIT licence)",
    )


_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "logo", "camera", "coins", "moon", "grass", "gravel", "brick", "page",
)


def _load_photos(size: int = 32) -> ImageData:
    from skimage import data as skdata
    from skimage.color import gray2rgb, rgba2rgb
    from skimage.transform import resize

    def crops(img: np.ndarray) -> list[np.ndarray]:
        h, w = img.shape[:2]
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        square = img[top : top + s, left : left + s]
        def tiles(k: int) -> list[np.ndarray]:  # a k x k grid of tiles, row by row
            return [square[r * s // k : (r + 1) * s // k, c * s // k : (c + 1) * s // k]
                    for r in range(k) for c in range(k)]

        return [square] + tiles(2) + tiles(3)

    per_photo = []
    for name in _PHOTOS:
        img = getattr(skdata, name)()
        if img.ndim == 2:
            img = gray2rgb(img)
        elif img.shape[2] == 4:
            img = (rgba2rgb(img) * 255).astype(np.uint8)
        per_photo.append(
            [(resize(c, (size, size), anti_aliasing=True, preserve_range=True)).round().astype(np.uint8)
             for c in crops(img)]
        )
    # Order: the whole (centre-square) view of every photo first, then the four quadrants of each,
    # then the nine tiles of a 3x3 grid of each (so the first 80 crops never change).
    ordered, photo_index = [], []
    for first, last in ((0, 1), (1, 5), (5, 14)):
        ordered += [v for views in per_photo for v in views[first:last]]
        photo_index += [i for i in range(len(_PHOTOS)) for _ in range(last - first)]
    labels = torch.tensor([i % 10 for i in photo_index], dtype=torch.long)
    return ImageData(
        _from_uint8(np.stack(ordered)), labels, [f"class {i}" for i in range(10)], "photos",
        f"{len(ordered)} 32x32 crops of scikit-image's {len(_PHOTOS)} bundled photos "
        "(labels are arbitrary: photo number mod 10)",
    )


def _load_npz(path: Path) -> ImageData:
    if not path.exists():
        raise FileNotFoundError(f"no such .npz file: {path}")
    try:
        f = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{path} is not a readable .npz file: {e}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):  # np.save's single array, renamed
        raise InputError(f"{path} holds a single array, not an .npz archive of arrays; write it with "
                         "np.savez(path, images=..., labels=...)")
    with f:
        missing = [k for k in ("images", "labels") if k not in f.files]
        if missing:
            raise InputError(
                f"{path} lacks the array(s) {missing}; it needs 'images' (uint8, N x H x W or N x H x W x C) "
                f"and 'labels' (integers, N); it has {f.files}"
            )
        try:  # an array of Python objects needs pickle, which is never run; a damaged member fails here too
            images, labels = f["images"], f["labels"]
            classes = f["num_classes"] if "num_classes" in f.files else None
        except Exception as e:
            raise InputError(f"{path}: its arrays cannot be read ({e}); 'images' must be uint8 and 'labels' "
                             "integers, saved with np.savez") from None
    if images.dtype != np.uint8:
        raise InputError(f"{path}: 'images' must be uint8 (0-255), got {images.dtype}")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3)):
        raise InputError(
            f"{path}: 'images' must be N x H x W or N x H x W x C with C in (1, 3), got shape {images.shape}"
        )
    if images.shape[0] == 0:
        raise InputError(f"{path}: 'images' is empty")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"{path}: 'labels' must be {images.shape[0]} integers (one per image), "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if labels.min() < 0:
        raise InputError(f"{path}: labels must be >= 0, found {labels.min()}")
    if classes is not None:
        if classes.shape != () or not np.issubdtype(classes.dtype, np.integer) or not 2 <= int(classes) <= MAX_CLASSES:
            raise InputError(f"{path}: 'num_classes' must be one integer from 2 to {MAX_CLASSES}, got {classes!r}")
        n_classes = int(classes)
    else:
        n_classes = max(int(labels.max()) + 1, 2)
    if labels.max() >= min(n_classes, MAX_CLASSES):
        said = f"its num_classes is {n_classes}" if classes is not None else (
            f"without 'num_classes' the largest label + 1 is the number of classes, at most {MAX_CLASSES}")
        raise InputError(f"{path}: labels must lie in 0..{min(n_classes, MAX_CLASSES) - 1} ({said}), "
                         f"found {labels.max()}")
    return ImageData(
        _from_uint8(images), torch.from_numpy(labels.astype(np.int64)), [f"class {i}" for i in range(n_classes)],
        path.name, f"{images.shape[0]} images from {path}",
    )


def load_data(
    name: str | os.PathLike,
    split: str = "test",
    root: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageData:
    """Load a data set split by name, or your own images from an ``.npz`` file.

    Args:
        name: one of :data:`DATASET_NAMES`, or a path to an ``.npz`` file.
        split: ``"test"`` (where victims come from) or ``"train"``.
        root: folder of torchvision data sets; default ``$PRECODE_DATA``, else ``~/.cache/precode``.
        download: try to download torchvision data sets that are not on disk.

    Raises:
        ValueError: unknown name or split, or a malformed ``.npz``.
        FileNotFoundError: the ``.npz`` path does not exist.
        DataUnavailableError: the data is not on disk and cannot be downloaded.

    Used in every chapter.
    """
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}; choose 'train' or 'test'")
    text = os.fspath(name)
    if text.lower().endswith(".npz"):
        return _load_npz(Path(text).expanduser())
    key = text.lower()
    if key not in DATASET_NAMES:
        raise InputError(
            f"unknown data set {text!r}; choose one of {list(DATASET_NAMES)} or give a path to an .npz file"
        )
    if key == "fashion-mnist-sample":
        return _load_sample(split)
    if key == "photos":
        if split != "test":
            raise InputError("'photos' holds victims only (split='test'); train on cifar10 or fashion-mnist instead")
        return _load_photos()
    base = data_root(root)
    if key == "fashion-mnist":
        raw = base / "FashionMNIST" / "raw"
        if not all((raw / f).exists() for f in _IDX_FILES) and _install_debian_fashion_mnist(base):
            data = _load_torchvision(key, split, base, download=False)
            data.source = (f"fashion-mnist ({split} split) from Debian's dataset-fashion-mnist, "
                           f"unpacked into {_in_words(raw)}")
            return data
        try:
            return _load_torchvision(key, split, base, download)
        except DataUnavailableError as e:
            warnings.warn(
                f"full Fashion-MNIST unavailable ({e}); using the embedded sample instead (the whole "
                "test split, the first 10,000 training images). Install Debian's dataset-fashion-mnist, "
                "set PRECODE_DATA or allow downloads for all 60,000 training images.",
                DataFallbackWarning, stacklevel=2,
            )
            data = _load_sample(split)
            data.source += ", used because full Fashion-MNIST is not on this machine and could not be downloaded"
            return data
    return _load_torchvision(key, split, base, download)
