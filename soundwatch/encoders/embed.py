"""Clips to embeddings: load, encode, cache the frame embeddings on disk, pool.

Frame embeddings are cached next to the log-mel features (see
:mod:`soundwatch.features.cache`); pooling happens after the cache, so trying another
pooling costs no network pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.encoders.base import Encoder
from soundwatch.encoders.pooling import DEFAULT_GEM_P, check_pooling, pool, pooled_dim
from soundwatch.features.extract import extract


def embed_clips(
    clips: Sequence[Clip],
    encoder: Encoder,
    pooling: str = "mean",
    *,
    gem_p: float = DEFAULT_GEM_P,
    duration: float | None = None,
    channel: int | str = 0,
    use_cache: bool = True,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Embed clips with an encoder, caching frame embeddings on disk.

    Parameters
    ----------
    clips : sequence of Clip, length n_clips
    encoder : Encoder
    pooling : {"mean", "max", "meanstd", "gem"}
        How frames become one vector, see :func:`pool`.
    gem_p : float, default=3.0
        Exponent of ``"gem"`` pooling.
    duration : float or None
        Pad or crop clips to this many seconds; None keeps each clip's length.
    channel : int or "mean"
        Channel of multichannel files.
    use_cache : bool
        Read and write the feature cache (``$SOUNDWATCH_CACHE``).

    Returns
    -------
    vectors : ndarray of shape (n_clips, dim'), float64
        Pooled clip embeddings; ``dim' = pooled_dim(encoder.embedding_dim, pooling)``.
    frames : list of ndarray of shape (n_frames_i, embedding_dim), float32
        Frame embeddings of each clip, in clip order.
    """
    check_pooling(pooling)

    def compute(waveform: np.ndarray) -> np.ndarray:
        # One clip per pass: clips may differ in length, and extract() caches each one.
        return encoder.frame_embeddings(waveform[None])[0]

    frames = extract(
        clips,
        compute,
        namespace=f"encoder-{encoder.name}",
        params={**encoder.cache_params(), "duration": duration, "channel": channel},
        sample_rate=encoder.sample_rate,
        duration=duration,
        channel=channel,
        use_cache=use_cache,
        desc=f"embedding ({encoder.name})",
    )
    if not frames:
        return np.zeros((0, pooled_dim(encoder.embedding_dim, pooling))), frames
    vectors = np.stack([pool(f, pooling, p=gem_p) for f in frames])
    return vectors, frames
