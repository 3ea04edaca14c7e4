"""The few-shot regime: every registered detector with 10 training normals per machine ID.

A detector either fits and scores finite values, saying in one logged line where it
falls back (epochs chosen on the training loss, member scores standardised on pooled
held-out normals), or refuses with a ConfigError naming the fewest clips it needs,
before any work. The contract itself (fit, score, save, load) is checked by
test_contract.py on 8 clips per ID; this file adds what few clips change.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from test_contract import NAMES, TINY
from test_contract import make as make_tiny  # noqa: F401 (test_contract's fixture)

from soundwatch.data.clips import Clip
from soundwatch.detectors import Detector, available, create
from soundwatch.detectors.base import MIN_VALIDATION_CLIPS
from soundwatch.detectors.scorers import create_scorer
from soundwatch.errors import ConfigError

N_TRAIN_PER_ID = 10
EPOCH_FALLBACK = "too few to choose the training epoch"
POOLED_REFERENCE = "pooled over IDs"


@pytest.fixture(scope="module")
def few_shot(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Clip], list[Clip]]:
    """Two machine IDs, 10 training normals each (2 s clips), one normal and one
    anomalous test clip per ID."""
    from soundwatch.data.datasets import discover
    from soundwatch.synth import generate_dataset

    root = tmp_path_factory.mktemp("few-shot")
    generate_dataset(
        root,
        "slider",
        n_ids=2,
        n_train_per_id=N_TRAIN_PER_ID,
        n_test_normal_per_id=1,
        n_test_anomaly_per_id=1,
        duration=2.0,
        seed=7,
        progress=False,
    )
    return discover(root, "slider", "train"), discover(root, "slider", "test")


def chooses_epoch_on_validation(detector: Detector) -> bool:
    return "restore_best" in detector.param_spec() and bool(
        detector.restore_best or detector.early_stopping_patience or detector.lr_patience
    )


@pytest.mark.parametrize("name", NAMES)
def test_ten_clips_per_id_fit_and_score_or_refuse(name, make_tiny, few_shot, caplog):  # noqa: F811
    train, test = few_shot
    detector = make_tiny(name)
    caplog.set_level(logging.WARNING)
    try:
        detector.fit(train)
    except ConfigError as exc:  # a refusal must name the clips it needs
        assert "at least" in str(exc) and "\n" not in str(exc)
        return
    scores = detector.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    assert np.isfinite(list(detector.thresholds_.values())).all()
    messages = [r.getMessage() for r in caplog.records]
    assert all("\n" not in m for m in messages)
    # 10 clips per ID hold out one per ID: too few to choose a training epoch on.
    held_out = detector.fit_info_["n_validation"]
    if held_out and chooses_epoch_on_validation(detector):
        assert held_out < MIN_VALIDATION_CLIPS
        assert any(EPOCH_FALLBACK in m and name in m for m in messages)
        assert np.isnan(detector.history_["valid_loss"]).all()
    if name == "ensemble":
        assert any(POOLED_REFERENCE in m for m in messages)
    if name in ("id-classifier", "attribute-classifier", "ensemble"):
        assert any("random crops per clip" in m for m in messages)
    if detector.near_chance_below:  # near chance with 10 clips per ID: says so once
        assert sum("scored near chance" in m for m in messages) == 1
    if name in ("memory-bank", "domain-memory-bank"):
        # once per fit, although every ID and every cross-fitting fold has its own bank
        assert sum("gets the few-shot design" in m for m in messages) == 1


def test_enough_held_out_clips_still_choose_the_epoch(make_tiny, few_shot, caplog):  # noqa: F811
    """The fallback is for few clips only: with enough held-out clips (here half of the
    20) the validation loss still chooses the epoch, as in the full regime."""
    train, _ = few_shot
    caplog.set_level(logging.WARNING)
    detector = make_tiny("mlp-ae", validation_fraction=0.5).fit(train)
    assert detector.fit_info_["n_validation"] >= MIN_VALIDATION_CLIPS
    assert not any(EPOCH_FALLBACK in r.getMessage() for r in caplog.records)
    assert np.isfinite(detector.history_["valid_loss"]).all()


MINIMUM = sorted(n for n in NAMES if available()[n].min_train_clips > 1)


def test_minimum_is_declared_where_a_scorer_needs_it():
    assert {"logmel-mahalanobis", "embedding"} <= set(MINIMUM)


@pytest.mark.parametrize("name", MINIMUM)
def test_too_few_clips_are_refused_before_work(name, few_shot, monkeypatch):
    train, _ = few_shot
    detector = available()[name](**TINY.get(name, {}))

    def no_work(*args, **kwargs):
        raise AssertionError("fitted although the clips are too few")

    monkeypatch.setattr(detector, "_fit", no_work)
    assert detector.per_id and detector.uses_cross_fit
    need = detector.min_train_clips + 1  # cross-fitted calibration leaves clips out
    one_id = [c for c in train if c.machine_id == train[0].machine_id]
    other = [c for c in train if c.machine_id != train[0].machine_id]
    with pytest.raises(ConfigError, match=f"at least {need} training clips per machine ID"):
        detector.fit(one_id[: need - 1] + other)
    with pytest.raises(ConfigError, match=f"at least {need - 1} training clips, got 1"):
        available()[name](**TINY.get(name, {}), per_id=False).fit(one_id[:1])


def test_id_classifier_draws_more_crops_only_from_few_clips():
    """Four IDs of 90 training clips fill 11 batches of 32: the default stays; 36 clips
    would fill one batch per epoch, so each gives 8 crops."""
    detector = create("id-classifier")
    assert detector._crops_per_clip(360) == 1
    assert detector._crops_per_clip(36) == 8
    assert create("id-classifier", crops_per_clip=10)._crops_per_clip(36) == 10


def test_clamped_scorers_say_so(caplog):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    caplog.set_level(logging.WARNING)
    knn = create_scorer("knn", k=5).fit(x)
    assert np.isfinite(knn.score(x)).all()
    gmm = create_scorer("gmm", n_components=4).fit(x)
    assert len(gmm.weights_) == 3
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "knn: k=5 but only 3 training vectors" in messages
    assert "gmm: 4 components but only 3 training vectors" in messages


def test_ensemble_members_hold_out_what_the_ensemble_holds_out():
    """A cross-fitting member (logmel-mahalanobis by default) would train on every clip,
    the ensemble's held-out normals included."""
    ensemble = create("ensemble")
    assert all(m.calibration == "held-out" for m in ensemble.members_)
    with pytest.raises(ConfigError, match="calibration cannot be set per member"):
        create("ensemble", member_params="logmel-mahalanobis.calibration=cross-fit")


def test_readme_names_the_minimum_of_every_detector_that_has_one():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Few normal clips", 1)[1].split("\n## ", 1)[0]
    for name in MINIMUM:
        assert f"`{name}`" in section
