"""The victim models: the reference MLP, a small CNN and DLG's sigmoid LeNet.

Every model takes images with pixels in ``[0, 1]`` (no normalisation layer), shaped
``(batch, channels, height, width)``, and returns class logits. Layers are named, so that a
PRECODE bottleneck can be inserted before any of them by name
(:func:`precode.bottleneck.add_precode`); the final layer is always called ``classifier``.

Used in every chapter; chapter 2 compares the three models as attack targets.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .errors import InputError

__all__ = ["MLP", "CNN", "LeNet", "MODEL_NAMES", "MAX_PARAMETERS", "build_model"]

MODEL_NAMES = ("mlp", "cnn", "lenet")

MAX_PARAMETERS = 64_000_000
"""The largest model :func:`build_model` builds (256 MB of float32 weights; the 1024-wide MLP on
CIFAR-sized images has 4.2 million): an attack keeps a gradient per victim, so a model for images
of 512 x 512 pixels (805 million weights in the MLP) would not fit in memory."""


def _check_shape(input_shape: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(
            f"input_shape must be (channels, height, width) with positive sizes, got {tuple(input_shape)}"
        )
    if int(num_classes) < 2:
        raise InputError(f"num_classes must be at least 2, got {num_classes}")
    return shape  # type: ignore[return-value]


class MLP(nn.Sequential):
    """The PRECODE paper's reference MLP.

    ``Flatten -> Linear(in, width) -> ReLU -> Linear(width, width) -> ReLU -> Linear(width, classes)``,
    with layers named ``flatten, fc1, relu1, fc2, relu2, classifier``. Its first layer has a
    bias, which is what the analytic attack of chapter 2 exploits.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 1024):
        shape = _check_shape(input_shape, num_classes)
        d = shape[0] * shape[1] * shape[2]
        super().__init__(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(d, width),
                relu1=nn.ReLU(),
                fc2=nn.Linear(width, width),
                relu2=nn.ReLU(),
                classifier=nn.Linear(width, num_classes),
            )
        )
        self.input_shape = shape
        self.num_classes = int(num_classes)


class CNN(nn.Sequential):
    """A small convolutional network: conv blocks and a linear head.

    Design: each block is ``Conv2d(3x3, padding 1) -> ReLU -> MaxPool2d(2)`` and halves the
    resolution; the widths (channels per block) are configurable, ``(32, 64, 128)`` by default.
    Then ``Flatten`` and one ``Linear`` head (``classifier``). No batch normalisation, so a
    client's gradient depends only on its own images (batch norm would mix the batch's
    statistics into every gradient and needs running statistics the attacker may not know).
    Layers are named ``block1 .. blockN, flatten, classifier``; ``add_precode(model, before="block2")``
    places the bottleneck right after the first block.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (32, 64, 128)):
        shape = _check_shape(input_shape, num_classes)
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise InputError(f"widths must be a non-empty sequence of positive channel counts, got {widths}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c, h, w = shape
        for i, width in enumerate(widths, start=1):
            if h < 2 or w < 2:
                raise InputError(
                    f"input {shape} is too small for {len(widths)} pooling blocks; use fewer widths"
                )
            layers[f"block{i}"] = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(c, width, 3, padding=1), relu=nn.ReLU(), pool=nn.MaxPool2d(2))
            )
            c, h, w = width, h // 2, w // 2
        layers["flatten"] = nn.Flatten()
        layers["classifier"] = nn.Linear(c * h * w, num_classes)
        super().__init__(layers)
        self.input_shape = shape
        self.num_classes = int(num_classes)


class LeNet(nn.Sequential):
    """DLG's LeNet (Zhu et al., 2019): three sigmoid conv layers and a linear head.

    ``Conv(c,12,k5,s2,p2)-Sigmoid-Conv(12,12,k5,s2,p2)-Sigmoid-Conv(12,12,k5,s1,p2)-Sigmoid-Flatten-Linear``,
    every weight and bias initialised uniformly in ``[-0.5, 0.5]`` as in DLG's code. Sigmoids
    are twice differentiable everywhere, which second-order gradient matching (L-BFGS) needs.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int):
        shape = _check_shape(input_shape, num_classes)
        c, h, w = shape
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        h3, w3 = (h2 + 1) // 2, (w2 + 1) // 2
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(c, 12, 5, stride=2, padding=2),
                act1=nn.Sigmoid(),
                conv2=nn.Conv2d(12, 12, 5, stride=2, padding=2),
                act2=nn.Sigmoid(),
                conv3=nn.Conv2d(12, 12, 5, stride=1, padding=2),
                act3=nn.Sigmoid(),
                flatten=nn.Flatten(),
                classifier=nn.Linear(12 * h3 * w3, num_classes),
            )
        )
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-0.5, 0.5)
        self.input_shape = shape
        self.num_classes = int(num_classes)


def build_model(
    name: str, input_shape: Sequence[int], num_classes: int, seed: int | None = None, **kwargs
) -> nn.Module:
    """Build the model called ``name`` (``mlp``, ``cnn`` or ``lenet``) for the given data shape.

    Args:
        name: one of :data:`MODEL_NAMES`.
        input_shape: ``(channels, height, width)`` of the images.
        num_classes: number of classes.
        seed: if given, the weights are initialised from ``torch.manual_seed(seed)``, so the
            same seed gives the same model.
        **kwargs: passed to the model class (``width`` for the MLP, ``widths`` for the CNN).

    Raises:
        ValueError: unknown name or bad shape, or a model of more than :data:`MAX_PARAMETERS`
            parameters (images too large).
    """
    classes = {"mlp": MLP, "cnn": CNN, "lenet": LeNet}
    key = str(name).lower()
    if key not in classes:
        raise InputError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # its size first, without memory or randomness
        size = sum(p.numel() for p in classes[key](input_shape, num_classes, **kwargs).parameters())
    if size > MAX_PARAMETERS:
        raise InputError(f"the {key} model for images of shape {tuple(input_shape)} and {num_classes} classes would "
                         f"have {size:,} parameters, more than the {MAX_PARAMETERS:,} an attack can hold; use smaller "
                         "images (for example 32 x 32 pixels) or fewer classes")
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return classes[key](input_shape, num_classes, **kwargs)
    return classes[key](input_shape, num_classes, **kwargs)
