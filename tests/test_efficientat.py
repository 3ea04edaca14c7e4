"""EfficientAT encoder: architecture, reference outputs and weight resolution."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from soundwatch.encoders.checkpoint import CheckpointEncoder
from soundwatch.encoders.digests import file_digests
from soundwatch.encoders.download import RANDOM_WEIGHTS, weights_cache_dir
from soundwatch.encoders.efficientat import (
    EFFICIENTAT_MODELS,
    EfficientATFrontend,
    MobileNetV3Audio,
    make_divisible,
)
from soundwatch.encoders.pretrained import (
    WEIGHTS_ENV,
    EfficientATEncoder,
    load_efficientat,
    resolve_weights,
)
from soundwatch.encoders.registry import ENCODERS
from soundwatch.errors import ConfigError, ModelFileError

MN04_FILE = EFFICIENTAT_MODELS["mn04"]["file"]


@pytest.fixture(scope="module")
def model_dir(efficientat_weights: Path) -> Path:
    if not (efficientat_weights / MN04_FILE).is_file():
        pytest.fail(f"EfficientAT mn04 file {MN04_FILE} not found in {efficientat_weights}")
    return efficientat_weights


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> dict[str, np.ndarray]:
    with np.load(model_dir / "reference" / "reference_io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def mn04(model_dir: Path) -> MobileNetV3Audio:
    return load_efficientat("mn04", model_dir / MN04_FILE)


@pytest.fixture()
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME and XDG cache, with the weights env var unset."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    return tmp_path / "xdg" / "soundwatch" / "weights"


# --- architecture ---------------------------------------------------------------------


def test_make_divisible_matches_mn04_channels() -> None:
    assert [make_divisible(c * 0.4) for c in (16, 24, 64, 184, 672, 112)] == [
        8,
        16,
        24,
        72,
        272,
        48,
    ]


def test_mn04_state_dict_keys_and_shapes(model_dir: Path) -> None:
    expected = json.loads((model_dir / "state_dict_shapes.json").read_text())
    got = {k: list(v.shape) for k, v in MobileNetV3Audio(0.4).state_dict().items()}
    assert list(got) == list(expected)
    assert got == expected


def test_loads_shared_weights_strict(model_dir: Path) -> None:
    state = torch.load(model_dir / MN04_FILE, map_location="cpu", weights_only=True)
    net = MobileNetV3Audio(width_mult=0.4)
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_mn10_builds_by_configuration() -> None:
    torch.manual_seed(0)
    net = MobileNetV3Audio(width_mult=EFFICIENTAT_MODELS["mn10"]["width_mult"]).eval()
    assert net.embedding_dim == 960
    assert net.classifier[2].out_features == 1280
    mel = torch.randn(2, 1, 128, 100)
    with torch.no_grad():
        logits, emb = net(mel)
        maps = net.extract_features(mel)
    assert logits.shape == (2, 527) and emb.shape == (2, 960)
    assert [m.shape[1] for m in maps] == [16, 24, 40, 112, 960]
    # Each skip map halves the resolution (rounding up) of the previous one.
    assert [tuple(m.shape[2:]) for m in maps] == [(64, 50), (32, 25), (16, 13), (8, 7), (4, 4)]


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ConfigError):
        MobileNetV3Audio(width_mult=0)
    with pytest.raises(ConfigError):
        MobileNetV3Audio(strides=(2, 2, 3, 2))
    with pytest.raises(ConfigError, match="unknown EfficientAT model"):
        resolve_weights("mn99")
    with pytest.raises(ConfigError, match="batch, 1, mels, frames"):
        MobileNetV3Audio(0.4)(torch.zeros(1, 128, 100))


# --- reference outputs ----------------------------------------------------------------


def test_frontend_matches_reference_logmel(reference: dict[str, np.ndarray]) -> None:
    with torch.no_grad():
        mel = EfficientATFrontend()(torch.from_numpy(reference["waveform_32k"]))
    assert mel.shape == (2, 1, 128, 1000)
    np.testing.assert_allclose(mel[:, 0].numpy(), reference["logmel"], rtol=0, atol=1e-4)


def test_network_matches_reference_outputs(
    mn04: MobileNetV3Audio, reference: dict[str, np.ndarray]
) -> None:
    with torch.no_grad():
        logits, emb = mn04(torch.from_numpy(reference["logmel"]).unsqueeze(1))
    np.testing.assert_allclose(logits.numpy(), reference["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(emb.numpy(), reference["embedding"], rtol=1e-4, atol=1e-5)


def test_end_to_end_tags_sine_wave(
    mn04: MobileNetV3Audio, reference: dict[str, np.ndarray], model_dir: Path
) -> None:
    with torch.no_grad():
        mel = EfficientATFrontend()(torch.from_numpy(reference["waveform_32k"]))
        logits, emb = mn04(mel)
        maps = mn04.extract_features(mel)
    np.testing.assert_allclose(logits.numpy(), reference["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(emb.numpy(), reference["embedding"], rtol=1e-4, atol=1e-5)

    with open(model_dir / "audioset_class_labels.csv", newline="") as fh:
        labels = {int(row["index"]): row["display_name"] for row in csv.DictReader(fh)}
    probs = torch.sigmoid(logits[0])
    top = int(probs.argmax())
    assert labels[top] == "Sine wave"
    assert probs[top].item() == pytest.approx(0.51, abs=0.01)

    # The last skip map is the pre-pooling feature map the embedding averages.
    assert [tuple(m.shape[1:]) for m in maps] == [
        (8, 64, 500),
        (16, 32, 250),
        (16, 16, 125),
        (48, 8, 63),
        (384, 4, 32),
    ]
    torch.testing.assert_close(maps[-1].mean(dim=(2, 3)), emb)
    only = mn04.extract_features(mel[:1], stages=[-1])
    assert len(only) == 1 and only[0].shape == (1, 384, 4, 32)


# --- weight resolution ----------------------------------------------------------------


def test_resolve_explicit_path(model_dir: Path, isolated_cache: Path) -> None:
    path = model_dir / MN04_FILE
    assert resolve_weights("mn04", path) == path
    with pytest.raises(ModelFileError, match="not found"):
        resolve_weights("mn04", model_dir / "nope.pt")


def test_resolve_explicit_path_checksum_mismatch(tmp_path: Path, isolated_cache: Path) -> None:
    bad = tmp_path / MN04_FILE
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="sha256") as info:
        resolve_weights("mn04", bad)
    assert "\n" not in str(info.value)


def test_resolve_env_var_file_and_folder(
    model_dir: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(model_dir / MN04_FILE))
    assert resolve_weights("mn04") == model_dir / MN04_FILE
    monkeypatch.setenv(WEIGHTS_ENV, str(model_dir))
    assert resolve_weights("mn04") == model_dir / MN04_FILE
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))  # a folder without the file
    with pytest.raises(ModelFileError, match=WEIGHTS_ENV):
        resolve_weights("mn04")


def test_resolve_from_cache_dir(model_dir: Path, isolated_cache: Path) -> None:
    assert weights_cache_dir() == isolated_cache
    isolated_cache.mkdir(parents=True)
    shutil.copyfile(model_dir / MN04_FILE, isolated_cache / MN04_FILE)
    # An unreachable URL proves the cached file is used without a download.
    assert resolve_weights("mn04", url="http://127.0.0.1:9/x.pt") == isolated_cache / MN04_FILE


def test_cache_defaults_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights_cache_dir() == tmp_path / ".cache" / "soundwatch" / "weights"


def test_download_file_url_into_cache(model_dir: Path, isolated_cache: Path) -> None:
    url = (model_dir / MN04_FILE).resolve().as_uri()
    path = resolve_weights("mn04", url=url)
    assert path == isolated_cache / MN04_FILE
    assert path.read_bytes() == (model_dir / MN04_FILE).read_bytes()
    assert os.listdir(isolated_cache) == [MN04_FILE]  # no temporary file left behind
    net = load_efficientat("mn04")  # now found in the cache
    assert not net.training


def test_download_checksum_mismatch_deletes_file(tmp_path: Path, isolated_cache: Path) -> None:
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(b"\0" * 1000)
    with pytest.raises(ModelFileError, match="corrupt and was deleted") as info:
        resolve_weights("mn04", url=wrong.as_uri())
    assert "\n" not in str(info.value)
    assert os.listdir(isolated_cache) == []


def test_download_without_checksum_warns(tmp_path: Path, isolated_cache: Path) -> None:
    dummy = tmp_path / "dummy.pt"
    dummy.write_bytes(b"x")
    with pytest.warns(UserWarning, match="no checksum known"):
        path = resolve_weights("mn10", url=dummy.as_uri())
    assert path == isolated_cache / EFFICIENTAT_MODELS["mn10"]["file"]


def test_offline_download_message(isolated_cache: Path) -> None:
    with pytest.raises(ModelFileError) as info:
        resolve_weights("mn04", url="http://127.0.0.1:9/x.pt")
    message = str(info.value)
    assert message.startswith(
        f"cannot download efficientat-mn04 weights {MN04_FILE} from http://127.0.0.1:9/x.pt ("
    )
    assert "--param weights=PATH" in message and WEIGHTS_ENV in message
    assert str(isolated_cache) in message and "\n" not in message
    assert not any(isolated_cache.iterdir())


def test_offline_encoder_names_the_official_url(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = ENCODERS.get("efficientat-mn04")
    assert cls.checkpoint.url == EFFICIENTAT_MODELS["mn04"]["url"]
    assert cls.checkpoint.url.endswith("/v0.0.1/" + MN04_FILE)
    # No network in tests: an address nothing listens on stands for the release server.
    offline = dataclasses.replace(cls.checkpoint, url="http://127.0.0.1:9/x.pt")
    monkeypatch.setattr(cls, "checkpoint", offline)
    assert not cls.weights_available()
    with pytest.raises(ModelFileError, match="cannot download efficientat-mn04 weights"):
        ENCODERS.create("efficientat-mn04").load()
    assert not any(isolated_cache.iterdir())


def test_load_rejects_wrong_architecture(tmp_path: Path, isolated_cache: Path) -> None:
    # A valid state dict of the wrong width: a clear one-line error, not a torch traceback.
    # Its name is not the release name, so it is the user's own file: no checksum, no
    # warning, only the strict architecture check.
    path = tmp_path / "mn05.pt"
    torch.save(MobileNetV3Audio(width_mult=0.4).state_dict(), path)
    with pytest.raises(ModelFileError, match="does not fit efficientat-mn05") as info:
        load_efficientat("mn05", path)
    assert "\n" not in str(info.value)


def test_explicit_file_of_another_name_is_the_users_own(
    tmp_path: Path, isolated_cache: Path
) -> None:
    torch.manual_seed(1)
    fine_tuned = MobileNetV3Audio(width_mult=0.4)
    path = tmp_path / "my-mn04.pt"
    torch.save(fine_tuned.state_dict(), path)
    # Not the release file, so not verified against the release checksum.
    assert resolve_weights("mn04", path) == path
    net = load_efficientat("mn04", path)
    for key, value in fine_tuned.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    # Cache keys identify it by content, never as the official weights.
    encoder = ENCODERS.create("efficientat-mn04", weights=str(path))
    assert encoder.weights_identity() == file_digests(path)[0]
    assert encoder.cache_params()["weights"] != "default"
    assert not isolated_cache.exists()  # nothing was downloaded


# --- the registered encoders -------------------------------------------------------------


def test_family_is_registered_as_checkpoint_encoders() -> None:
    for model, config in EFFICIENTAT_MODELS.items():
        cls = ENCODERS.get(f"efficientat-{model}")
        assert issubclass(cls, EfficientATEncoder) and issubclass(cls, CheckpointEncoder)
        assert cls.model == model and cls.sample_rate == 32000
        # One variable for the family: a file, or a folder of release files.
        assert cls.env_var() == WEIGHTS_ENV
        assert (cls.checkpoint.file_name, cls.checkpoint.url) == (config["file"], config["url"])
        assert cls.checkpoint.sha256 == config["sha256"]
        assert cls.frame_seconds == pytest.approx(320 * 32 / 32000)
    assert ENCODERS.get("efficientat-mn04").checkpoint.pinned
    assert not ENCODERS.get("efficientat-mn10").checkpoint.pinned


def test_random_weights_need_no_file(isolated_cache: Path) -> None:
    encoder = ENCODERS.create("efficientat-mn04", weights=RANDOM_WEIGHTS)
    assert encoder.weights_available(RANDOM_WEIGHTS) and encoder.weights_identity() == "random-0"
    wave = np.random.default_rng(0).normal(scale=0.1, size=(1, 32000)).astype(np.float32)
    frames = encoder.frame_embeddings(wave)
    # 100 log-mel frames halved (rounding up) five times: 4 frames of 0.32 s.
    assert frames.shape == (1, 4, 384) and np.isfinite(frames).all()
    again = ENCODERS.create("efficientat-mn04", weights=RANDOM_WEIGHTS).frame_embeddings(wave)
    np.testing.assert_array_equal(again, frames)
    assert not isolated_cache.exists()


def test_encoder_frames_pool_to_the_reference_embedding(
    model_dir: Path, reference: dict[str, np.ndarray], isolated_cache: Path
) -> None:
    encoder = ENCODERS.create("efficientat-mn04", weights=str(model_dir / MN04_FILE))
    frames = encoder.frame_embeddings(reference["waveform_32k"])
    assert frames.shape == (2, 32, 384)  # 10 s clips, one frame per 0.32 s
    np.testing.assert_allclose(frames.mean(axis=1), reference["embedding"], rtol=1e-4, atol=1e-5)
    # The release file is pinned by its checksum: explicit, it is still known by content.
    assert encoder.weights_identity() == EFFICIENTAT_MODELS["mn04"]["sha256"]


def test_default_weights_identity(
    model_dir: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # mn04's release file is pinned by its SHA-256: "default" is enough.
    monkeypatch.setenv(WEIGHTS_ENV, str(model_dir))
    assert ENCODERS.create("efficientat-mn04").weights_identity() == "default"
    monkeypatch.delenv(WEIGHTS_ENV)
    # mn10 has no known checksum: whatever file is used is identified by its content.
    isolated_cache.mkdir(parents=True)
    cached = isolated_cache / EFFICIENTAT_MODELS["mn10"]["file"]
    cached.write_bytes(b"some mn10 file")
    with pytest.warns(UserWarning, match="no checksum known"):
        identity = ENCODERS.create("efficientat-mn10").weights_identity()
    assert identity == file_digests(cached)[0]
