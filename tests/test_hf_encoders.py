"""Hugging Face encoders (AST, wav2vec 2.0) with tiny random networks: no download."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from soundwatch.encoders import hf
from soundwatch.encoders.embed import embed_clips
from soundwatch.encoders.hf import (
    RANDOM_SMALL,
    ASTEncoder,
    Wav2Vec2Encoder,
    ast_input_values,
    kaldi_fbank,
)
from soundwatch.encoders.registry import ENCODERS
from soundwatch.errors import ConfigError, ModelFileError

ENCODER_CLASSES = [ASTEncoder, Wav2Vec2Encoder]


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def waveforms() -> np.ndarray:
    """Three different 1.5 s signals at 16 kHz: noise, a tone and a chirp."""
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    return np.stack(
        [
            0.1 * rng.standard_normal(t.size),
            0.5 * np.sin(2 * np.pi * 440 * t),
            0.3 * np.sin(2 * np.pi * (200 + 2000 * t) * t),
        ]
    ).astype(np.float32)


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in ENCODER_CLASSES:
        monkeypatch.delenv(cls.weights_env, raising=False)


# ------------------------------------------------------------------------------ front end


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
def test_ast_front_end_matches_hf_feature_extractor(transformers, waveforms):
    # Without torchaudio the extractor uses its NumPy Kaldi implementation.
    extractor = transformers.ASTFeatureExtractor(max_length=200)
    for wave in waveforms:
        expected = extractor(wave, sampling_rate=16000, return_tensors="np")["input_values"][0]
        # In float64 the definitions agree to rounding ...
        values, n_frames = ast_input_values(torch.from_numpy(wave).double()[None], 200)
        assert n_frames == 1 + (24000 - 400) // 160
        np.testing.assert_allclose(values[0].numpy(), expected, atol=1e-6)
        # ... and in float32 (as torchaudio computes) up to float32 noise of weak bins.
        values, _ = ast_input_values(torch.from_numpy(wave)[None], 200)
        difference = np.abs(values[0].numpy() - expected)
        assert difference.max() < 2e-3 and difference.mean() < 2e-5


def test_kaldi_fbank_shape_and_short_clip():
    fbank = kaldi_fbank(torch.zeros(2, 16000) + 0.01)
    assert fbank.shape == (2, 98, 128) and torch.isfinite(fbank).all()
    with pytest.raises(ConfigError, match="shorter"):
        kaldi_fbank(torch.zeros(1, 399))


def test_ast_input_values_chunks_long_clips():
    wave = torch.randn(2, 16000 * 3) * 0.1  # 298 fbank frames -> 3 chunks of 100
    values, n_frames = ast_input_values(wave, max_length=100)
    assert n_frames == 298 and values.shape == (6, 100, 128)
    # The last chunk's padding is log-energy 0, normalised like the extractor.
    pad = (0.0 - hf.AST_MEAN) / (2 * hf.AST_STD)
    np.testing.assert_allclose(values[2, 98:].numpy(), pad, rtol=1e-6)


# ------------------------------------------------------------------------------ encoders


def test_registered_without_loading():
    assert ENCODERS.get("ast") is ASTEncoder and ENCODERS.get("wav2vec2") is Wav2Vec2Encoder
    encoder = ENCODERS.create("ast", weights=RANDOM_SMALL)
    assert encoder.embedding_dim == 32 and not encoder._loaded
    assert ENCODERS.create("wav2vec2").embedding_dim == 768
    # The frame period of the default architectures, known without a network.
    assert ASTEncoder.frame_seconds == pytest.approx(0.1)
    assert Wav2Vec2Encoder.frame_seconds == pytest.approx(0.02)
    assert encoder.frame_seconds == pytest.approx(0.1) and not encoder._loaded


def test_ast_random_small_shapes_and_batching(transformers, waveforms):
    encoder = ASTEncoder(weights=RANDOM_SMALL, batch_size=3)
    frames = encoder.frame_embeddings(waveforms)
    # 148 fbank frames in chunks of 100: 9 time patches + ceil(48 / 10) = 5.
    assert frames.shape == (3, 14, 32) and frames.dtype == np.float32
    assert np.isfinite(frames).all()
    one_by_one = ASTEncoder(weights=RANDOM_SMALL, batch_size=1).frame_embeddings(waveforms)
    np.testing.assert_allclose(frames, one_by_one, rtol=1e-4, atol=1e-5)
    assert not np.allclose(frames[0], frames[1])
    assert encoder.frame_seconds == pytest.approx(0.1)
    tokens = ASTEncoder(weights=RANDOM_SMALL, output="tokens").frame_embeddings(waveforms[:1])
    assert tokens.shape == (1, 2 * (2 + 12 * 9), 32)


def test_wav2vec2_random_small_shapes_and_normalisation(transformers, waveforms):
    encoder = Wav2Vec2Encoder(weights=RANDOM_SMALL, batch_size=2)
    frames = encoder.frame_embeddings(waveforms)
    assert frames.shape == (3, 74, 32) and np.isfinite(frames).all()  # 24000 samples / 320
    one_by_one = Wav2Vec2Encoder(weights=RANDOM_SMALL, batch_size=1).frame_embeddings(waveforms)
    np.testing.assert_allclose(frames, one_by_one, rtol=1e-4, atol=1e-5)
    # Per-clip zero-mean unit-variance input: gain and offset do not matter.
    np.testing.assert_allclose(
        encoder.frame_embeddings(3.0 * waveforms + 0.01), frames, rtol=1e-3, atol=1e-4
    )
    assert encoder.frame_seconds == pytest.approx(0.02)
    assert encoder.frame_embeddings(waveforms[:1, :400]).shape == (1, 1, 32)
    with pytest.raises(ConfigError, match="shorter than one frame"):
        encoder.frame_embeddings(waveforms[:1, :399])


def test_random_networks_are_seeded(transformers, waveforms):
    before = torch.random.get_rng_state()
    a = Wav2Vec2Encoder(weights=RANDOM_SMALL).frame_embeddings(waveforms[:1])
    b = Wav2Vec2Encoder(weights=RANDOM_SMALL).frame_embeddings(waveforms[:1])
    c = Wav2Vec2Encoder(weights=RANDOM_SMALL, seed=1).frame_embeddings(waveforms[:1])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched
    ids = {Wav2Vec2Encoder(weights=RANDOM_SMALL, seed=s).weights_identity() for s in (0, 1)}
    assert len(ids) == 2


def test_config_override(transformers, waveforms):
    config = {**ASTEncoder.small_config, "hidden_size": 16, "num_hidden_layers": 1}
    encoder = ASTEncoder(config=config)
    assert encoder.embedding_dim == 16
    assert encoder.frame_embeddings(waveforms[:1]).shape == (1, 14, 16)
    config_object = transformers.Wav2Vec2Config(**Wav2Vec2Encoder.small_config)
    assert Wav2Vec2Encoder(config=config_object).frame_embeddings(waveforms[:1]).shape[2] == 32
    with pytest.raises(ConfigError, match="either weights or config"):
        ASTEncoder(weights="somewhere", config=config)
    # The frame period follows the configuration, before and after loading.
    coarse = ASTEncoder(config={**ASTEncoder.small_config, "time_stride": 20})
    assert coarse.frame_seconds == pytest.approx(0.2)
    strides = [5, 2, 2, 2, 2, 2, 4]
    wav2vec2 = Wav2Vec2Encoder(config={**Wav2Vec2Encoder.small_config, "conv_stride": strides})
    assert wav2vec2.frame_seconds == pytest.approx(0.04)
    assert wav2vec2.load().frame_seconds == pytest.approx(0.04)
    with pytest.raises(ConfigError, match="output"):
        ASTEncoder(output="cls")


@pytest.mark.parametrize("cls", ENCODER_CLASSES, ids=lambda c: c.name)
def test_local_folder_and_env_weights(transformers, waveforms, tmp_path, monkeypatch, cls):
    random = cls(weights=RANDOM_SMALL).load()
    folder = tmp_path / cls.name
    random.model.save_pretrained(folder)
    assert hf.is_hf_folder(folder) and json.loads((folder / "config.json").read_text())
    expected = random.frame_embeddings(waveforms[:2])

    from_folder = ENCODERS.create(cls.name, weights=str(folder))
    assert from_folder.embedding_dim == 32  # read from config.json before loading
    np.testing.assert_allclose(from_folder.frame_embeddings(waveforms[:2]), expected, atol=1e-5)
    identity = from_folder.weights_identity()
    assert len(identity) == 64 and identity != random.weights_identity()
    assert cls.weights_available(folder) and cls.weights_available(RANDOM_SMALL)
    assert not cls.weights_available(tmp_path)

    monkeypatch.setenv(cls.weights_env, str(folder))
    from_env = cls()
    assert cls.local_weights() == folder and cls.weights_available()
    np.testing.assert_allclose(from_env.frame_embeddings(waveforms[:2]), expected, atol=1e-5)
    assert from_env.weights_identity() == identity
    json.dumps(from_env.cache_params())


def test_bad_folders_are_reported(transformers, tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match="not a Hugging Face model folder"):
        ASTEncoder(weights=str(tmp_path / "missing")).load()
    monkeypatch.setenv("SOUNDWATCH_WAV2VEC2_WEIGHTS", str(tmp_path))
    with pytest.raises(ModelFileError, match=r"\$SOUNDWATCH_WAV2VEC2_WEIGHTS"):
        Wav2Vec2Encoder().load()
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="cannot load Wav2Vec2Model"):
        Wav2Vec2Encoder().load()


@pytest.mark.parametrize("cls", ENCODER_CLASSES, ids=lambda c: c.name)
def test_offline_error_names_hub_id_and_folder_options(transformers, monkeypatch, cls):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(cls, "hub_id", "soundwatch-tests/no-such-model")
    assert cls.local_weights() is None and not cls.weights_available()
    encoder = cls()
    assert encoder.weights_identity() == "hub:soundwatch-tests/no-such-model"
    with pytest.raises(ModelFileError) as info:
        encoder.load()
    message = str(info.value)
    assert "\n" not in message
    assert "soundwatch-tests/no-such-model" in message and cls.weights_env in message
    assert "weights=FOLDER" in message


def test_missing_transformers_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import` raise
    encoder = ASTEncoder(weights=RANDOM_SMALL)  # creating one needs no transformers
    with pytest.raises(ConfigError, match=r"pip install soundwatch\[hf\]"):
        encoder.load()


def test_module_imports_without_transformers():
    # A fresh interpreter, so the module is imported (not reused) with transformers blocked.
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from soundwatch.encoders import hf\n"
        "from soundwatch.encoders.registry import ENCODERS\n"
        "assert ENCODERS.create('ast').embedding_dim == 768\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_embed_clips_with_a_random_encoder(transformers, slider_mini):
    from soundwatch.data.datasets import discover

    clips = discover(slider_mini, "slider", "test")[:2]
    encoder = Wav2Vec2Encoder(weights=RANDOM_SMALL)
    vectors, frames = embed_clips(clips, encoder, "meanstd", duration=2.0, use_cache=False)
    assert vectors.shape == (2, 64) and frames[0].shape == (99, 32)
