"""The encoder registry, and the encoder instances that detectors share.

Built-in encoders are registered lazily: listing names imports nothing, and an encoder's
module (and torch) is imported when that encoder is first looked up.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from soundwatch.registry import Registry

if TYPE_CHECKING:
    from soundwatch.encoders.base import Encoder

_EFFICIENTAT = ("mn01", "mn02", "mn04", "mn05", "mn10", "mn20", "mn30", "mn40")

#: Every encoder by name; ``ENCODERS.create(name, weights=..., device=..., batch_size=...)``.
ENCODERS: Registry[Encoder] = Registry(
    "encoder",
    lazy={
        "random-cnn": "soundwatch.encoders.random_cnn",
        **{f"efficientat-{model}": "soundwatch.encoders.pretrained" for model in _EFFICIENTAT},
        "panns-cnn14": "soundwatch.encoders.panns",
        "panns-cnn14-16k": "soundwatch.encoders.panns",
        "resnet50-imagenet": "soundwatch.encoders.resnet",
        "vggish": "soundwatch.encoders.vggish",
        "ast": "soundwatch.encoders.hf",
        "wav2vec2": "soundwatch.encoders.hf",
    },
)


def shared_encoder(
    name: str, weights: str | None = None, device: str = "cpu", batch_size: int = 8
) -> Encoder:
    """The encoder ``ENCODERS.create`` makes, one instance per distinct arguments.

    Detectors fitted per machine ID are separate instances; sharing their encoder means
    its network is built and its checkpoint read once, not once per machine ID. The
    last few encoders are kept.

    Parameters
    ----------
    name : str
        Registered encoder name.
    weights : str or None
        Checkpoint file; None for the encoder's default.
    batch_size : int
        Waveforms per network pass.
    device : str
        Torch device; ``"auto"`` is ``"cuda"`` when available, else ``"cpu"``.
    """
    if device == "auto":
        import torch  # here only: listing and looking up encoders needs no torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _cached_encoder(name, weights, device, batch_size)


@lru_cache(maxsize=4)
def _cached_encoder(name: str, weights: str | None, device: str, batch_size: int) -> Encoder:
    import torch

    # Building a network draws from torch's global generator; without fork_rng a
    # detector seeded before it would train differently depending on whether the
    # encoder was already cached.
    with torch.random.fork_rng(devices=[]):
        return ENCODERS.create(name, weights=weights, device=device, batch_size=batch_size)
