"""Hugging Face ``transformers`` encoders: AST and wav2vec 2.0 (optional dependency).

Two registered encoders run networks from the ``transformers`` library:

``ast``
    Audio Spectrogram Transformer (Gong, Chung and Glass, Interspeech 2021),
    ``MIT/ast-finetuned-audioset-10-10-0.4593``, 16 kHz, 768-d. The front end is
    reimplemented here in torch (:func:`kaldi_fbank`, :func:`ast_input_values`), so no
    torchaudio is needed; it reproduces ``ASTFeatureExtractor``.
``wav2vec2``
    wav2vec 2.0 base (Baevski et al., NeurIPS 2020), ``facebook/wav2vec2-base``, 16 kHz,
    768-d, self-supervised on LibriSpeech; the raw waveform, normalised to zero mean and
    unit variance per clip, goes in.

``transformers`` is imported only when a network is built, so soundwatch works without
it; building one without it raises a :class:`~soundwatch.errors.ConfigError` saying
``pip install soundwatch[hf]``.

Weights are found in this order (as for the single-file checkpoints, see
:mod:`soundwatch.encoders.download`):

1. ``weights=FOLDER`` (``--weights`` on the command line): a folder in Hugging Face
   format, ``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin`` (what
   ``save_pretrained`` or ``huggingface-cli download <hub id> --local-dir FOLDER`` writes);
2. ``$SOUNDWATCH_AST_WEIGHTS`` / ``$SOUNDWATCH_WAV2VEC2_WEIGHTS``: such a folder;
3. the Hugging Face hub id, from the local Hugging Face cache or downloaded when online.
   With ``HF_HUB_OFFLINE=1`` only the cache is tried. If nothing works, a one-line
   :class:`~soundwatch.errors.ModelFileError` names the hub id and the folder options.

For tests and offline experiments, ``weights="random-small"`` builds a tiny randomly
initialised network (hidden size 32, 2 layers; deterministic given ``seed``), and
``config=`` builds a random network of any configuration (a dict of config fields or a
``transformers`` config object)::

    encoder = ENCODERS.create("ast", weights="random-small")
    frames = encoder.frame_embeddings(waveforms_16k)  # (batch, n_frames, 32)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import torch

from soundwatch.encoders.base import Encoder
from soundwatch.encoders.digests import file_digests
from soundwatch.encoders.download import first_line
from soundwatch.encoders.efficientat import kaldi_mel_filterbank
from soundwatch.encoders.registry import ENCODERS
from soundwatch.errors import ConfigError, ModelFileError

#: ``weights`` value that builds a tiny randomly initialised network (tests, offline).
RANDOM_SMALL = "random-small"
#: Files that can hold the weights of a Hugging Face model folder, in preference order.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: What to run when ``transformers`` is missing.
INSTALL_HINT = "pip install soundwatch[hf]"

#: AudioSet statistics of the AST fbank, as in ``ASTFeatureExtractor``.
AST_MEAN = -4.2677393
AST_STD = 4.5689974
#: Epsilon of wav2vec 2.0's zero-mean unit-variance normalisation (``Wav2Vec2FeatureExtractor``).
WAV2VEC2_NORM_EPS = 1e-7
#: Strides of wav2vec 2.0's convolutional feature encoder (``config.conv_stride``).
WAV2VEC2_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def import_transformers() -> ModuleType:
    """The ``transformers`` module; ConfigError with the install command when missing."""
    try:
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"this encoder needs the optional dependency 'transformers' ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return transformers


def _hub_offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; read the environment too, so
    # setting it later (tests, notebooks) still avoids ~30 s of connection retries.
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    if any(f and f.strip().lower() in {"1", "true", "yes", "on"} for f in flags):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Hugging Face model folder (config.json and a weights file)."""
    folder = Path(path).expanduser()
    return (folder / "config.json").is_file() and any(
        (folder / name).is_file() for name in HF_WEIGHT_FILES
    )


# ------------------------------------------------------------------------------------------
# AST front end
# ------------------------------------------------------------------------------------------


def kaldi_fbank(
    waveforms: torch.Tensor,
    sample_rate: int = 16000,
    n_mels: int = 128,
    *,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> torch.Tensor:
    """Kaldi log-mel filterbank features, as ``torchaudio.compliance.kaldi.fbank``.

    Kaldi's definition with torchaudio's defaults (those AST was trained with): frames
    of 25 ms every 10 ms without padding (``snip_edges``), no dither, per-frame DC offset
    removal, pre-emphasis ``x[n] - 0.97 x[n-1]`` (the first sample against itself),
    symmetric Hann window, zero-padding to the next power of two (512 at 16 kHz), power
    spectrum, triangular filters on the Kaldi mel scale ``1127 ln(1 + f / 700)`` from
    ``low_freq`` to ``high_freq`` (<= 0 means Nyquist minus ``|high_freq|``), then
    ``log(max(energy, float32 eps))``. Waveforms are in [-1, 1] (AST's feature extractor
    does not rescale them to 16-bit integers).

    Parameters
    ----------
    waveforms : torch.Tensor of shape (batch, n_samples), float
    sample_rate : int
    n_mels : int
    frame_length_ms, frame_shift_ms : float
    preemphasis : float
    low_freq, high_freq : float

    Returns
    -------
    torch.Tensor of shape (batch, n_frames, n_mels)
        float32 (float64 for float64 input); ``n_frames = 1 + (n_samples - frame_length)
        // frame_shift``.
    """
    if waveforms.dim() != 2:
        raise ConfigError(f"expected waveforms (batch, samples), got {tuple(waveforms.shape)}")
    window_size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if waveforms.shape[1] < window_size:
        raise ConfigError(
            f"clip of {waveforms.shape[1]} samples is shorter than one {frame_length_ms} ms "
            f"fbank frame ({window_size} samples)"
        )
    n_fft = 1 << (window_size - 1).bit_length()
    nyquist = sample_rate / 2
    top = high_freq if high_freq > 0 else nyquist + high_freq
    # float32 like torchaudio; float64 input stays float64 (reference comparisons).
    x = waveforms if waveforms.dtype == torch.float64 else waveforms.to(torch.float32)
    frames = x.unfold(1, window_size, shift)  # (batch, n_frames, window_size), a view
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - preemphasis * previous
    window = torch.hann_window(window_size, periodic=False, dtype=x.dtype, device=x.device)
    spectrum = torch.fft.rfft(frames * window, n=n_fft)
    power = spectrum.real.square() + spectrum.imag.square()
    banks = kaldi_mel_filterbank(n_mels, n_fft, sample_rate, low_freq, top).to(x.device, x.dtype)
    energies = torch.matmul(power, banks.T)
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


def ast_input_values(
    waveforms: torch.Tensor,
    max_length: int = 1024,
    num_mel_bins: int = 128,
    sample_rate: int = 16000,
) -> torch.Tensor:
    """AST model input of 10.24 s chunks: what ``ASTFeatureExtractor`` gives per chunk.

    The fbank (:func:`kaldi_fbank`) is split into consecutive chunks of ``max_length``
    frames; the last chunk is zero-padded (in the log domain, before normalisation, as
    the feature extractor does), and every value becomes ``(x - mean) / (2 std)`` with
    the AudioSet statistics (-4.2677393, 4.5689974). A clip of at most ``max_length``
    frames (10.24 s by default) is exactly one chunk, identical to the extractor's
    output; the extractor would truncate longer clips, which are chunked here instead.

    Parameters
    ----------
    waveforms : torch.Tensor of shape (batch, n_samples)
    max_length : int
        Frames per chunk (the model's ``config.max_length``).

    Returns
    -------
    input_values : torch.Tensor of shape (batch * n_chunks, max_length, num_mel_bins)
        Chunks of one clip are consecutive.
    n_frames : int
        Real (unpadded) fbank frames per clip.
    """
    fbank = kaldi_fbank(waveforms, sample_rate, num_mel_bins)
    batch, n_frames, _ = fbank.shape
    n_chunks = max(1, math.ceil(n_frames / max_length))
    fbank = torch.nn.functional.pad(fbank, (0, 0, 0, n_chunks * max_length - n_frames))
    values = (fbank - AST_MEAN) / (2.0 * AST_STD)
    return values.reshape(batch * n_chunks, max_length, num_mel_bins), n_frames


# ------------------------------------------------------------------------------------------
# Encoders
# ------------------------------------------------------------------------------------------


class HFEncoder(Encoder):
    """Base of encoders backed by a ``transformers`` model (not registered itself).

    Parameters
    ----------
    weights : str or None
        A Hugging Face model folder, ``"random-small"``, or None for the environment
        variable or the hub (see the module docstring).
    device, batch_size
        See :class:`~soundwatch.encoders.base.Encoder`.
    config : dict or transformers config, optional
        Build a randomly initialised network of this configuration instead of loading
        weights: a dict of fields for the model's config class (unset fields keep the
        ``transformers`` defaults, i.e. the base architecture) or a config object.
        Excludes ``weights``.
    seed : int, default=0
        Seed of the random initialisation (``"random-small"`` or ``config``); the global
        torch random state is left untouched.

    Attributes
    ----------
    hub_id : str
        Hugging Face hub id of the default weights.
    weights_env : str
        Environment variable naming a weights folder.
    frame_seconds : float
        Seconds between consecutive frame embeddings: the class value is that of the
        default architecture; an instance sets its own from the configuration it uses
        (see :meth:`_frame_period`).
    """

    hub_id: ClassVar[str] = ""
    weights_env: ClassVar[str] = ""
    model_class: ClassVar[str] = ""
    config_class: ClassVar[str] = ""
    small_config: ClassVar[dict[str, Any]] = {}
    sample_rate = 16000
    embedding_dim = 768

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        *,
        config: Any = None,
        seed: int = 0,
    ) -> None:
        if config is not None and weights is not None:
            raise ConfigError(f"{self.name}: give either weights or config, not both")
        super().__init__(weights, device, batch_size)
        self.seed = int(seed)
        self.config = config
        if weights == RANDOM_SMALL:
            self.config = dict(self.small_config)
        # The dimension is known before loading wherever it is cheap to know, so cache
        # keys and empty results need no network.
        hidden = self._config_field("hidden_size")
        if hidden is not None:
            self.embedding_dim = int(hidden)
        self.frame_seconds = self._frame_period(self._config_field)

    # ----------------------------------------------------------------- configuration
    def _config_field(self, key: str) -> Any:
        """A field of the configuration that will be used, if known without loading."""
        if isinstance(self.config, dict):
            return self.config.get(key)
        if self.config is not None:
            return getattr(self.config, key, None)
        folder = self._local_folder(strict=False)
        if folder is not None:
            try:
                return json.loads((folder / "config.json").read_text()).get(key)
            except (OSError, ValueError):
                return None
        return None

    @property
    def is_random(self) -> bool:
        """Whether the network is randomly initialised (``random-small`` or ``config``)."""
        return self.config is not None

    def _local_folder(self, strict: bool = True) -> Path | None:
        """The weights folder from ``weights`` or the environment; None means the hub.

        With ``strict``, a named folder that is not a Hugging Face model folder raises
        ModelFileError (a set but wrong path is a mistake, not a reason to download).
        """
        if self.is_random:
            return None
        if self.weights is not None:
            source, path = "weights", Path(self.weights).expanduser()
        elif os.environ.get(self.weights_env):
            source = f"${self.weights_env}"
            path = Path(os.environ[self.weights_env]).expanduser()
        else:
            return None
        if is_hf_folder(path):
            return path
        if strict:
            raise ModelFileError(
                f"{self.name}: {source}={path} is not a Hugging Face model folder "
                f"(expected config.json and {' or '.join(HF_WEIGHT_FILES)} in it)"
            )
        return None

    # ----------------------------------------------------------------- loading
    def _load(self) -> None:
        transformers = import_transformers()
        model_cls = getattr(transformers, self.model_class)
        if self.is_random:
            config = self.config
            if isinstance(config, dict):
                config = getattr(transformers, self.config_class)(**config)
            # fork_rng: a seeded random network without touching the caller's RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = model_cls(config)
        else:
            model = self._from_pretrained(model_cls)
        # float(): checkpoints may be stored in half precision; embeddings are float32.
        self.model = model.float().to(self.device).eval()
        self.embedding_dim = int(self.model.config.hidden_size)
        self.frame_seconds = self._frame_period(lambda key: getattr(self.model.config, key, None))
        self._configure(self.model.config)

    def _from_pretrained(self, model_cls: Any) -> Any:
        folder = self._local_folder(strict=True)
        if folder is not None:
            try:
                return model_cls.from_pretrained(str(folder), local_files_only=True)
            except Exception as exc:  # transformers raises many types for bad folders
                raise ModelFileError(
                    f"{self.name}: cannot load {self.model_class} from {folder}: {first_line(exc)}"
                ) from exc
        offline = _hub_offline()
        try:
            return model_cls.from_pretrained(self.hub_id, local_files_only=offline)
        except Exception as exc:  # offline, unreachable hub, missing repo, corrupt cache
            how = "offline mode, not in the Hugging Face cache" if offline else first_line(exc)
            raise ModelFileError(
                f"{self.name}: cannot load {self.hub_id} from the Hugging Face hub ({how}); "
                f"download it elsewhere with `huggingface-cli download {self.hub_id} "
                f"--local-dir FOLDER`, then pass --param weights=FOLDER or set "
                f"{self.weights_env}=FOLDER"
            ) from exc

    def _configure(self, config: Any) -> None:
        """Read what :meth:`_frames` needs from the loaded model's config."""

    def _frame_period(self, field: Callable[[str], Any]) -> float:
        """Seconds between frame embeddings of a configuration.

        ``field(key)`` is the configuration's value of ``key``, or None when unknown
        (then the default architecture's value applies).
        """
        return type(self).frame_seconds

    # ----------------------------------------------------------------- weights
    @classmethod
    def local_weights(cls) -> Path | None:
        """The env folder, else the hub snapshot in the local Hugging Face cache; else None."""
        env = os.environ.get(cls.weights_env)
        if env and is_hf_folder(env):
            return Path(env).expanduser()
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        try:
            found = try_to_load_from_cache(cls.hub_id, "config.json")
        except Exception:  # a malformed cache is "not available", never a crash
            return None
        if isinstance(found, str) and is_hf_folder(Path(found).parent):
            return Path(found).parent
        return None

    @classmethod
    def weights_available(cls, weights: str | os.PathLike | None = None) -> bool:
        if weights is not None:
            return str(weights) == RANDOM_SMALL or is_hf_folder(weights)
        return cls.local_weights() is not None

    def weights_identity(self) -> str | None:
        """``random:<config digest>:seed<n>``, the SHA-256 of a folder's config and
        weights files, or ``hub:<hub id>`` for the default hub weights."""
        if self.is_random:
            config = self.config if isinstance(self.config, dict) else self.config.to_dict()
            text = json.dumps(config, sort_keys=True, default=str)
            return f"random:{hashlib.sha256(text.encode()).hexdigest()[:16]}:seed{self.seed}"
        folder = self._local_folder(strict=True)
        if folder is None:
            return f"hub:{self.hub_id}"
        weights_file = next(folder / n for n in HF_WEIGHT_FILES if (folder / n).is_file())
        digests = [file_digests(folder / "config.json")[0], file_digests(weights_file)[0]]
        return hashlib.sha256(":".join(digests).encode()).hexdigest()

    def __repr__(self) -> str:
        extra = ", config=..." if self.config is not None and self.weights is None else ""
        return f"{super().__repr__()[:-1]}{extra})"


@ENCODERS.register
class ASTEncoder(HFEncoder):
    """Audio Spectrogram Transformer (AudioSet fine-tuned), 16 kHz, 768-d.

    Input: Kaldi fbank (128 bins, 25 ms window, 10 ms shift) normalised as AST's feature
    extractor does, in chunks of ``max_length`` = 1024 frames (10.24 s; see
    :func:`ast_input_values`). AST cuts each chunk into 16 x 16 patches with stride 10 in
    both axes (12 frequency x 101 time patches) and adds a CLS and a distillation token.

    Frame embeddings (``output``):

    ``"time"`` (default)
        The last hidden state of the patch tokens averaged over the 12 frequency patches
        of each time step: one embedding per 10 fbank frames (0.1 s), e.g. 100 for a
        10 s clip. Time patches lying wholly in a chunk's padding are dropped; the
        frames of a chunk's last 8 frames are seen by no patch start (AST's geometry).
    ``"tokens"``
        The whole sequence of token states per chunk, (2 + 12 x 101) tokens including
        CLS and distillation token, chunks concatenated. Padding tokens are kept.

    Parameters
    ----------
    output : {"time", "tokens"}, default="time"
    weights, device, batch_size, config, seed
        See :class:`HFEncoder`.
    """

    name = "ast"
    summary = "Audio Spectrogram Transformer (AudioSet, HF transformers), 768-d, 16 kHz"
    hub_id = "MIT/ast-finetuned-audioset-10-10-0.4593"
    weights_env = "SOUNDWATCH_AST_WEIGHTS"
    model_class = "ASTModel"
    config_class = "ASTConfig"
    small_config = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_length": 100,
        "num_mel_bins": 128,
    }
    OUTPUTS = ("time", "tokens")
    # One time patch per ``time_stride`` (10) fbank frames of 10 ms.
    frame_seconds = 0.010 * 10

    def __init__(self, *args: Any, output: str = "time", **kwargs: Any) -> None:
        if output not in self.OUTPUTS:
            raise ConfigError(f"{self.name}: output must be one of {self.OUTPUTS}, got {output!r}")
        super().__init__(*args, **kwargs)
        self.output = output

    def _frame_period(self, field: Callable[[str], Any]) -> float:
        return 0.010 * (field("time_stride") or 10)

    def _configure(self, config: Any) -> None:
        patch = config.patch_size
        # A non-square patch is a pair in some configs; AST's conv uses (patch, patch).
        patch_f, patch_t = (patch, patch) if isinstance(patch, int) else tuple(patch)
        self._max_length = int(config.max_length)
        self._num_mel_bins = int(config.num_mel_bins)
        self._time_stride = int(config.time_stride)
        self._n_freq = (config.num_mel_bins - patch_f) // config.frequency_stride + 1
        self._n_time = (config.max_length - patch_t) // config.time_stride + 1

    def _frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        values, n_frames = ast_input_values(
            waveforms, self._max_length, self._num_mel_bins, self.sample_rate
        )
        hidden = self.model(input_values=values).last_hidden_state  # (B * chunks, 2 + F*T, D)
        batch, dim = waveforms.shape[0], hidden.shape[-1]
        if self.output == "tokens":
            return hidden.reshape(batch, -1, dim)
        n_chunks = hidden.shape[0] // batch
        # Patch tokens come frequency-major (index f * n_time + t) from the patch conv.
        patches = hidden[:, 2:].reshape(-1, self._n_freq, self._n_time, dim).mean(dim=1)
        patches = patches.reshape(batch, n_chunks * self._n_time, dim)
        # Keep time patches that start on a real frame: full chunks keep all of theirs.
        last_real = n_frames - (n_chunks - 1) * self._max_length
        last_kept = min(self._n_time, math.ceil(last_real / self._time_stride))
        return patches[:, : (n_chunks - 1) * self._n_time + last_kept]

    def cache_params(self) -> dict[str, Any]:
        return {**super().cache_params(), "output": self.output}


@ENCODERS.register
class Wav2Vec2Encoder(HFEncoder):
    """wav2vec 2.0 base (self-supervised on LibriSpeech 960 h), 16 kHz, 768-d.

    Input: the raw waveform normalised per clip to zero mean and unit variance
    (``(x - mean) / sqrt(var + 1e-7)``, as ``Wav2Vec2FeatureExtractor``). Frame
    embeddings: the transformer's last hidden state, one 768-d vector per 20 ms
    (320 samples; 499 frames for a 10 s clip). The network runs in eval mode, so no
    time masking is applied.

    Parameters
    ----------
    weights, device, batch_size, config, seed
        See :class:`HFEncoder`.
    """

    name = "wav2vec2"
    summary = "wav2vec 2.0 base (LibriSpeech, HF transformers), 768-d, 16 kHz, 20 ms frames"
    hub_id = "facebook/wav2vec2-base"
    weights_env = "SOUNDWATCH_WAV2VEC2_WEIGHTS"
    model_class = "Wav2Vec2Model"
    config_class = "Wav2Vec2Config"
    small_config = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": [32] * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
    }
    # One frame per product of the feature encoder's convolution strides (320 samples).
    frame_seconds = math.prod(WAV2VEC2_CONV_STRIDES) / 16000

    def _frame_period(self, field: Callable[[str], Any]) -> float:
        return math.prod(field("conv_stride") or WAV2VEC2_CONV_STRIDES) / self.sample_rate

    def _configure(self, config: Any) -> None:
        # Shortest input giving one frame: invert the conv stack's length arithmetic.
        length = 1
        layers = list(zip(config.conv_kernel, config.conv_stride, strict=True))
        for kernel, stride in reversed(layers):
            length = (length - 1) * stride + kernel
        self._min_samples = length

    def _frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.shape[1] < self._min_samples:
            raise ConfigError(
                f"{self.name}: clip of {waveforms.shape[1]} samples is shorter than one "
                f"frame ({self._min_samples} samples)"
            )
        x = waveforms.to(torch.float32)
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        x = (x - mean) / torch.sqrt(var + WAV2VEC2_NORM_EPS)
        return self.model(input_values=x).last_hidden_state
