"""Training and evaluation: the loss every client minimises, with progress bars and a history.

The loss is ``cross_entropy + bottleneck_loss(model)``: for a PRECODE model it includes
``beta * KL`` of every bottleneck (in bits), for a plain model it is the cross-entropy alone. The
same loss defines the gradient a client shares (:mod:`precode.federated`).

Used in chapters 4, 6 and 7 (accuracy and convergence under defenses and PRECODE).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .bottleneck import bottleneck_loss, bottlenecks
from .data import ImageData
from .errors import InputError

__all__ = ["loss_fn", "train", "training_loop", "evaluate", "seeded", "adam", "GradientTransform", "GradientStep"]

GradientTransform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
GradientStep = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
_EVAL_BATCH_SIZE = 500  # images per forward pass when testing


def loss_fn(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy plus the KL term of every PRECODE bottleneck in ``model``.

    Call it right after the forward pass that produced ``logits``. ``reduction="none"`` gives the
    ``(batch,)`` loss of every sample (their mean is the ``"mean"`` loss; DP-SGD's ghost clipping
    needs them).
    """
    if reduction == "none":
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        for vb in bottlenecks(model):
            per_sample = per_sample + vb.kl_per_sample
        return per_sample
    if reduction != "mean":
        raise InputError(f"unknown reduction {reduction!r}; choose 'mean' or 'none'")
    return F.cross_entropy(logits, labels) + bottleneck_loss(model)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with the global RNG seeded (PRECODE's noise), restoring the caller's RNG after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _as_dataset(data: ImageData | Dataset) -> Dataset:
    return data.dataset() if isinstance(data, ImageData) else data


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate(model: nn.Module, data: ImageData | Dataset, batch_size: int = _EVAL_BATCH_SIZE) -> tuple[float, float]:
    """Mean loss (cross-entropy + KL) and accuracy of ``model`` on ``data``, in eval mode."""
    with _fast_memory_format(model) as memory_format:  # a CNN: 10,000 Fashion-MNIST images in 3.7 s, not 5.7
        return _evaluate(model, data, memory_format, batch_size)


@torch.no_grad()
def _evaluate(model: nn.Module, data: ImageData | Dataset, memory_format: torch.memory_format,
              batch_size: int = _EVAL_BATCH_SIZE) -> tuple[float, float]:
    """:func:`evaluate` of a model already in ``memory_format`` (the training loop's)."""
    dataset = _as_dataset(data)
    if len(dataset) == 0:
        raise InputError("cannot evaluate on an empty data set")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size):
            x, y = x.to(device, memory_format=memory_format), y.to(device)
            logits = model(x)
            total_loss += float(loss_fn(model, logits, y)) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    finally:
        model.train(was_training)
    return total_loss / n, correct / n


def train(
    model: nn.Module,
    train_data: ImageData | Dataset,
    test_data: ImageData | Dataset | None = None,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    gradient_transform: GradientTransform | None = None,
    progress: bool = True,
    gradient_step: GradientStep | None = None,
) -> list[dict]:
    """Train ``model`` with Adam (the paper's optimiser) and return the per-epoch history.

    Args:
        model: the model, trained in place on its current device.
        train_data, test_data: the data (an :class:`~precode.data.ImageData` or a dataset of
            ``(image, label)`` pairs); ``test_data`` is optional.
        epochs: passes over ``train_data``.
        lr: Adam's learning rate (``1e-3`` in the paper).
        batch_size: images per step (64 in the paper).
        seed: seeds the shuffling and any sampling, so equal seeds give equal histories. The
            sampling (PRECODE's noise) draws from the global RNG, seeded for this call; the
            caller's global RNG state is restored afterwards.
        gradient_transform: applied to the gradients (a dict ``parameter name -> gradient``)
            before every step, to train under a defense (chapter 5).
        progress: show tqdm progress bars (on stderr).
        gradient_step: replaces the forward and backward pass of every step:
            ``gradient_step(model, images, labels)`` sets every parameter's ``.grad`` and returns
            the batch's mean loss and its logits (:func:`precode.release.train_on_releases`: the
            mean of releases pruned one by one).

    Returns:
        One dict per epoch: ``epoch, train_loss, train_accuracy, test_loss, test_accuracy``
        (the test entries are ``None`` without ``test_data``) and ``seconds`` since the start.
    """
    if epochs < 1:
        raise InputError(f"epochs must be at least 1, got {epochs}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    dataset = _as_dataset(train_data)
    if len(dataset) == 0:
        raise InputError("cannot train on an empty data set")
    with seeded(seed, _device_of(model)):
        return _train(model, dataset, test_data, epochs, lr, batch_size, seed, gradient_transform, progress,
                      gradient_step)


def adam(parameters, lr: float) -> torch.optim.Adam:
    """Adam (the paper's optimiser) with torch's fused implementation where it has one (torch 2.4 or later
    on the CPU, and CUDA), else the default one: the same update up to floating-point rounding.

    On a CPU the default Adam is the dearer half of a training step of the 1024-wide MLP: a step on 64
    images took 11.3 ms with the fused one against 24.7 ms (``benchmarks/bench_training.py``, one thread).
    """
    params = list(parameters)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # an older torch, or a device without a fused Adam
        return torch.optim.Adam(params, lr=lr)


def _uses_channels_last(model: nn.Module) -> bool:
    """Whether training keeps images and convolution weights channels-last (NHWC) in memory.

    On a CPU, oneDNN's convolutions are faster that way: a CNN training step of 64 Fashion-MNIST
    images takes about 40 instead of 71 ms on one thread. The same numbers up to rounding.
    """
    return _device_of(model).type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())


@contextlib.contextmanager
def _fast_memory_format(model: nn.Module) -> Iterator[torch.memory_format]:
    """Keep ``model`` channels-last while the block runs where that is faster (:func:`_uses_channels_last`),
    yielding the memory format the block's inputs should have; the model is an ordinary one again after."""
    memory_format = torch.channels_last if _uses_channels_last(model) else torch.contiguous_format
    model.to(memory_format=memory_format)
    try:
        yield memory_format
    finally:
        model.to(memory_format=torch.contiguous_format)


def _train(model: nn.Module, dataset: Dataset, test_data: ImageData | Dataset | None, epochs: int, lr: float,
           batch_size: int, seed: int, gradient_transform: GradientTransform | None, progress: bool,
           gradient_step: GradientStep | None = None) -> list[dict]:
    with _fast_memory_format(model) as memory_format:
        return _train_loop(model, dataset, test_data, epochs, lr, batch_size, seed, gradient_transform, progress,
                           memory_format, gradient_step)


def _train_loop(model: nn.Module, dataset: Dataset, test_data: ImageData | Dataset | None, epochs: int, lr: float,
                batch_size: int, seed: int, gradient_transform: GradientTransform | None, progress: bool,
                memory_format: torch.memory_format, gradient_step: GradientStep | None = None) -> list[dict]:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = adam(model.parameters(), lr)
    return training_loop(
        model, loader, optimizer, lambda logits, y: loss_fn(model, logits, y), epochs,
        test=None if test_data is None else lambda: _evaluate(model, test_data, memory_format),
        memory_format=memory_format, gradient_transform=gradient_transform, progress=progress,
        gradient_step=gradient_step,
    )


def _like(param: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor | None:
    """``grad`` laid out in memory as ``param`` is. A defense may return a contiguous gradient for a
    channels-last weight; the fused Adam pairs a parameter's and its gradient's entries by memory
    position, so it would update the weight with another entry's gradient."""
    if grad is None or grad.stride() == param.stride():
        return grad
    return torch.empty_like(param).copy_(grad)


def training_loop(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
                  criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], epochs: int, *,
                  test: Callable[[], tuple[float, float]] | None = None,
                  memory_format: torch.memory_format = torch.preserve_format,
                  gradient_transform: GradientTransform | None = None, step_context=contextlib.nullcontext,
                  on_empty_batch: Callable[[], None] | None = None,
                  epoch_extra: Callable[[], dict] | None = None, desc: str = "", progress: bool = False,
                  gradient_step: GradientStep | None = None) -> list[dict]:
    """The one training loop: :func:`train`'s, and DP-SGD's with the loader, optimiser and criterion
    that Opacus' ``make_private`` returns (:func:`precode.defenses.train_dp`).

    Args:
        model: the model, trained in place on its device.
        loader: batches ``(images, labels)``; an empty batch (Poisson sampling) is skipped after
            ``on_empty_batch()`` (DP-SGD: the accountant still counts the step).
        optimizer, criterion: the optimiser and the loss ``criterion(logits, labels)``.
        epochs: passes over ``loader``.
        test: returns ``(test loss, test accuracy)`` after each epoch; ``None``: not tested.
        memory_format: the images' memory format on the device (channels-last for a CNN on the CPU).
        gradient_transform: applied to the gradients before every step (a defense, chapter 5).
        step_context: the context of every backward pass and step (DP-SGD: Opacus' warnings quietened).
        epoch_extra: more entries for each epoch's record (DP-SGD: the epsilon spent so far).
        desc, progress: the tqdm bar's label, and whether it is shown.
        gradient_step: sets the gradients itself and returns ``(loss, logits)`` (:func:`train`).

    Returns:
        One dict per epoch: ``epoch, train_loss, train_accuracy, test_loss, test_accuracy, seconds``
        (since the start) and ``epoch_extra()``'s entries.
    """
    device = _device_of(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    history: list[dict] = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss, correct, n = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}{desc}", disable=not progress, leave=False)
        for x, y in bar:
            optimizer.zero_grad(set_to_none=True)
            if len(y) == 0:
                if on_empty_batch is not None:
                    on_empty_batch()
                continue
            x, y = x.to(device, memory_format=memory_format), y.to(device)
            if gradient_step is not None:
                loss, logits = gradient_step(model, x, y)
            else:
                logits = model(x)
                loss = criterion(logits, y)
            if not torch.isfinite(loss.detach()):
                raise FloatingPointError(
                    f"training loss became {float(loss.detach())} in epoch {epoch}; lower the learning rate"
                )
            with step_context():
                if gradient_step is None:
                    loss.backward()
                else:
                    for p in params:
                        p.grad = _like(p, p.grad)
                if gradient_transform is not None:
                    grads = gradient_transform({k: p.grad for k, p in zip(names, params)})
                    for p, k in zip(params, names):
                        p.grad = _like(p, grads[k])
                optimizer.step()
            total_loss += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            n += len(y)
        entry = {"epoch": epoch, "train_loss": total_loss / n if n else None,
                 "train_accuracy": correct / n if n else None, "test_loss": None, "test_accuracy": None}
        if test is not None:
            entry["test_loss"], entry["test_accuracy"] = test()
        entry["seconds"] = time.perf_counter() - start
        if epoch_extra is not None:
            entry.update(epoch_extra())
        history.append(entry)
    return history
