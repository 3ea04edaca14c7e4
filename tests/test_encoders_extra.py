"""PANNs Cnn14, VGGish and ResNet-50 encoders, and the generic checkpoint handling.

No test downloads anything: every network runs with random weights (``weights="random"``)
or from a random checkpoint written in the official format, and the checkpoint layouts
are checked against key/shape tables written here from the published definitions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from soundwatch.data.datasets import discover
from soundwatch.detectors import embedding  # noqa: F401  (registration)
from soundwatch.detectors.registry import create
from soundwatch.encoders import download, panns, resnet, vggish  # also registers them
from soundwatch.encoders import registry as encoder_registry
from soundwatch.encoders.base import Encoder
from soundwatch.encoders.download import (
    RANDOM_WEIGHTS,
    download_checkpoint,
    find_local_checkpoint,
    hub_hash_prefix,
    load_state_dict,
    resolve_checkpoint,
    verify_checkpoint,
    weights_cache_dir,
    weights_env_var,
)
from soundwatch.encoders.registry import ENCODERS
from soundwatch.errors import ModelFileError

NAMES = ["panns-cnn14", "panns-cnn14-16k", "vggish", "resnet50-imagenet"]
OFFLINE_URL = "http://127.0.0.1:9/x"


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture()
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and XDG cache, with every weights env var unset."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for name in NAMES:
        monkeypatch.delenv(weights_env_var(name), raising=False)
    return tmp_path / "xdg" / "soundwatch" / "weights"


@pytest.fixture(scope="module")
def random_encoders() -> dict[str, Encoder]:
    """Encoders with random weights, built once per module on first use."""
    return {}


def random_encoder(cache: dict[str, Encoder], name: str) -> Encoder:
    if name not in cache:
        cache[name] = ENCODERS.create(name, weights=RANDOM_WEIGHTS).load()
    return cache[name]


@pytest.fixture(scope="module")
def checkpoints(random_encoders: dict, tmp_path_factory: pytest.TempPathFactory):
    """Official-format checkpoints of the random networks, written on first use.

    Yields a function ``name -> path``. The files are hundreds of MB: they are deleted
    when the module is done, as are the encoders the detector cached for them.
    """
    folder = tmp_path_factory.mktemp("checkpoints")
    paths: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in paths:
            encoder = random_encoder(random_encoders, name)
            state = encoder.network.state_dict()
            # PANNs files wrap the state dict beside the training state.
            if encoder.checkpoint.key:
                state = {"iteration": 0, encoder.checkpoint.key: state}
            paths[name] = folder / f"random-{name}.pth"  # not the release name: a custom file
            torch.save(state, paths[name])
        return paths[name]

    yield get
    encoder_registry._cached_encoder.cache_clear()
    for path in paths.values():
        path.unlink()


def shared_encoder(name: str, path: Path) -> Encoder:
    """The encoder instance ``create("embedding", encoder=name, weights=path)`` will use.

    Detectors share one encoder per (name, weights, device, batch size); taking it from
    the same cache builds and loads each large network once for all tests.
    """
    return encoder_registry.shared_encoder(name, str(path), "cpu", 8)


def noise(encoder: Encoder, seconds: float, batch: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * encoder.sample_rate)
    return (0.1 * rng.standard_normal((batch, n))).astype(np.float32)


# ------------------------------------------------------------------ published layouts


def bn(prefix: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    c = (channels,)
    return [
        (f"{prefix}.weight", c),
        (f"{prefix}.bias", c),
        (f"{prefix}.running_mean", c),
        (f"{prefix}.running_var", c),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def cnn14_layout(n_fft: int) -> list[tuple[str, tuple[int, ...]]]:
    """audioset_tagging_cnn ``Cnn14``/``Cnn14_16k`` with torchlibrosa's front end."""
    bins = n_fft // 2 + 1
    keys = [
        ("spectrogram_extractor.stft.conv_real.weight", (bins, 1, n_fft)),
        ("spectrogram_extractor.stft.conv_imag.weight", (bins, 1, n_fft)),
        ("logmel_extractor.melW", (bins, 64)),
        *bn("bn0", 64),
    ]
    channels = [1, 64, 128, 256, 512, 1024, 2048]
    for i in range(1, 7):
        c_in, c_out = channels[i - 1], channels[i]
        keys += [
            (f"conv_block{i}.conv1.weight", (c_out, c_in, 3, 3)),
            (f"conv_block{i}.conv2.weight", (c_out, c_out, 3, 3)),
            *bn(f"conv_block{i}.bn1", c_out),
            *bn(f"conv_block{i}.bn2", c_out),
        ]
    keys += [
        ("fc1.weight", (2048, 2048)),
        ("fc1.bias", (2048,)),
        ("fc_audioset.weight", (527, 2048)),
        ("fc_audioset.bias", (527,)),
    ]
    return keys


def vggish_layout() -> list[tuple[str, tuple[int, ...]]]:
    """torchvggish ``VGG(make_layers())``: convolutions at these Sequential indices."""
    convs = {0: (1, 64), 3: (64, 128), 6: (128, 256), 8: (256, 256), 11: (256, 512), 13: (512, 512)}
    keys = []
    for index, (c_in, c_out) in convs.items():
        keys += [
            (f"features.{index}.weight", (c_out, c_in, 3, 3)),
            (f"features.{index}.bias", (c_out,)),
        ]
    for index, (n_in, n_out) in {0: (12288, 4096), 2: (4096, 4096), 4: (4096, 128)}.items():
        keys += [
            (f"embeddings.{index}.weight", (n_out, n_in)),
            (f"embeddings.{index}.bias", (n_out,)),
        ]
    return keys


def resnet50_layout() -> list[tuple[str, tuple[int, ...]]]:
    """torchvision ``resnet50()``."""
    keys = [("conv1.weight", (64, 3, 7, 7)), *bn("bn1", 64)]
    c_in = 64
    for layer, (blocks, width) in enumerate(
        zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True), start=1
    ):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            keys += [
                (f"{p}.conv1.weight", (width, c_in, 1, 1)),
                *bn(f"{p}.bn1", width),
                (f"{p}.conv2.weight", (width, width, 3, 3)),
                *bn(f"{p}.bn2", width),
                (f"{p}.conv3.weight", (4 * width, width, 1, 1)),
                *bn(f"{p}.bn3", 4 * width),
            ]
            if b == 0:
                keys += [(f"{p}.downsample.0.weight", (4 * width, c_in, 1, 1))]
                keys += bn(f"{p}.downsample.1", 4 * width)
            c_in = 4 * width
    return keys + [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]


LAYOUTS = {
    "panns-cnn14": lambda: cnn14_layout(1024),
    "panns-cnn14-16k": lambda: cnn14_layout(512),
    "vggish": vggish_layout,
    "resnet50-imagenet": resnet50_layout,
}
# (first key, last key, number of keys) spot checks, independent of the tables above.
SPOT_CHECKS = {
    "panns-cnn14": ("spectrogram_extractor.stft.conv_real.weight", "fc_audioset.bias", 84),
    "panns-cnn14-16k": ("spectrogram_extractor.stft.conv_real.weight", "fc_audioset.bias", 84),
    "vggish": ("features.0.weight", "embeddings.4.bias", 18),
    "resnet50-imagenet": ("conv1.weight", "fc.bias", 320),
}
# Clip length (s) and expected frames per clip, from each encoder's documented arithmetic:
# Cnn14: 1 + n // hop = 101 STFT frames, halved five times -> 3; VGGish: 2 s -> 198
# frames -> 2 examples of 96; ResNet: 1 + 16000 // 320 = 51 frames, halved (rounding up)
# five times -> 2.
FRAMES = {
    "panns-cnn14": (1.0, 3),
    "panns-cnn14-16k": (1.0, 3),
    "vggish": (2.0, 2),
    "resnet50-imagenet": (1.0, 2),
}


# ------------------------------------------------------------------------ the encoders


def test_registered_with_metadata() -> None:
    expected = {
        "panns-cnn14": (32000, 2048),
        "panns-cnn14-16k": (16000, 2048),
        "vggish": (16000, 128),
        "resnet50-imagenet": (16000, 2048),
    }
    for name, (rate, dim) in expected.items():
        cls = ENCODERS.get(name)
        assert (cls.sample_rate, cls.embedding_dim, cls.requires_weights) == (rate, dim, True)
        assert cls.summary and cls.env_var() == weights_env_var(name)
    # Both Cnn14 front ends hop 10 ms: one frame embedding per 32 hops.
    for name in ("panns-cnn14", "panns-cnn14-16k"):
        cls = ENCODERS.get(name)
        assert cls.frame_seconds == pytest.approx(32 * cls.hop_length / cls.sample_rate)
    assert ENCODERS.get("vggish").frame_seconds == pytest.approx(0.96)
    assert ENCODERS.get("resnet50-imagenet").frame_seconds == pytest.approx(0.64)
    assert weights_env_var("panns-cnn14-16k") == "SOUNDWATCH_PANNS_CNN14_16K_WEIGHTS"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_frame_shapes_and_batching(name: str, random_encoders: dict) -> None:
    encoder = random_encoder(random_encoders, name)
    seconds, n_frames = FRAMES[name]
    x = noise(encoder, seconds)
    frames = encoder.frame_embeddings(x)
    assert frames.shape == (2, n_frames, encoder.embedding_dim)
    assert frames.dtype == np.float32 and np.isfinite(frames).all()
    # frame_seconds is the spacing of the frames: they span the clip to within one.
    assert abs(n_frames * encoder.frame_seconds - seconds) < encoder.frame_seconds
    # Each clip's embeddings do not depend on the rest of the batch (eval-mode BN).
    singles = np.concatenate([encoder.frame_embeddings(x[i : i + 1]) for i in range(2)])
    np.testing.assert_allclose(singles, frames, rtol=1e-4, atol=1e-5 * np.abs(frames).max())
    assert not np.allclose(frames[0], frames[1])  # different clips, different embeddings


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_short_clips_are_padded(name: str, random_encoders: dict) -> None:
    encoder = random_encoder(random_encoders, name)
    frames = encoder.frame_embeddings(noise(encoder, 0.05, batch=1))
    assert frames.shape == (1, 1, encoder.embedding_dim) and np.isfinite(frames).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_matches_published_layout(name: str, random_encoders: dict) -> None:
    state = random_encoder(random_encoders, name).network.state_dict()
    found = [(k, tuple(v.shape)) for k, v in state.items()]
    assert found == LAYOUTS[name]()
    first, last, count = SPOT_CHECKS[name]
    assert (found[0][0], found[-1][0], len(found)) == (first, last, count)


@pytest.mark.slow
def test_parameter_counts_match_published_ones(random_encoders: dict) -> None:
    def n_params(name: str, skip: tuple[str, ...] = ()) -> int:
        net = random_encoder(random_encoders, name).network
        return sum(p.numel() for k, p in net.named_parameters() if not k.startswith(skip))

    assert n_params("resnet50-imagenet") == 25_557_032  # torchvision's ResNet50_Weights meta
    # Cnn14's 80.8 M parameters (PANNs, Table 2), the frozen front end excluded.
    front_end = ("spectrogram_extractor", "logmel_extractor")
    assert n_params("panns-cnn14", front_end) == 80_753_615
    assert n_params("panns-cnn14-16k", front_end) == 80_753_615
    assert n_params("vggish") == 72_141_184  # 4.5 M in convolutions, 67.6 M in the MLP


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_official_format_checkpoint_loads_strict(
    name: str, random_encoders: dict, checkpoints, isolated_cache: Path
) -> None:
    path = checkpoints(name)
    reference = random_encoder(random_encoders, name)
    loaded = shared_encoder(name, path)
    assert loaded.resolve() == path  # the local-file path: no download, no cache
    loaded.load()  # strict=True
    for key, value in reference.network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key
    x = noise(reference, 0.5, batch=1, seed=1)
    np.testing.assert_allclose(
        loaded.frame_embeddings(x), reference.frame_embeddings(x), rtol=1e-5, atol=1e-6
    )
    # Cache keys: an explicit file is identified by its content, random weights by seed.
    assert loaded.weights_identity() == download.file_digests(path)[0]
    assert reference.weights_identity() == "random-0"
    assert not isolated_cache.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_detector_pipeline_end_to_end(
    name: str, checkpoints, slider_mini: Path, isolated_cache: Path
) -> None:
    path = checkpoints(name)
    train = discover(slider_mini, "slider", "train")[:8]
    test = discover(slider_mini, "slider", "test")[2:5]  # one anomalous, two normal
    # Half-second crops keep the CPU time of four large networks small, and the
    # mean-distance scorer needs no inverse of a 2048 x 2048 covariance.
    detector = create(
        "embedding", encoder=name, weights=str(path), scorer="mean-distance", duration=0.5
    )
    scores = detector.fit(train).score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    assert detector.get_encoder() is shared_encoder(name, path)


@pytest.mark.slow
def test_wrong_architecture_is_a_one_line_error(tmp_path: Path, random_encoders: dict) -> None:
    state = random_encoder(random_encoders, "vggish").network.state_dict()
    state.pop("embeddings.4.bias")
    state["embeddings.4.weight"] = torch.zeros(64, 4096)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ModelFileError, match="does not fit vggish") as info:
        ENCODERS.create("vggish", weights=str(path)).load()
    message = str(info.value)
    assert "1 missing (e.g. embeddings.4.bias)" in message and "1 shape" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", NAMES)
def test_offline_error_names_url_and_where_to_put_the_file(
    name: str, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = ENCODERS.get(name)
    monkeypatch.setattr(cls, "checkpoint", dataclasses.replace(cls.checkpoint, url=OFFLINE_URL))
    assert cls.local_weights() is None and not cls.weights_available()
    assert cls.weights_available(RANDOM_WEIGHTS)
    with pytest.raises(ModelFileError) as info:
        ENCODERS.create(name).load()
    message = str(info.value)
    file_name = cls.checkpoint.file_name
    assert message.startswith(f"cannot download {name} weights {file_name} from {OFFLINE_URL} (")
    assert "--param weights=PATH" in message and cls.env_var() in message
    assert str(isolated_cache) in message and "\n" not in message
    assert list(isolated_cache.iterdir()) == []  # no partial file left behind


def test_official_urls_and_checksums() -> None:
    specs = {name: ENCODERS.get(name).checkpoint for name in NAMES}
    assert specs["panns-cnn14"].url.startswith("https://zenodo.org/records/3987831/files/Cnn14_")
    assert specs["panns-cnn14-16k"].key == "model" and specs["vggish"].key is None
    for name, spec in specs.items():
        assert spec.url.startswith("https://") and len(spec.sha256) == 64, name
        prefix = hub_hash_prefix(spec.file_name)
        # torch hub files: the name's hex is the start of the full SHA-256.
        assert prefix is None or spec.sha256.startswith(prefix), name
    assert hub_hash_prefix("resnet50-0676ba61.pth") == "0676ba61"
    assert hub_hash_prefix("Cnn14_mAP=0.431.pth") is None


# ------------------------------------------------------------------------- front ends


@pytest.mark.slow
def test_panns_front_end_matches_librosa(random_encoders: dict) -> None:
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    configs = {"panns-cnn14": (32000, 1024, 320, 14000), "panns-cnn14-16k": (16000, 512, 160, 8000)}
    for name, (sr, n_fft, hop, fmax) in configs.items():
        net = random_encoder(random_encoders, name).network
        assert isinstance(net, panns.Cnn14)
        x = (0.1 * rng.standard_normal(sr // 4)).astype(np.float32)
        with torch.no_grad():
            ours = net.logmel(torch.from_numpy(x)[None])[0, 0].numpy()
        power = (
            np.abs(
                librosa.stft(x.astype(np.float64), n_fft=n_fft, hop_length=hop, pad_mode="reflect")
            )
            ** 2
        )
        mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=64, fmin=50, fmax=fmax)
        ref = librosa.power_to_db(mel @ power, ref=1.0, amin=1e-10, top_db=None).T
        assert ours.shape == ref.shape == (1 + len(x) // hop, 64)
        np.testing.assert_allclose(ours, ref, atol=1e-3)
        np.testing.assert_allclose(net.logmel_extractor.melW.numpy(), mel.T, atol=1e-7)


def test_vggish_front_end_follows_the_tensorflow_recipe() -> None:
    mel = vggish.vggish_mel_matrix()
    assert mel.shape == (257, 64) and not mel[0].any()
    freqs = np.linspace(0, 8000, 257)
    used = freqs[mel.any(axis=1)]
    assert used.min() > 125 and used.max() < 7500
    assert np.all(mel.max(axis=0) > 0.5) and mel.max() <= 1.0
    # A 1 kHz tone lands in the band whose HTK-mel centre is nearest 1 kHz.
    t = np.arange(16000) / 16000
    tone = torch.from_numpy(np.sin(2 * np.pi * 1000 * t).astype(np.float32))[None]
    examples = vggish.VGGishFrontend()(tone)
    assert examples.shape == (1, 1, 96, 64)
    edges = np.linspace(vggish.hertz_to_mel_htk(125), vggish.hertz_to_mel_htk(7500), 66)
    nearest = np.argmin(np.abs(edges[1:-1] - vggish.hertz_to_mel_htk(1000)))
    assert int(examples[0, 0].mean(0).argmax()) == nearest
    # Framing: 10 s -> 998 frames -> 10 examples; shorter than one example -> one.
    assert vggish.VGGishFrontend.n_examples(160000) == 10
    assert vggish.VGGishFrontend.n_examples(100) == 1


def test_vggish_front_end_matches_a_numpy_rendering_of_mel_features() -> None:
    # research/audioset/vggish/mel_features.py, step by step: unpadded 400-sample frames
    # every 160, periodic Hann, |rfft| with 512 points, HTK-mel triangles in the mel
    # domain with the DC bin zeroed, log(mel + 0.01), then 96-frame examples.
    x = np.random.default_rng(0).standard_normal(40000) * 0.1

    def frame(data: np.ndarray, width: int, hop: int) -> np.ndarray:
        return np.stack(
            [data[i * hop : i * hop + width] for i in range(1 + (len(data) - width) // hop)]
        )

    window = 0.5 - 0.5 * np.cos(2 * np.pi / 400 * np.arange(400))
    magnitude = np.abs(np.fft.rfft(frame(x, 400, 160) * window, 512))
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    bins, edges = mel(np.linspace(0, 8000, 257)), np.linspace(mel(125), mel(7500), 66)
    weights = np.zeros((257, 64))
    for i in range(64):
        lo, mid, hi = edges[i : i + 3]
        weights[:, i] = np.maximum(
            0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid))
        )
    weights[0] = 0.0
    expected = frame(np.log(magnitude @ weights + 0.01), 96, 96)
    ours = vggish.VGGishFrontend()(torch.from_numpy(x).float()[None])[0].numpy()
    assert ours.shape == expected.shape == (2, 96, 64)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    np.testing.assert_allclose(vggish.vggish_mel_matrix(), weights, atol=1e-6)


def test_resnet_image_scaling() -> None:
    frontend = resnet.LogMelImage()
    silence = frontend(torch.zeros(1, 16000))
    assert silence.shape == (1, 3, 128, 51)
    # Silence sits at the bottom of the dB range: 0 before ImageNet normalisation.
    expected = -torch.tensor(resnet.IMAGENET_MEAN) / torch.tensor(resnet.IMAGENET_STD)
    torch.testing.assert_close(silence[0, :, 0, 0], expected)
    loud = frontend(torch.ones(1, 16000))  # clipped at the top of the range
    assert float(loud[0, 0].max()) == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)


# ------------------------------------------------------------- checkpoint resolution


def test_verify_full_digest_prefix_and_md5(tmp_path: Path) -> None:
    path = tmp_path / "model-abc.pth"
    path.write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    md5 = hashlib.md5(b"weights").hexdigest()
    verify_checkpoint(path, path.name, sha, md5=md5)
    verify_checkpoint(path, path.name, sha[:8])
    # No digest given: torch hub's prefix in the file name is checked.
    verify_checkpoint(path, f"model-{sha[:8]}.pth", None)
    with pytest.raises(ModelFileError, match="sha256 prefix"):
        verify_checkpoint(path, "model-00000000.pth", None)
    with pytest.raises(ModelFileError, match=r"sha256 [0-9a-f]{64} != expected"):
        verify_checkpoint(path, path.name, "0" * 64)
    with pytest.raises(ModelFileError, match="md5"):
        verify_checkpoint(path, path.name, sha, md5="0" * 32)
    with pytest.warns(UserWarning, match="no checksum known"):
        verify_checkpoint(path, "model.pth", None)


def test_resolve_explicit_env_and_cache(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "w.pth"
    good.write_bytes(b"good")
    sha = hashlib.sha256(b"good").hexdigest()
    args = ("demo", "w.pth", OFFLINE_URL, sha)
    env = "SOUNDWATCH_DEMO_WEIGHTS"
    monkeypatch.delenv(env, raising=False)

    assert resolve_checkpoint(*args, weights=good) == good
    with pytest.raises(ModelFileError, match="not found"):
        resolve_checkpoint(*args, weights=tmp_path / "missing.pth")
    # A file under the release name is verified; under another name it is the user's own.
    bad = tmp_path / "bad" / "w.pth"
    bad.parent.mkdir()
    bad.write_bytes(b"bad")
    with pytest.raises(ModelFileError, match="sha256") as info:
        resolve_checkpoint(*args, weights=bad)
    assert "\n" not in str(info.value)
    custom = tmp_path / "fine-tuned.pth"
    custom.write_bytes(b"custom")
    assert resolve_checkpoint(*args, weights=custom) == custom

    monkeypatch.setenv(env, str(good))
    assert resolve_checkpoint(*args, env_var=env) == good
    assert find_local_checkpoint("w.pth", env) == good
    monkeypatch.setenv(env, str(tmp_path))  # a folder holding the release file
    assert resolve_checkpoint(*args, env_var=env) == good
    monkeypatch.setenv(env, str(tmp_path / "bad"))
    with pytest.raises(ModelFileError, match="sha256"):
        resolve_checkpoint(*args, env_var=env)
    monkeypatch.setenv(env, str(tmp_path / "empty"))
    with pytest.raises(ModelFileError, match=env):
        resolve_checkpoint(*args, env_var=env)
    monkeypatch.delenv(env)

    assert find_local_checkpoint("w.pth", env) is None
    assert weights_cache_dir() == isolated_cache
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "w.pth").write_bytes(b"good")
    # The unreachable URL proves that the cached file is used without a download.
    assert resolve_checkpoint(*args, env_var=env) == isolated_cache / "w.pth"
    assert find_local_checkpoint("w.pth", env) == isolated_cache / "w.pth"


def test_cache_identity_of_env_var_files(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = ENCODERS.get("vggish")
    assert ENCODERS.create("vggish").weights_identity() == "default"  # the pinned release
    custom = tmp_path / "my-vggish.pth"
    custom.write_bytes(b"fine-tuned")
    monkeypatch.setenv(cls.env_var(), str(custom))
    # An unverified file of another name must not share the release's cached embeddings.
    expected = hashlib.sha256(b"fine-tuned").hexdigest()
    assert ENCODERS.create("vggish").weights_identity() == expected
    assert cls.local_weights() == custom and cls.weights_available()


def test_download_verifies_and_never_leaves_partial_files(
    tmp_path: Path, isolated_cache: Path
) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload")
    sha = hashlib.sha256(b"payload").hexdigest()
    path = resolve_checkpoint("demo", "w.pth", source.as_uri(), sha)
    assert path == isolated_cache / "w.pth" and path.read_bytes() == b"payload"
    assert os.listdir(isolated_cache) == ["w.pth"]

    with pytest.raises(ModelFileError, match="corrupt and was deleted") as info:
        download_checkpoint("demo", "v.pth", source.as_uri(), "0" * 64)
    assert "\n" not in str(info.value)
    assert os.listdir(isolated_cache) == ["w.pth"]

    with pytest.warns(UserWarning, match="no checksum known"):
        download_checkpoint("demo", "u.pth", source.as_uri(), None)

    with pytest.raises(ModelFileError, match="SOUNDWATCH_DEMO_WEIGHTS") as info:
        resolve_checkpoint("demo", "t.pth", OFFLINE_URL, sha, env_var="SOUNDWATCH_DEMO_WEIGHTS")
    assert str(info.value).startswith(f"cannot download demo weights t.pth from {OFFLINE_URL} (")
    assert sorted(os.listdir(isolated_cache)) == ["u.pth", "w.pth"]


def test_load_state_dict_unwraps_panns_files_with_legacy_numpy_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy < 1.26
        pytest.skip("needs numpy._core")
    state = {"w": torch.arange(3.0)}
    sampler = {
        "indexes_per_class": [np.arange(4), np.arange(2, dtype=np.int32)],
        "queue": [np.int64(5), 7],
        "pointers_of_classes": np.zeros(527, dtype=np.int64),
    }
    path = tmp_path / "panns-like.pth"
    # Pickle the NumPy objects under NumPy 1's module names, as the official file has them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        monkeypatch.setattr(multiarray._reconstruct, "__module__", "numpy.core.multiarray")
        monkeypatch.setattr(multiarray.scalar, "__module__", "numpy.core.multiarray")
        torch.save({"iteration": 100, "model": state, "sampler": sampler}, path)
        monkeypatch.undo()
    assert b"numpy.core.multiarray" in path.read_bytes()
    with pytest.raises(Exception, match="weights_only"):
        torch.load(path, weights_only=True)  # plain weights_only refuses the NumPy state
    loaded = load_state_dict(path, key="model")
    assert list(loaded) == ["w"] and torch.equal(loaded["w"], state["w"])


def test_load_state_dict_rejects_non_state_dicts(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="cannot read checkpoint") as info:
        load_state_dict(junk)
    assert "\n" not in str(info.value)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"iteration": 1, "model": {"w": torch.zeros(1)}}, wrapped)
    with pytest.raises(ModelFileError, match="not a state dict"):
        load_state_dict(wrapped)  # without key= the wrapper is not a state dict
    bare = tmp_path / "bare.pth"
    torch.save({"w": torch.zeros(1)}, bare)
    assert list(load_state_dict(bare, key="model")) == ["w"]  # bare files are accepted too
