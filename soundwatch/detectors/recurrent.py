"""Recurrent detectors on sequences of standardised log-mel frames: an LSTM next-frame
predictor and a GRU sequence-to-sequence autoencoder."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from soundwatch.detectors.frontend import LOGMEL_PARAMS
from soundwatch.detectors.neural import TRAIN_PARAMS
from soundwatch.detectors.params import Param, override
from soundwatch.detectors.registry import register
from soundwatch.detectors.windows import FrameStoreDetector

SEQUENCE_PARAMS: dict[str, Param] = {
    **LOGMEL_PARAMS,
    **override(TRAIN_PARAMS, epochs=30, batch_size=256, lr_patience=3, early_stopping_patience=6),
    "hidden": Param(256, "recurrent units per layer", low=1),
    "layers": Param(2, "stacked recurrent layers", low=1),
    "stride": Param(
        10,
        "each training epoch uses a random 1/stride of all window "
        "positions; validation windows start every stride frames",
        low=1,
    ),
    "score_stride": Param(2, "frames between the windows of a scored clip", low=1),
}


class SequenceWindowDetector(FrameStoreDetector):
    """Base of the recurrent detectors (not registered): windows of shape
    (batch, context, n_mels), gathered unflattened from the frame store."""

    layout: ClassVar[str] = "sequences"


# --------------------------------------------------------------------- networks
class LstmPredictor(nn.Module):
    """Stacked LSTM reading frames of shape (batch, steps, n_features); a linear head on
    the last step's output predicts the next frame, shape (batch, n_features). A window
    of shape (batch, steps + 1, n_features) holds the input frames and then the target."""

    def __init__(self, n_features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.rnn = nn.LSTM(n_features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, n_features)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(frames)
        return self.head(outputs[:, -1])

    def window_scores(self, window: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(window[:, :-1]) - window[:, -1]) ** 2, dim=1)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.mean(self.window_scores(batch))


class GruAutoencoder(nn.Module):
    """GRU sequence-to-sequence autoencoder on windows of shape (batch, steps, n_features).

    The encoder GRU's last hidden state of its top layer is the code, shape (batch,
    hidden). The decoder GRU starts from the encoder's final hidden states (all layers)
    and reads, at every step, the code (``decoder_input="code"``) or zeros
    (``"zeros"``); a linear layer maps each of its outputs to a frame, so the
    reconstruction has the input's shape. It never sees the input frames themselves.
    """

    def __init__(
        self, n_features: int, hidden: int, layers: int, decoder_input: str = "code"
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.decoder_input = decoder_input
        self.encoder = nn.GRU(n_features, hidden, layers, batch_first=True)
        self.decoder = nn.GRU(hidden, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, n_features)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        _, state = self.encoder(window)
        code = state[-1].unsqueeze(1).expand(-1, window.shape[1], -1)
        inputs = code if self.decoder_input == "code" else torch.zeros_like(code)
        outputs, _ = self.decoder(inputs, state)
        return self.head(outputs)

    def window_scores(self, window: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(window) - window) ** 2, dim=(1, 2))

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.mean((self(batch) - batch) ** 2)


# --------------------------------------------------------------------- detectors
@register
class LstmPredictorDetector(SequenceWindowDetector):
    """Next-frame prediction error of a stacked LSTM.

    Input: windows of ``history`` + 1 = 11 consecutive log-mel frames (n_fft 1024, hop
    512, 128 mels), each mel band standardised on the training normals, shape (batch,
    11, 128): the first 10 frames are read, the 11th is the target.
    Network: 2-layer LSTM (``layers``), 256 units (``hidden``); a linear layer on the
    last step's output predicts the 128-d next frame; MSE loss.
    Training: Adam lr 1e-3, batch 256, at most 30 epochs, ReduceLROnPlateau (halve after
    3 epochs without validation improvement), early stopping after 6, best validation
    epoch kept. Each epoch draws a random 1/``stride`` (default 1/10) of all window
    positions; validation windows start every ``stride`` frames of the held-out normals.
    Score: mean prediction MSE over the clip's windows, which start every
    ``score_stride`` (default 2) frames.
    """

    name = "lstm-predictor"
    params = {
        **SEQUENCE_PARAMS,
        "history": Param(10, "frames read before the predicted frame", low=1),
    }

    def _context(self) -> int:
        return self.history + 1

    def _build_network(self, n_features: int) -> LstmPredictor:
        return LstmPredictor(n_features, self.hidden, self.layers)


@register
class GruAutoencoderDetector(SequenceWindowDetector):
    """GRU sequence-to-sequence autoencoder on 10-frame log-mel windows.

    Input: windows of ``frames`` = 10 consecutive log-mel frames (n_fft 1024, hop 512,
    128 mels), each mel band standardised on the training normals, shape (batch, 10,
    128).
    Network: 2-layer encoder GRU (``layers``), 256 units (``hidden``); the top layer's
    last hidden state is the code. A 2-layer decoder GRU, initialised with the encoder's
    final states, reads the code repeated at each of the 10 steps
    (``decoder_input=code``, default) or zeros (``zeros``, teacher-free); a linear layer
    maps each step's output to 128 mels; MSE loss.
    Training: Adam lr 1e-3, batch 256, at most 30 epochs, ReduceLROnPlateau (halve after
    3 epochs without validation improvement), early stopping after 6, best validation
    epoch kept. Each epoch draws a random 1/``stride`` (default 1/32) of all window
    positions; validation windows start every ``stride`` frames of the held-out normals.
    Score: mean reconstruction MSE over the clip's windows, which start every
    ``score_stride`` (default 2) frames.
    """

    name = "gru-ae"
    params = {
        **override(SEQUENCE_PARAMS, stride=32),
        "frames": Param(10, "consecutive frames per window", low=1),
        "decoder_input": Param(
            "code", "what the decoder reads at each step", choices=("code", "zeros")
        ),
    }

    def _context(self) -> int:
        return self.frames

    def _build_network(self, n_features: int) -> GruAutoencoder:
        return GruAutoencoder(n_features, self.hidden, self.layers, self.decoder_input)
