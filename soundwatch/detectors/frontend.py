"""Log-mel front end shared by the spectrogram detectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.detectors.params import Param, parse_channel

if TYPE_CHECKING:
    from soundwatch.features.logmel import LogMelConfig

LOGMEL_PARAMS: dict[str, Param] = {
    "sample_rate": Param(16000, "audio is resampled to this rate (Hz)", low=1000),
    "n_fft": Param(1024, "STFT size in samples", low=16),
    "hop_length": Param(512, "STFT hop in samples", low=1),
    "n_mels": Param(128, "mel bands", low=1),
    "power": Param(2.0, "spectrogram exponent before the log (2 = power)", low=0.1),
    "duration": Param(
        None,
        "pad or crop clips to this many seconds (none = keep length)",
        kind=float,
        optional=True,
        low=0.1,
    ),
    "channel": Param("0", "channel index of multichannel files, or 'mean'"),
}


class LogMelFrontend:
    """Mixin giving a detector log-mel features configured by :data:`LOGMEL_PARAMS`.

    The feature modules are imported on first use: the log-mel transform runs on
    torch, which loading a model does not need.
    """

    def logmel_config(self) -> LogMelConfig:
        from soundwatch.features.logmel import LogMelConfig

        return LogMelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            power=self.power,
            duration=self.duration,
            channel=parse_channel(self.channel),
        )

    def logmels(self, clips: Sequence[Clip]) -> list[np.ndarray]:
        """Cached log-mel spectrograms, each of shape (n_mels, n_frames)."""
        from soundwatch.features.extract import extract_logmel

        return extract_logmel(clips, self.logmel_config())
