"""One training loop for every neural detector, in the spirit of Lightning's Trainer.

A detector owns its network and says how to turn a batch into a loss
(:class:`LossModel`); it hands the loop two batch sources. The loop owns everything
else: optimiser, learning-rate schedule, early stopping, seeding, threads, progress bar
and, unless ``restore_best`` is off, restoring the best validation checkpoint.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from soundwatch.errors import SoundwatchError


class LossModel(Protocol):
    """What the loop needs of a network: ``loss(batch) -> scalar tensor``."""

    def loss(self, batch: Any) -> torch.Tensor: ...


@dataclass
class TrainConfig:
    """Settings of :func:`train`.

    ``early_stopping_patience`` of 0 disables early stopping; ``lr_patience`` of 0
    disables ReduceLROnPlateau.
    """

    epochs: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_patience: int = 0
    lr_factor: float = 0.5
    early_stopping_patience: int = 0
    min_delta: float = 0.0
    restore_best: bool = True
    seed: int = 0
    threads: int = 0
    progress: bool = True


@dataclass
class History:
    """Per-epoch losses and learning rates, and the epoch whose weights were kept."""

    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a training run is reproducible on the CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _mean_loss(model: LossModel, batches: Iterable[Any]) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            total += float(model.loss(batch).detach())
            count += 1
    return total / count if count else math.nan


def train(
    model: torch.nn.Module,
    train_batches: Callable[[np.random.Generator], Iterable[Any]],
    valid_batches: Callable[[], Iterable[Any]] | None,
    config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    desc: str = "training",
) -> History:
    """Train ``model`` in place and return its history.

    Parameters
    ----------
    model : torch.nn.Module with a ``loss(batch)`` method
    train_batches : callable
        Called once per epoch with a NumPy generator; yields training batches (shuffled
        and streamed by the caller).
    valid_batches : callable or None
        Yields validation batches. Without it, the training loss drives early stopping
        and checkpoint selection.
    config : TrainConfig
    optimizer : torch optimizer, optional
        Defaults to Adam with ``config.learning_rate`` and ``config.weight_decay``.
    """
    seed_everything(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    optimizer = optimizer or torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_factor, patience=config.lr_patience
        )
        if config.lr_patience > 0
        else None
    )
    history = History()
    best_loss, best_state, waited = math.inf, None, 0
    bar = tqdm(
        range(config.epochs),
        desc=desc,
        unit="epoch",
        disable=None if config.progress else True,
        leave=False,
    )
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for batch in train_batches(rng):
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(batch)
            if not torch.isfinite(loss.detach()):
                raise SoundwatchError(
                    f"{desc}: loss became {float(loss)} at epoch {epoch + 1}; "
                    "lower the learning rate or check the input for NaNs"
                )
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            count += 1
        train_loss = total / max(count, 1)
        model.eval()
        valid_loss = _mean_loss(model, valid_batches()) if valid_batches else math.nan
        monitored = train_loss if math.isnan(valid_loss) else valid_loss
        history.train_loss.append(train_loss)
        history.valid_loss.append(valid_loss)
        history.learning_rate.append(optimizer.param_groups[0]["lr"])
        if scheduler is not None:
            scheduler.step(monitored)
        bar.set_postfix(loss=f"{train_loss:.4g}", val=f"{valid_loss:.4g}")
        if monitored < best_loss - config.min_delta:
            best_loss, waited, history.best_epoch = monitored, 0, epoch
            if config.restore_best:
                best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if 0 < config.early_stopping_patience <= waited:
                history.stopped_early = True
                break
    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    else:
        history.best_epoch = len(history.train_loss) - 1
    model.eval()
    return history


def shuffled_batches(
    n_items: int, batch_size: int, rng: np.random.Generator | None, drop_last: bool = False
) -> Iterable[np.ndarray]:
    """Index batches over ``n_items``, shuffled when ``rng`` is given."""
    order = rng.permutation(n_items) if rng is not None else np.arange(n_items)
    stop = n_items - n_items % batch_size if drop_last and n_items >= batch_size else n_items
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]
