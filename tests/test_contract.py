"""The detector contract, checked on every registered detector (like scikit-learn's
``check_estimator``).

Each detector is fitted with tiny parameters on a tiny synthetic set (two machine IDs,
3 s clips). A detector registered later is covered automatically: it runs with its
defaults unless ``TINY`` gives it smaller ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from soundwatch.detectors import Detector, available, create
from soundwatch.errors import ConfigError

NAMES = sorted(available())

# Small networks, one epoch and one thread keep each fit to a second or two.
NET = {"epochs": 1, "threads": 1}
ID_CLASSIFIER = {**NET, "crop_seconds": 1.0, "width": 4, "embedding_dim": 8}
TINY: dict[str, dict] = {
    "conv-ae": {**NET, "frames": 16, "train_patches": 2, "channels": "4,8,8", "latent": 8},
    "conv-ae-svdd": {**NET, "frames": 16, "train_patches": 2, "channels": "4,8,8", "latent": 8},
    "conv-vae": {**NET, "frames": 16, "train_patches": 2, "channels": "4,8,8", "latent": 8},
    "dcase2020-ae": {**NET, "hidden": 16, "bottleneck": 4, "depth": 2},
    "dcase2023-ae": {**NET, "hidden": 16, "bottleneck": 4, "depth": 2, "scoring": "mahalanobis"},
    "mlp-ae": {**NET, "hidden": "32", "latent": 8, "frames": 4},
    "mlp-encoder-distance": {**NET, "hidden": "32", "latent": 8, "frames": 4},
    "vae": {**NET, "hidden": "32", "latent": 4, "stride": 4},
    "lstm-predictor": {**NET, "hidden": 8, "layers": 1, "history": 4, "stride": 8},
    "gru-ae": {**NET, "hidden": 8, "layers": 1, "frames": 4, "stride": 8},
    "id-classifier": ID_CLASSIFIER,
    "memory-bank": {"bank_size": 32, "loo_folds": 3, "patch_hop": 8},
    "domain-memory-bank": {"bank_size": 32, "loo_folds": 3, "patch_hop": 8, "target_mixup": 1},
    "attribute-classifier": ID_CLASSIFIER,
    "ensemble": {
        "member_params": ";".join(f"id-classifier.{k}={v}" for k, v in ID_CLASSIFIER.items())
    },
    "encoder-mlp-decoder": {**NET, "hidden": "16"},
    "encoder-unet-decoder": {**NET, "channels": "8,8,8,8,8", "crop_seconds": 1.28},
}
# Detectors whose models are one per machine type by design refuse per_id=true.
PER_ID_REFUSED = {"id-classifier", "attribute-classifier", "ensemble"}


@pytest.fixture(scope="module")
def make(request: pytest.FixtureRequest):
    """``make(name, **params)``: a detector with its tiny parameters. Detectors over a
    pretrained encoder get the shared EfficientAT weights (and need ../shared)."""
    patch = pytest.MonkeyPatch()

    def make(name: str, **params) -> Detector:
        if "encoder" in available()[name].param_spec():
            folder = request.getfixturevalue("efficientat_weights")
            patch.setenv("SOUNDWATCH_EFFICIENTAT_WEIGHTS", str(folder))
        return create(name, **TINY.get(name, {}), **params)

    yield make
    patch.undo()


@pytest.fixture(scope="module")
def fitted(make, tiny_slider):
    """``fitted(name)``: the detector fitted on the tiny training set, once per module."""
    cache: dict[str, Detector] = {}

    def get(name: str) -> Detector:
        if name not in cache:
            cache[name] = make(name).fit(tiny_slider[0])
        return cache[name]

    return get


def test_tiny_params_name_registered_detectors():
    assert set(TINY) <= set(NAMES), "TINY names a detector that is not registered"
    assert set(NAMES) >= PER_ID_REFUSED


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_are_refused(name):
    cls = available()[name]
    with pytest.raises(ConfigError, match="unknown parameter"):
        cls(no_such_parameter=1)
    with pytest.raises(ConfigError, match="seed expects int"):
        cls(seed="x")
    with pytest.raises(ConfigError, match="validation_fraction must be <="):
        cls(validation_fraction=0.9)
    with pytest.raises(ConfigError, match="threshold"):
        cls(threshold="median")
    # Every declared bound and choice is enforced.
    for key, param in cls.params.items():
        if param.low is not None:
            with pytest.raises(ConfigError, match=f"{key} must be >="):
                cls(**{key: param.low - 1})
        if param.choices is not None:
            with pytest.raises(ConfigError, match=f"{key} must be one of"):
                cls(**{key: "no-such-choice"})


@pytest.mark.parametrize("name", NAMES)
def test_unfitted_or_anomalous_training_is_refused(name, make, tiny_slider):
    _, test = tiny_slider
    detector = make(name)
    with pytest.raises(ConfigError, match="not fitted"):
        detector.score(test)
    with pytest.raises(ConfigError, match="must be normal"):
        detector.fit(test)
    with pytest.raises(ConfigError, match="no training clips"):
        detector.fit([])


@pytest.mark.parametrize("name", NAMES)
def test_fit_gives_finite_scores_and_thresholds(name, fitted, tiny_slider):
    _, test = tiny_slider
    detector = fitted(name)
    scores = detector.score(test)
    assert scores.shape == (len(test),) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert "all" in detector.thresholds_ and np.isfinite(list(detector.thresholds_.values())).all()
    assert detector.decide(test, scores).shape == (len(test),)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_same_scores(name, make, fitted, tiny_slider):
    train, test = tiny_slider
    again = make(name).fit(train)
    np.testing.assert_array_equal(again.score(test), fitted(name).score(test))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, fitted, tiny_slider, tmp_path: Path):
    _, test = tiny_slider
    detector = fitted(name)
    path = detector.save(tmp_path / "model.safetensors")
    loaded = Detector.load(path)
    assert type(loaded) is type(detector) and loaded.name == name
    assert loaded.get_params() == detector.get_params()
    np.testing.assert_array_equal(loaded.score(test), detector.score(test))
    assert loaded.thresholds_ == pytest.approx(detector.thresholds_)
    with pytest.raises(ConfigError, match="already exists"):
        detector.save(path)


@pytest.mark.parametrize("name", NAMES)
def test_per_id(name, make, tiny_slider, tmp_path: Path):
    train, test = tiny_slider
    if name in PER_ID_REFUSED:
        with pytest.raises(ConfigError, match="per_id"):
            make(name, per_id=True)
        return
    detector = make(name, per_id=True).fit(train)
    assert sorted(detector._members) == sorted({c.machine_id for c in train})
    scores = detector.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    loaded = Detector.load(detector.save(tmp_path / "per-id.safetensors"))
    np.testing.assert_array_equal(loaded.score(test), scores)


@pytest.mark.parametrize("name", NAMES)
def test_anomaly_map_is_mel_by_frame_or_none(name, fitted, tiny_slider):
    _, test = tiny_slider
    detector = fitted(name)
    amap = detector.anomaly_map(test[0])
    if amap is None:
        return
    n_samples = soundfile.info(str(test[0].path)).frames
    assert amap.shape == (detector.n_mels, 1 + n_samples // detector.hop_length)
    assert np.isfinite(amap).any()
