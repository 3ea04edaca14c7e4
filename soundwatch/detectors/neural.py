"""What every neural detector shares: training parameters and state conversion."""

from __future__ import annotations

import numpy as np
import torch

from soundwatch.detectors.base import MIN_VALIDATION_CLIPS
from soundwatch.detectors.params import Param
from soundwatch.training.loop import History, TrainConfig, train

TRAIN_PARAMS: dict[str, Param] = {
    "epochs": Param(100, "maximum training epochs", low=1),
    "batch_size": Param(512, "training batch size", low=1),
    "learning_rate": Param(1e-3, "Adam learning rate", low=0.0),
    "weight_decay": Param(0.0, "Adam L2 weight decay", low=0.0),
    "lr_patience": Param(0, "ReduceLROnPlateau patience in epochs (0 = off)", low=0),
    "early_stopping_patience": Param(
        0,
        "stop after this many epochs without validation (with fewer than "
        f"{MIN_VALIDATION_CLIPS} held-out clips per model: training) loss improvement (0 = off)",
        low=0,
    ),
    "min_delta": Param(0.0, "smallest validation improvement that counts", low=0.0),
    "restore_best": Param(
        True,
        "true: keep the weights of the best validation epoch (of the best training-loss "
        f"epoch when fewer than {MIN_VALIDATION_CLIPS} clips per model are held out); false: "
        "those of the last",
    ),
    "threads": Param(0, "torch CPU threads (0 = torch's default)", low=0),
}


class TorchDetectorMixin:
    """Runs the shared training loop and converts network weights to model-file arrays."""

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            lr_patience=self.lr_patience,
            early_stopping_patience=self.early_stopping_patience,
            min_delta=self.min_delta,
            restore_best=self.restore_best,
            seed=self.seed,
            threads=self.threads,
        )

    def run_training(self, network: torch.nn.Module, train_batches, valid_batches) -> History:
        """Train ``network`` with the shared loop and record its curves in ``history_``."""
        history = train(
            network, train_batches, valid_batches, self.train_config(), desc=f"training {self.name}"
        )
        self.history_ = history.to_dict()
        return history

    @staticmethod
    def network_arrays(network: torch.nn.Module, prefix: str = "net.") -> dict[str, np.ndarray]:
        return {
            prefix + k: v.detach().cpu().numpy().copy() for k, v in network.state_dict().items()
        }

    @staticmethod
    def load_network_arrays(
        network: torch.nn.Module, arrays: dict[str, np.ndarray], prefix: str = "net."
    ) -> None:
        state = {
            k[len(prefix) :]: torch.from_numpy(np.array(v))
            for k, v in arrays.items()
            if k.startswith(prefix)
        }
        network.load_state_dict(state, strict=True)
        network.eval()
