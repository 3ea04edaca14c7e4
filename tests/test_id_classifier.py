"""The id-classifier detector: ID classes, transform fallback, scoring, persistence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import soundwatch.detectors.id_classifier as idc
from soundwatch.data.datasets import discover
from soundwatch.detectors.base import Detector
from soundwatch.detectors.id_crops import ClassKey
from soundwatch.detectors.id_transforms import TRANSFORMS, apply_transform
from soundwatch.detectors.modelfile import read_model_file
from soundwatch.errors import ConfigError
from soundwatch.synth import generate_dataset

# Tiny network and crops: the tests check plumbing, not accuracy.
TINY = {
    "epochs": 1,
    "batch_size": 4,
    "n_mels": 32,
    "crop_seconds": 0.5,
    "score_hop_seconds": 0.5,
    "width": 4,
    "embedding_dim": 8,
    "threads": 1,
}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("idc-synth")
    generate_dataset(
        root,
        "slider",
        n_ids=2,
        n_train_per_id=6,
        n_test_normal_per_id=2,
        n_test_anomaly_per_id=2,
        duration=2.0,
        progress=False,
    )
    return root


@pytest.fixture(scope="module")
def synth_clips(synth_root: Path) -> tuple[list, list]:
    return discover(synth_root, "slider", "train"), discover(synth_root, "slider", "test")


def fit_score_reload(
    det: Detector, train: list, test: list, path: Path
) -> tuple[np.ndarray, Detector]:
    det.fit(train)
    scores = det.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    det.save(path)
    loaded = Detector.load(path)
    np.testing.assert_array_equal(loaded.score(test), scores)
    return scores, loaded


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "arcface", "score_method": "nll", "temporal_branch": True},
        {"loss": "adacos", "score_method": "knn", "subclusters": 2, "mixup": 0.4},
        {"loss": "softmax"},
        {"loss": "arcface", "score_method": "gmm", "gmm_components": 1},
    ],
)
def test_multi_id_fit_score_save_load(synth_clips, tmp_path: Path, options: dict) -> None:
    train, test = synth_clips
    det = idc.IdClassifierDetector(**TINY, fallback="auto", **options)
    _, loaded = fit_score_reload(det, train, test, tmp_path / "m.safetensors")
    assert [k.machine_id for k in det.classes_] == ["00", "02"]
    assert not det.transforms_ and det.temporal_ == options.get("temporal_branch", False)
    _, metadata = read_model_file(tmp_path / "m.safetensors")
    assert [c["machine_id"] for c in metadata["state"]["classes"]] == ["00", "02"]
    assert loaded.classes_ == det.classes_
    if options.get("score_method") != "nll":
        assert sorted(loaded.scorers_) == [0, 1]


@pytest.mark.parametrize("score_method", ["nll", "mahalanobis"])
def test_unknown_id_scored_by_best_fitting_class(synth_clips, score_method: str) -> None:
    train, test = synth_clips
    det = idc.IdClassifierDetector(**TINY, score_method=score_method).fit(train)
    # Default: ID x transform classes; only the two identity classes are own classes.
    assert len(det.classes_) == 2 * len(TRANSFORMS)
    assert [det.classes_[i].machine_id for i in det._own_classes()] == ["00", "02"]
    clips = test[:3]
    as_ids = [
        det.score([dataclasses.replace(c, machine_id=i) for c in clips]) for i in ["00", "02"]
    ]
    unknown = det.score([dataclasses.replace(c, machine_id="99") for c in clips])
    np.testing.assert_allclose(unknown, np.minimum(*as_ids), rtol=1e-12)


def test_per_id_is_rejected() -> None:
    with pytest.raises(ConfigError, match="per_id"):
        idc.IdClassifierDetector(per_id=True)


def test_single_id_without_fallback_is_an_error(synth_clips) -> None:
    train = [c for c in synth_clips[0] if c.machine_id == "00"]
    with pytest.raises(ConfigError, match="fallback"):
        idc.IdClassifierDetector(**TINY, fallback="off").fit(train)


@pytest.mark.slow
def test_single_id_real_data_uses_transform_fallback(slider_mini: Path, tmp_path: Path) -> None:
    train = discover(slider_mini, "slider", "train")
    test = discover(slider_mini, "slider", "test")
    assert {c.machine_id for c in train} == {"00"}
    det = idc.IdClassifierDetector(**TINY, temporal_branch=True, fallback="auto")
    _, loaded = fit_score_reload(det, train, test, tmp_path / "m.safetensors")
    assert det.transforms_ and not det.temporal_  # the branch is off in this mode
    assert [k.transform for k in det.classes_] == list(TRANSFORMS)
    assert loaded.transforms_


def test_other_machine_types_become_outlier_classes(synth_clips) -> None:
    train, test = synth_clips
    # ID 02 plays the part of another machine type with fewer clips than the slider.
    mixed = [c for c in train if c.machine_id == "00"] + [
        dataclasses.replace(c, machine_type="fan") for c in train if c.machine_id == "02"
    ][:4]
    det = idc.IdClassifierDetector(**TINY, fallback="auto").fit(mixed)
    assert det.transforms_
    assert det.classes_[-1] == ClassKey("fan", None)
    assert len(det.classes_) == len(TRANSFORMS) + 1
    fan_clip = dataclasses.replace(test[-1], machine_type="fan")
    table = det._class_table([test[0], fan_clip])
    assert table[0, 0] == 0 and table[1, 0] == len(TRANSFORMS)
    assert (table[1, 1:] == -1).all()  # outlier classes are never transformed
    assert np.isfinite(det.score([test[0], fan_clip])).all()


def test_transforms_keep_shape_and_act_as_documented() -> None:
    rng = np.random.default_rng(0)
    source = rng.normal(size=(16, 40)).astype(np.float32)
    for name in TRANSFORMS:
        out = apply_transform(source, 5, 10, name, np.random.default_rng(1))
        assert out.shape == (16, 10) and out.dtype == np.float32
    crop = source[:, 5:15]
    np.testing.assert_array_equal(apply_transform(source, 5, 10, "identity", rng), crop)
    np.testing.assert_array_equal(apply_transform(source, 5, 10, "reverse", rng), crop[:, ::-1])
    tilted = apply_transform(source, 5, 10, "tilt", rng) - crop
    assert np.allclose(tilted, tilted[:, :1]) and abs(tilted[-1, 0] - tilted[0, 0]) >= 6 - 1e-4
