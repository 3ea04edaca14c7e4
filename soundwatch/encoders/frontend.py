"""Spectrogram front ends shared by encoders that start from a mel spectrogram."""

from __future__ import annotations

import torch


def mel_power(
    waveforms: torch.Tensor, filters: torch.Tensor, window: torch.Tensor, hop_length: int
) -> torch.Tensor:
    """Mel power spectrogram ``filters @ |STFT|^2``, for encoders with a log-mel front end.

    Parameters
    ----------
    waveforms : torch.Tensor of shape (batch, n_samples)
    filters : torch.Tensor of shape (n_mels, n_fft // 2 + 1)
    window : torch.Tensor of shape (n_fft,)
        Analysis window; its length is the FFT size.
    hop_length : int

    Returns
    -------
    torch.Tensor of shape (batch, n_mels, 1 + n_samples // hop_length)
        Centred frames, the signal zero-padded by ``n_fft // 2`` at both ends.
    """
    spec = torch.stft(
        waveforms,
        len(window),
        hop_length=hop_length,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return filters @ spec.abs().square()
