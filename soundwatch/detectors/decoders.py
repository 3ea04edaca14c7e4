"""Frozen pretrained encoder + trainable decoder: reconstruct the log-mel, score the error.

A pretrained audio encoder (:mod:`soundwatch.encoders`) stays frozen; only a decoder
that maps its representation back to a log-mel spectrogram is trained, on normal clips,
through the shared loop (:meth:`TorchDetectorMixin.run_training`). A clip's anomaly
score is its mean squared reconstruction error: what the encoder represents of normal
sound the decoder has learnt to invert, and anomalous sound is reconstructed worse.

``encoder-mlp-decoder``
    Per encoder frame, an MLP predicts the block of soundwatch log-mel frames (16 kHz,
    128 mels, hop 512; standardised per band) that fall in that frame's time span. Works
    with any encoder (``random-cnn``, EfficientAT, AST, wav2vec2). Frame embeddings
    come from :func:`~soundwatch.encoders.embed.embed_clips`, i.e. the on-disk feature
    cache shared with the ``embedding`` detectors, and log-mels from the log-mel cache:
    the encoder runs once per clip ever, and training itself only touches the MLP.
``encoder-unet-decoder``
    A U-Net-style convolutional decoder fed by several of the encoder's intermediate
    feature maps (EfficientAT's :meth:`MobileNetV3Audio.extract_features`), which
    reconstructs the encoder's own input, the EfficientAT front-end log-mel (32 kHz,
    128 mels, 10 ms hop; roughly zero mean and unit scale by construction). The maps
    are too large to cache (about 1 MB per 10 s clip for mn04), so the encoder runs on
    every training batch, on random crops of ``crop_seconds`` to bound the cost.

The model file holds the decoder only: like the embedding detectors, the encoder and
its weights must be available when scoring.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from soundwatch.data.audio import fix_length, load_audio
from soundwatch.data.clips import Clip
from soundwatch.detectors.base import Detector
from soundwatch.detectors.embedding import ENCODER_PARAMS
from soundwatch.detectors.frontend import LOGMEL_PARAMS, LogMelFrontend
from soundwatch.detectors.neural import TRAIN_PARAMS, TorchDetectorMixin
from soundwatch.detectors.params import Param, override, parse_channel, parse_list
from soundwatch.detectors.registry import register
from soundwatch.encoders.base import Encoder
from soundwatch.encoders.embed import embed_clips
from soundwatch.encoders.pretrained import EfficientATEncoder
from soundwatch.encoders.registry import shared_encoder
from soundwatch.errors import ConfigError, ModelFileError
from soundwatch.features.scaling import Standardizer

#: Encoder frames per pass of the MLP decoder when validating and scoring.
FRAME_BATCH = 4096
#: Training clips whose log-mel statistics set the U-Net decoder's output offset and scale.
STATISTICS_CLIPS = 64


class EncoderDecoderDetector(TorchDetectorMixin, Detector):
    """What both decoder detectors share: the frozen encoder (not registered itself)."""

    def get_encoder(self) -> Encoder:
        """The configured encoder, shared between detectors (see :func:`shared_encoder`).

        Raises ConfigError listing the registered encoders if it is unknown.
        """
        try:
            return shared_encoder(self.encoder, self.weights, self.device, self.encoder_batch_size)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: {exc}") from None


# ==========================================================================================
# MLP decoder
# ==========================================================================================


def frame_alignment(
    n_mel_frames: int, n_encoder_frames: int, mel_seconds: float, frame_seconds: float, block: int
) -> tuple[np.ndarray, np.ndarray]:
    """Which encoder frame and which slot of its predicted block each log-mel frame is.

    Encoder frame ``e`` is taken to cover ``[e, e + 1) * frame_seconds`` and its block of
    ``block`` slots to split that span evenly; log-mel frame ``m`` (centred at
    ``m * mel_seconds``) goes to the frame and slot its centre falls in. Frames past the
    last encoder frame go to its last slot. When ``frame_seconds`` is a whole multiple
    of ``mel_seconds`` (EfficientAT: 10, random-cnn: 4 log-mel frames per encoder frame)
    this is exactly "encoder frame ``e`` predicts log-mel frames ``block*e .. block*e +
    block - 1``".

    Returns
    -------
    frame_index, slot_index : ndarray of shape (n_mel_frames,), int64
    """
    # The 1e-9 keeps exact multiples (m * 0.032 / 0.32 = 2.9999999...) on their frame.
    position = np.arange(n_mel_frames) * (mel_seconds / frame_seconds) + 1e-9
    frame = np.floor(position).astype(np.int64)
    slot = np.floor((position - frame) * block).astype(np.int64)
    past = frame >= n_encoder_frames
    frame[past] = n_encoder_frames - 1
    slot[past] = block - 1
    return frame, np.minimum(slot, block - 1)


class FrameMLPDecoder(nn.Module):
    """MLP from one frame embedding to a block of log-mel frames.

    (B, input_dim) -> [Linear + BatchNorm + ReLU] per hidden size -> Linear ->
    (B, block, n_mels). The loss is the MSE over the block's filled slots only.
    """

    def __init__(self, input_dim: int, hidden: Sequence[int], block: int, n_mels: int) -> None:
        super().__init__()
        self.block, self.n_mels = block, n_mels
        layers: list[nn.Module] = []
        sizes = [input_dim, *hidden]
        for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(size_in, size_out), nn.BatchNorm1d(size_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], block * n_mels))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).view(-1, self.block, self.n_mels)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Masked MSE of ``(x (B, D), target (B, block, n_mels), mask (B, block))``."""
        x, target, mask = batch
        squared = (self(x) - target).square().mean(dim=2)
        return (squared * mask).sum() / mask.sum().clamp(min=1.0)


@dataclasses.dataclass
class _FrameData:
    """Standardised encoder frames and log-mel frames of some clips, and their alignment.

    ``embeddings`` (n_frames_total, D); ``logmels`` (n_mel_total, n_mels);
    ``frame_index``/``slot_index`` (n_mel_total,) are global rows of ``embeddings`` and
    slots; ``mel_clip`` (n_mel_total,) the clip of each log-mel frame.
    """

    embeddings: np.ndarray
    logmels: np.ndarray
    frame_index: np.ndarray
    slot_index: np.ndarray
    mel_clip: np.ndarray
    n_clips: int

    def blocks(self, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training arrays: (embeddings (N, D), targets (N, block, n_mels), mask (N, block))
        over the encoder frames with at least one log-mel frame."""
        n_frames, n_mels = len(self.embeddings), self.logmels.shape[1]
        targets = np.zeros((n_frames, block, n_mels), dtype=np.float32)
        mask = np.zeros((n_frames, block), dtype=np.float32)
        # Two log-mel frames meet in one slot only past the last encoder frame; the later
        # one wins, which drops at most a frame or two per clip from training.
        targets[self.frame_index, self.slot_index] = self.logmels
        mask[self.frame_index, self.slot_index] = 1.0
        used = mask.any(axis=1)
        return self.embeddings[used], targets[used], mask[used]


@register
class EncoderMLPDecoder(LogMelFrontend, EncoderDecoderDetector):
    """Frozen encoder + MLP decoder of log-mel blocks; score = reconstruction MSE.

    Each clip gets frame embeddings from the frozen ``encoder`` (cached on disk, shared
    with the ``embedding`` detectors) and a log-mel spectrogram (``sample_rate``,
    ``n_fft``, ``hop_length``, ``n_mels``; default 16 kHz, 1024, 512, 128, i.e. the DCASE
    baseline's). Both are standardised with statistics of the training normals
    (embeddings per dimension, log-mel per band). An MLP (``hidden`` sizes, BatchNorm
    and ReLU) maps each frame embedding to the block of log-mel frames in its time span,
    the encoder's ``frame_seconds`` (see :func:`frame_alignment`): 10 frames for
    EfficientAT (0.32 s per embedding), 4 for ``random-cnn``, 4 slots for AST (0.1 s), 1
    for wav2vec2 (20 ms). Trained with MSE by Adam through the shared loop; the score of a
    clip is the mean squared error over all its log-mel frames and bands (in standardised
    units).

    Cost: one encoder pass per clip (then cached); each epoch only runs the MLP over the
    clips' encoder frames (32 per 10 s clip for EfficientAT), so training is cheap.
    Memory holds the embeddings and log-mels of the training clips (about 0.2 MB per
    10 s clip with EfficientAT mn04).
    """

    name = "encoder-mlp-decoder"
    params = {
        **LOGMEL_PARAMS,
        **ENCODER_PARAMS,
        **override(
            TRAIN_PARAMS, epochs=30, batch_size=256, lr_patience=3, early_stopping_patience=6
        ),
        "hidden": Param("256,256", "hidden layer sizes of the MLP, comma-separated"),
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._hidden = parse_list("hidden", self.hidden)

    # ----------------------------------------------------------------- data
    def _frame_data(self, clips: list[Clip]) -> _FrameData:
        """Standardised, aligned encoder and log-mel frames of ``clips`` (fitted state)."""
        encoder = self.get_encoder()
        _, frames = embed_clips(
            clips, encoder, "mean", duration=self.duration, channel=parse_channel(self.channel)
        )
        logmels = self.logmels(clips)
        if frames and frames[0].shape[1] != self.embed_scaler_.mean_.shape[0]:
            raise ModelFileError(
                f"{self.name}: encoder {self.encoder} gives {frames[0].shape[1]}-d embeddings "
                f"but the decoder was trained on {self.embed_scaler_.mean_.shape[0]}-d ones "
                "(different encoder or weights?)"
            )
        mel_seconds = self.hop_length / self.sample_rate
        embeddings, mels, frame_index, slot_index, mel_clip = [], [], [], [], []
        offset = 0
        for i, (emb, mel) in enumerate(zip(frames, logmels, strict=True)):
            frame, slot = frame_alignment(
                mel.shape[1], len(emb), mel_seconds, self.frame_seconds_, self.block_
            )
            embeddings.append(self.embed_scaler_.transform(emb.T).T)
            mels.append(self.mel_scaler_.transform(mel).T)
            frame_index.append(frame + offset)
            slot_index.append(slot)
            mel_clip.append(np.full(mel.shape[1], i))
            offset += len(emb)
        return _FrameData(
            np.concatenate(embeddings),
            np.concatenate(mels),
            np.concatenate(frame_index),
            np.concatenate(slot_index),
            np.concatenate(mel_clip),
            len(clips),
        )

    # ----------------------------------------------------------------- hooks
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        encoder = self.get_encoder()
        _, frames = embed_clips(
            train, encoder, "mean", duration=self.duration, channel=parse_channel(self.channel)
        )
        logmels = self.logmels(train)
        self.embed_scaler_ = Standardizer().fit([f.T for f in frames])
        self.mel_scaler_ = Standardizer().fit(logmels)
        mel_seconds = self.hop_length / self.sample_rate
        # An encoder that does not state its frame period (frame_seconds None) is taken
        # to cover the first clip evenly with its frames.
        period = encoder.frame_seconds or logmels[0].shape[1] * mel_seconds / len(frames[0])
        self.frame_seconds_ = float(period)
        # Enough slots that no two log-mel frames share one (the 1e-6 keeps exact
        # ratios such as 0.32 / 0.032 = 10.000000000000002 at 10).
        self.block_ = max(1, math.ceil(period / mel_seconds - 1e-6))
        del frames, logmels
        x, y, mask = self._frame_data(train).blocks(self.block_)
        self.network_ = FrameMLPDecoder(x.shape[1], self._hidden, self.block_, self.n_mels)
        valid_arrays = self._frame_data(valid).blocks(self.block_) if valid else None

        def train_batches(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
            order = rng.permutation(len(x))
            # Drop a last batch of one row: BatchNorm cannot train on it.
            stop = len(x) - (len(x) % self.batch_size == 1)
            for start in range(0, stop, self.batch_size):
                idx = np.sort(order[start : start + self.batch_size])
                yield (
                    torch.from_numpy(x[idx]),
                    torch.from_numpy(y[idx]),
                    torch.from_numpy(mask[idx]),
                )

        def valid_batches() -> Iterator[tuple[torch.Tensor, ...]]:
            vx, vy, vmask = valid_arrays
            for start in range(0, len(vx), FRAME_BATCH):
                rows = slice(start, start + FRAME_BATCH)
                yield (
                    torch.from_numpy(vx[rows]),
                    torch.from_numpy(vy[rows]),
                    torch.from_numpy(vmask[rows]),
                )

        self.run_training(self.network_, train_batches, valid_batches if valid_arrays else None)

    @torch.inference_mode()
    def _score(self, clips: list[Clip]) -> np.ndarray:
        data = self._frame_data(clips)
        self.network_.eval()
        predictions = np.concatenate(
            [
                self.network_(
                    torch.from_numpy(data.embeddings[start : start + FRAME_BATCH])
                ).numpy()
                for start in range(0, len(data.embeddings), FRAME_BATCH)
            ]
        )
        reconstructed = predictions[data.frame_index, data.slot_index]  # (n_mel_total, n_mels)
        errors = np.mean((reconstructed - data.logmels) ** 2, axis=1, dtype=np.float64)
        sums = np.bincount(data.mel_clip, weights=errors, minlength=data.n_clips)
        return sums / np.bincount(data.mel_clip, minlength=data.n_clips)

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        state = {
            "input_dim": int(self.network_.layers[0].in_features),
            "block": self.block_,
            "frame_seconds": self.frame_seconds_,
            "embed_scaler": self.embed_scaler_.to_dict(),
            "mel_scaler": self.mel_scaler_.to_dict(),
        }
        return self.network_arrays(self.network_), state

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        self.block_ = int(state["block"])
        self.frame_seconds_ = float(state["frame_seconds"])
        self.embed_scaler_ = Standardizer.from_dict(state["embed_scaler"])
        self.mel_scaler_ = Standardizer.from_dict(state["mel_scaler"])
        self.network_ = FrameMLPDecoder(
            int(state["input_dim"]), self._hidden, self.block_, self.n_mels
        )
        self.load_network_arrays(self.network_, tensors)


# ==========================================================================================
# U-Net decoder
# ==========================================================================================


def halved_sizes(size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """Spatial sizes after 0..``levels`` stride-2 "same" convolutions: ``ceil(n / 2)``
    per level, as in EfficientAT (128 x 1000 -> 64 x 500 -> ... -> 4 x 32)."""
    sizes = [tuple(size)]
    for _ in range(levels):
        sizes.append(tuple(-(-n // 2) for n in sizes[-1]))
    return sizes


class UNetDecoder(nn.Module):
    """Convolutional decoder with skip connections from encoder feature maps.

    It starts from the deepest map (level ``levels[0]``, i.e. stride ``2**levels[0]``)
    and climbs one level per block: nearest-neighbour upsampling to the size of the next
    level, concatenation of the encoder map of that level if it is one of the skips,
    3x3 convolution + BatchNorm + ReLU (``channels[i]`` filters). A 1x1 convolution
    makes the one-channel output at input resolution, which is then scaled and shifted
    by fixed target statistics (:meth:`set_target_statistics`): the network starts out
    predicting the mean spectrum and only has to learn the deviations, which Adam would
    otherwise need hundreds of steps to reach (the output bias moves ~ lr per step).

    Parameters
    ----------
    map_channels : sequence of int
        Channels of the encoder maps, deepest first.
    levels : sequence of int
        Level (number of halvings) of each map, deepest first, strictly decreasing.
    channels : sequence of int
        Filters of the up blocks, one per level from ``levels[0] - 1`` down to 0.
    n_mels : int
        Mel bands of the output.
    """

    def __init__(
        self,
        map_channels: Sequence[int],
        levels: Sequence[int],
        channels: Sequence[int],
        n_mels: int = 128,
    ) -> None:
        super().__init__()
        if len(map_channels) != len(levels) or not levels:
            raise ConfigError("need one level per encoder map")
        if any(a <= b for a, b in zip(levels[:-1], levels[1:], strict=False)) or levels[-1] < 0:
            raise ConfigError(f"map levels must be distinct and decreasing, got {list(levels)}")
        if len(channels) != levels[0]:
            raise ConfigError(
                f"channels needs {levels[0]} values (one per x2 upsampling from stride "
                f"{2 ** levels[0]}), got {len(channels)}"
            )
        self.levels = [int(v) for v in levels]
        skips = dict(zip(self.levels, map_channels, strict=True))
        blocks = []
        c_in = int(map_channels[0])
        for c_out, level in zip(channels, range(self.levels[0] - 1, -1, -1), strict=True):
            c_cat = c_in + skips.get(level, 0)
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_cat, c_out, 3, padding=1),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(),
                )
            )
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(c_in, 1, 1)
        # Buffers, so they travel in the state dict (and the model file) with the weights.
        self.register_buffer("band_mean", torch.zeros(n_mels))
        self.register_buffer("scale", torch.ones(()))

    def set_target_statistics(self, band_mean: np.ndarray, scale: float) -> None:
        """Fix the output's per-band offset (n_mels,) and global scale."""
        self.band_mean.copy_(torch.as_tensor(band_mean, dtype=torch.float32))
        self.scale.fill_(float(scale))

    def forward(self, maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Reconstruct (B, 1, *size) from encoder maps (deepest first) of an input of
        spatial ``size`` (n_mels, frames)."""
        sizes = halved_sizes(size, self.levels[0])
        skips = dict(zip(self.levels, maps, strict=True))
        x = maps[0]
        for block, level in zip(self.blocks, range(self.levels[0] - 1, -1, -1), strict=True):
            x = nn.functional.interpolate(x, size=sizes[level], mode="nearest")
            if level in skips:
                x = torch.cat([x, skips[level]], dim=1)
            x = block(x)
        return self.head(x) * self.scale + self.band_mean[:, None]

    def loss(self, batch: tuple[list[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """MSE of ``(maps, target (B, 1, n_mels, frames))``."""
        maps, target = batch
        return torch.mean((self(maps, tuple(target.shape[-2:])) - target) ** 2)


@register
class EncoderUNetDecoder(EncoderDecoderDetector):
    """Frozen EfficientAT + U-Net decoder of its input log-mel; score = reconstruction MSE.

    The target is EfficientAT's own input: its front-end log-mel (32 kHz, 128 mels,
    10 ms hop, ``(log(mel + 1e-5) + 4.5) / 5``), shape (1, 128, frames). The decoder
    (:class:`UNetDecoder`) starts from the encoder's last feature map (stride 32) and
    upsamples x2 five times back to the input size; at each level where a selected
    encoder map exists (EfficientAT's ``skip_stages``: strides 16, 8, 4, 2) that map is
    concatenated first, U-Net style. Its output is offset by the per-band mean and scaled
    by the RMS deviation of the training log-mels (from up to 64 clips), so training
    starts from the mean spectrum instead of spending its first hundreds of steps
    getting there.

    ``skip_levels`` is how many encoder maps feed the decoder, deepest first: 1 = the
    last map only (no skips), 3 (default) = strides 32, 16 and 8, 5 = all. The shallow,
    high-resolution maps are left out on purpose: the stride-2 map of mn04 holds 8 x 64 x
    T/2 values, 2x the input's 128 x T, so a decoder fed with it can learn a near
    identity that reconstructs anomalous sound as well as normal sound, and the score
    stops separating them. With the three deepest maps the decoder sees at most a 4x
    compression of the input (16 channels at stride 8) and must rely on what the
    pretrained encoder represents.

    Training uses random crops of ``crop_seconds`` (rounded to whole encoder frames of
    0.32 s), ``crops_per_clip`` per clip and epoch; the encoder runs on every batch
    (its maps are too large to cache: about 1 MB per 10 s clip), and audio is re-read
    from disk each epoch, so memory stays at a batch. Validation uses the centre crop of
    each held-out clip, encoded once. Scores use whole clips: the mean squared error over
    all bands and frames.
    """

    name = "encoder-unet-decoder"
    # Near chance with 10 clips per ID on the seed-1 few-shot probe (benchmarks/results).
    near_chance_below = 100
    params = {
        **ENCODER_PARAMS,
        **override(
            TRAIN_PARAMS, epochs=20, batch_size=16, lr_patience=3, early_stopping_patience=6
        ),
        "skip_levels": Param(3, "encoder maps feeding the decoder, deepest first", low=1),
        "channels": Param(
            "128,64,32,16,8", "filters of the up blocks, deepest first (one per x2 upsampling)"
        ),
        "crop_seconds": Param(2.56, "length of the random training crops (s)", low=0.01),
        "crops_per_clip": Param(1, "random training crops per clip and epoch", low=1),
        "duration": LOGMEL_PARAMS["duration"],
        "channel": LOGMEL_PARAMS["channel"],
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._channels = parse_list("channels", self.channels)

    # ----------------------------------------------------------------- encoder
    def _feature_encoder(self) -> EfficientATEncoder:
        """The loaded encoder, which must expose intermediate feature maps."""
        encoder = self.get_encoder()
        if not isinstance(encoder, EfficientATEncoder):
            raise ConfigError(
                f"{self.name}: encoder {self.encoder} provides no intermediate feature maps; "
                "use an EfficientAT encoder (e.g. efficientat-mn04) or encoder-mlp-decoder"
            )
        encoder.load()
        encoder.network.eval()
        return encoder

    def _stages(self, encoder: EfficientATEncoder) -> list[int]:
        available = encoder.network.skip_stages
        if self.skip_levels > len(available):
            raise ConfigError(
                f"{self.name}: skip_levels={self.skip_levels} but {self.encoder} has only "
                f"{len(available)} feature-map levels"
            )
        return list(available[-self.skip_levels :])

    def _encode(
        self, encoder: EfficientATEncoder, waveforms: np.ndarray
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encoder maps (deepest first) and input log-mel (B, 1, n_mels, frames), on the CPU.

        Under no_grad, not inference_mode: inference tensors cannot be saved for the
        decoder's backward pass.
        """
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(waveforms)).to(encoder.device)
            mel = encoder.frontend(x)
            maps = encoder.network.extract_features(mel, self.stages_)
        return [m.cpu() for m in reversed(maps)], mel.cpu()

    def _crop_samples(self, encoder: EfficientATEncoder) -> int:
        hop = encoder.frontend.hop_length
        unit = 2 ** self.levels_[0]  # input frames per deepest-map frame (32)
        frames = max(1, round(self.crop_seconds * encoder.sample_rate / hop / unit)) * unit
        return frames * hop

    def _load_audio(self, clip: Clip, sample_rate: int) -> np.ndarray:
        return load_audio(
            clip.path, sample_rate, channel=parse_channel(self.channel), duration=self.duration
        )

    @staticmethod
    def _crop(waveform: np.ndarray, n_samples: int, rng: np.random.Generator | None) -> np.ndarray:
        """A random crop (centre crop without ``rng``); short clips are zero-padded."""
        if len(waveform) <= n_samples:
            return fix_length(waveform, n_samples)
        room = len(waveform) - n_samples
        start = int(rng.integers(0, room + 1)) if rng is not None else room // 2
        return waveform[start : start + n_samples]

    def _target_statistics(
        self, encoder: EfficientATEncoder, clips: list[Clip]
    ) -> tuple[np.ndarray, float]:
        """Per-band mean (n_mels,) and RMS deviation from it of the target log-mel, over
        up to :data:`STATISTICS_CLIPS` training clips (front end only: cheap)."""
        total, sums, squares = 0, 0.0, 0.0
        for clip in clips[:STATISTICS_CLIPS]:
            waveform = torch.from_numpy(self._load_audio(clip, encoder.sample_rate))
            with torch.no_grad():
                mel = encoder.frontend(waveform[None].to(encoder.device))[0, 0].double().cpu()
            total += mel.shape[1]
            sums = sums + mel.sum(dim=1)
            squares = squares + mel.square().sum(dim=1)
        mean = sums / total
        variance = (squares / total - mean.square()).clamp(min=0.0).mean()
        return mean.float().numpy(), max(float(variance.sqrt()), 1e-3)

    # ----------------------------------------------------------------- hooks
    def _fit(self, train: list[Clip], valid: list[Clip]) -> None:
        encoder = self._feature_encoder()
        self.stages_ = self._stages(encoder)
        # Shapes of the selected maps from a small probe: channels, and levels from the
        # frequency size (each stride-2 stage halves it, rounding up).
        n_mels = encoder.frontend.mel_basis.shape[0]
        probe = np.zeros((1, 64 * encoder.frontend.hop_length), np.float32)  # 64 frames
        probe_maps, probe_mel = self._encode(encoder, probe)
        sizes = halved_sizes(tuple(probe_mel.shape[-2:]), 8)
        try:
            self.levels_ = [sizes.index(tuple(m.shape[-2:])) for m in probe_maps]
        except ValueError:
            raise ConfigError(
                f"{self.name}: the feature maps of {self.encoder} do not halve the input "
                f"at every level ({[tuple(m.shape[-2:]) for m in probe_maps]})"
            ) from None
        self.map_channels_ = [int(m.shape[1]) for m in probe_maps]
        self.n_mels_ = int(n_mels)
        self.network_ = UNetDecoder(self.map_channels_, self.levels_, self._channels, self.n_mels_)
        sample_rate = encoder.sample_rate
        self.network_.set_target_statistics(*self._target_statistics(encoder, train))
        n_samples = self._crop_samples(encoder)

        def batches(crops: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
            return self._encode(encoder, np.stack(crops))

        def train_batches(
            rng: np.random.Generator,
        ) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
            pending: list[np.ndarray] = []
            for i in rng.permutation(len(train)):
                waveform = self._load_audio(train[i], sample_rate)
                pending += [
                    self._crop(waveform, n_samples, rng) for _ in range(self.crops_per_clip)
                ]
                while len(pending) >= self.batch_size:
                    yield batches(pending[: self.batch_size])
                    pending = pending[self.batch_size :]
            if pending:
                yield batches(pending)

        valid_data: list[tuple[list[torch.Tensor], torch.Tensor]] = []
        if valid:
            # Fixed centre crops, encoded once: about 0.25 MB per held-out clip.
            crops = [self._crop(self._load_audio(c, sample_rate), n_samples, None) for c in valid]
            for start in range(0, len(crops), self.encoder_batch_size):
                valid_data.append(batches(crops[start : start + self.encoder_batch_size]))

        self.run_training(
            self.network_, train_batches, (lambda: iter(valid_data)) if valid_data else None
        )

    @torch.inference_mode()
    def _score(self, clips: list[Clip]) -> np.ndarray:
        encoder = self._feature_encoder()
        self.network_.eval()
        scores = np.empty(len(clips))
        # Up to encoder_batch_size clips in memory at a time; equal lengths share a pass.
        for start in range(0, len(clips), self.encoder_batch_size):
            rows = range(start, min(start + self.encoder_batch_size, len(clips)))
            waveforms = {i: self._load_audio(clips[i], encoder.sample_rate) for i in rows}
            by_length: dict[int, list[int]] = {}
            for i, waveform in waveforms.items():
                by_length.setdefault(len(waveform), []).append(i)
            for group in by_length.values():
                maps, mel = self._encode(encoder, np.stack([waveforms[i] for i in group]))
                reconstructed = self.network_(maps, tuple(mel.shape[-2:]))
                errors = torch.mean((reconstructed - mel) ** 2, dim=(1, 2, 3))
                scores[group] = errors.double().numpy()
        return scores

    def _get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        state = {
            "stages": self.stages_,
            "levels": self.levels_,
            "map_channels": self.map_channels_,
            "n_mels": self.n_mels_,
        }
        return self.network_arrays(self.network_), state

    def _set_state(self, tensors: dict[str, np.ndarray], state: dict) -> None:
        self.stages_ = [int(s) for s in state["stages"]]
        self.levels_ = [int(v) for v in state["levels"]]
        self.map_channels_ = [int(c) for c in state["map_channels"]]
        self.n_mels_ = int(state["n_mels"])
        self.network_ = UNetDecoder(self.map_channels_, self.levels_, self._channels, self.n_mels_)
        self.load_network_arrays(self.network_, tensors)
