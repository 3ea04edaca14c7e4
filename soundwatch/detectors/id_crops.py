"""Classes and training crops of the ``id-classifier`` detector: :class:`ClassKey` names
a class, :class:`CropBank` holds the clips of a split and cuts (transformed) crops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from soundwatch.detectors.id_transforms import TRANSFORMS, apply_transform
from soundwatch.features.scaling import Standardizer

# int16 waveforms halve the memory of the temporal branch's input (DCASE files are
# 16-bit PCM, so nothing is lost on them): 2,370 ten-second clips take 0.76 GB.
INT16_SCALE = 32767.0


@dataclass(frozen=True)
class ClassKey:
    """One class of the classifier: a machine ID of a type, optionally transformed.

    ``transform`` is None for plain ID classes and for outlier machine types (then
    ``machine_id`` is None too), else a name from :data:`TRANSFORMS`.
    """

    machine_type: str | None
    machine_id: str | None
    transform: str | None = None

    @property
    def is_own(self) -> bool:
        """Whether a clip can belong to this class as it is (no transformation)."""
        return self.transform in (None, "identity")


class CropBank:
    """The clips of one split as crop sources: raw log-mels, optional int16 waveforms.

    Parameters
    ----------
    mels : list of float32 arrays of shape (n_mels, n_frames_i)
        Raw (not standardised) log-mels; shorter clips are wrapped to ``crop_frames``.
    waves : list of int16 arrays or None
        Waveforms padded by ``n_fft // 2`` zeros in front and ``n_fft // 2 + hop`` at
        the end, so frame ``t``'s STFT window starts at sample ``t * hop``.
    class_table : int array of shape (n_clips, len(TRANSFORMS))
        Class index of each clip under each transform; -1 where a clip is never
        transformed that way (outlier machine types, or no transform fallback). Column 0
        is the clip's own class (-1 if unknown).
    """

    def __init__(
        self,
        mels: list[np.ndarray],
        waves: list[np.ndarray] | None,
        class_table: np.ndarray,
        crop_frames: int,
        hop_length: int,
        n_fft: int,
        strength: float = 1.0,
    ) -> None:
        self.strength = strength
        self.mels = [
            m if m.shape[1] >= crop_frames else np.pad(m, ((0, 0), (0, crop_frames)), "wrap")
            for m in mels
        ]
        self.waves = waves
        self.class_table = class_table
        self.crop_frames, self.hop_length, self.n_fft = crop_frames, hop_length, n_fft
        self.transformable = (class_table[:, 1:] >= 0).any(axis=1)

    def __len__(self) -> int:
        return len(self.mels)

    def grid_starts(self, clip: int, hop_frames: int) -> np.ndarray:
        """Crop starts covering the whole clip evenly, at most ``hop_frames`` apart."""
        span = self.mels[clip].shape[1] - self.crop_frames
        n = -(-span // hop_frames) + 1 if span > 0 else 1
        return np.round(np.linspace(0, span, n)).astype(int)

    def wave_crop(self, clip: int, start: int) -> np.ndarray:
        n_samples = (self.crop_frames - 1) * self.hop_length + self.n_fft
        wave = self.waves[clip]
        begin = start * self.hop_length
        out = wave[begin : begin + n_samples]
        if len(out) < n_samples:  # a wrapped (too short) clip: pad with silence
            out = np.pad(out, (0, n_samples - len(out)))
        return out.astype(np.float32) / INT16_SCALE

    def batch(
        self,
        clips: np.ndarray,
        starts: np.ndarray,
        transforms: np.ndarray,
        scaler: Standardizer,
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Tensors ``(mel, wave, target)`` of crops; transform 0 (identity) keeps a crop."""
        mel = np.stack(
            [
                apply_transform(
                    self.mels[c], s, self.crop_frames, TRANSFORMS[t], rng, self.strength
                )
                for c, s, t in zip(clips, starts, transforms, strict=True)
            ]
        )
        mel = (mel - scaler.mean_[:, None]) / scaler.scale_[:, None]
        wave = None
        if self.waves is not None:
            wave = torch.from_numpy(
                np.stack([self.wave_crop(c, s) for c, s in zip(clips, starts, strict=True)])
            )
        target = torch.from_numpy(self.class_table[clips, transforms].astype(np.int64))
        return torch.from_numpy(mel.astype(np.float32)), wave, target

    def random_crops(
        self, clips: np.ndarray, rng: np.random.Generator, transform: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random crop starts and (if ``transform``) random transform indices."""
        spans = np.array([self.mels[c].shape[1] - self.crop_frames + 1 for c in clips])
        starts = (rng.random(len(clips)) * spans).astype(int)
        transforms = np.zeros(len(clips), dtype=int)
        if transform:
            movable = self.transformable[clips]
            transforms[movable] = rng.integers(0, len(TRANSFORMS), movable.sum())
        return starts, transforms
