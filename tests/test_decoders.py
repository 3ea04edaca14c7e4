"""Frozen-encoder + decoder detectors on the real slider mini set (EfficientAT mn04 offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from soundwatch.data.clips import Clip
from soundwatch.data.datasets import discover
from soundwatch.detectors import decoders  # noqa: F401  (registration)
from soundwatch.detectors.base import Detector
from soundwatch.detectors.decoders import (
    EncoderMLPDecoder,
    EncoderUNetDecoder,
    UNetDecoder,
    frame_alignment,
    halved_sizes,
)
from soundwatch.detectors.registry import create
from soundwatch.encoders.random_cnn import RandomConvEncoder
from soundwatch.encoders.registry import ENCODERS
from soundwatch.errors import ConfigError

# Short clips keep the encoder passes cheap; the behaviour does not depend on length.
FAST = {"epochs": 1, "duration": 2.0}


@pytest.fixture(autouse=True)
def _efficientat_weights(efficientat_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDWATCH_EFFICIENTAT_WEIGHTS", str(efficientat_weights))


@pytest.fixture(scope="module")
def clips(shared_dir: Path) -> tuple[list[Clip], list[Clip]]:
    root = shared_dir / "data" / "dcase2020-slider-mini" / "dev_data"
    return discover(root, "slider", "train")[:12], discover(root, "slider", "test")


def fit_score(detector: Detector, clips) -> np.ndarray:
    """Fit for one epoch and score the 6 test clips (squared errors: positive). The model
    file round trip is in test_contract."""
    train, test = clips
    detector.fit(train)
    scores = detector.score(test)
    assert scores.shape == (6,) and np.isfinite(scores).all() and (scores > 0).all()
    assert len(detector.history_["train_loss"]) == 1
    return scores


# ------------------------------------------------------------------------------ alignment


def test_frame_alignment_exact_ratio_is_blocks():
    # EfficientAT: 0.32 s frames, 0.032 s log-mel hop -> 10 log-mel frames per embedding.
    frame, slot = frame_alignment(313, 32, 0.032, 0.32, 10)
    np.testing.assert_array_equal(frame, np.arange(313) // 10)
    np.testing.assert_array_equal(slot, np.arange(313) % 10)


def test_frame_alignment_other_ratios_and_overflow():
    # wav2vec2-like 20 ms frames: one slot, frame = floor(m * 32 / 20).
    frame, slot = frame_alignment(10, 16, 0.032, 0.02, 1)
    np.testing.assert_array_equal(frame, np.floor(np.arange(10) * 1.6 + 1e-9))
    assert (slot == 0).all()
    # Log-mel frames past the last encoder frame go to its last slot.
    frame, slot = frame_alignment(12, 2, 0.032, 0.128, 4)
    assert frame.tolist() == [0] * 4 + [1] * 8 and slot[-5:].tolist() == [3] * 5


# ------------------------------------------------------------------------------ MLP decoder


def test_mlp_decoder_with_efficientat(clips):
    detector = create("encoder-mlp-decoder", encoder="efficientat-mn04", **FAST)
    assert isinstance(detector, EncoderMLPDecoder) and detector.encoder == "efficientat-mn04"
    fit_score(detector, clips)
    assert detector.block_ == 10 and detector.frame_seconds_ == pytest.approx(0.32)


def test_mlp_decoder_with_random_cnn(clips):
    detector = create("encoder-mlp-decoder", encoder="random-cnn", hidden="64", **FAST)
    fit_score(detector, clips)
    assert detector.block_ == 4 and detector.frame_seconds_ == pytest.approx(0.128)


def test_mlp_decoder_with_a_hugging_face_encoder(clips):
    pytest.importorskip("transformers")
    from soundwatch.encoders import hf  # noqa: F401  (registration)

    detector = create(
        "encoder-mlp-decoder", encoder="wav2vec2", weights="random-small", hidden="32", **FAST
    )
    fit_score(detector, clips)
    # 20 ms frames, 32 ms log-mel hop: one slot per frame, some frames without a target.
    assert detector.block_ == 1 and detector.frame_seconds_ == pytest.approx(0.02)


def test_mlp_decoder_estimates_an_unstated_frame_period(clips):
    # An encoder that does not state frame_seconds: its frames are taken to cover the
    # first clip evenly (2 s: 63 log-mel frames of 32 ms, 16 encoder frames).
    @ENCODERS.register
    class UnstatedPeriod(RandomConvEncoder):
        name = "test-unstated-period"
        frame_seconds = None

    detector = create("encoder-mlp-decoder", encoder=UnstatedPeriod.name, hidden="16", **FAST)
    detector.fit(clips[0])
    assert detector.frame_seconds_ == pytest.approx(63 * 0.032 / 16)
    assert detector.block_ == 4


def test_mlp_decoder_rejects_unknown_encoder_and_bad_hidden(clips):
    with pytest.raises(ConfigError, match="encoder-mlp-decoder: unknown encoder"):
        create("encoder-mlp-decoder", encoder="no-such-encoder").fit(clips[0])
    with pytest.raises(ConfigError, match="hidden"):
        create("encoder-mlp-decoder", hidden="64,x")


# ------------------------------------------------------------------------------ U-Net decoder


def test_unet_decoder_with_efficientat(clips):
    detector = create(
        "encoder-unet-decoder",
        encoder="efficientat-mn04",
        batch_size=6,
        crop_seconds=1.28,
        **FAST,
    )
    assert isinstance(detector, EncoderUNetDecoder) and detector.skip_levels == 3
    fit_score(detector, clips)
    # The three deepest EfficientAT maps: strides 32, 16 and 8 (mn04 channels).
    assert detector.levels_ == [5, 4, 3] and detector.map_channels_ == [384, 48, 16]


def test_unet_decoder_needs_feature_maps(clips):
    detector = create("encoder-unet-decoder", encoder="random-cnn", epochs=1)
    with pytest.raises(ConfigError, match="random-cnn provides no intermediate feature maps"):
        detector.fit(clips[0])


def test_unet_decoder_rejects_too_many_skip_levels(clips):
    with pytest.raises(ConfigError, match="skip_levels=6"):
        create("encoder-unet-decoder", skip_levels=6, epochs=1).fit(clips[0])


def test_unet_decoder_module_shapes():
    # Maps of an input of 128 x 100 at strides 32, 16 and 8 (ceil halving).
    sizes = halved_sizes((128, 100), 5)
    assert sizes[3] == (16, 13) and sizes[5] == (4, 4)
    maps = [torch.randn(2, c, *sizes[level]) for c, level in ((24, 5), (12, 4), (8, 3))]
    network = UNetDecoder([24, 12, 8], [5, 4, 3], [16, 8, 8, 4, 4])
    assert network(maps, (128, 100)).shape == (2, 1, 128, 100)
    assert network.loss((maps, torch.zeros(2, 1, 128, 100))).dim() == 0
    with pytest.raises(ConfigError, match="channels needs 5 values"):
        UNetDecoder([24, 12, 8], [5, 4, 3], [16, 8])
