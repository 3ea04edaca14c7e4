"""Decision thresholds per section and domain (issue 12, §3): fitted on training normals
only, with the section's and then the pooled threshold as fallbacks, one lookup for
every user, and model files that keep them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from soundwatch.data.clips import Clip
from soundwatch.data.datasets import discover
from soundwatch.detectors import create
from soundwatch.detectors.base import Detector
from soundwatch.evaluation.dcase import write_dcase_submission
from soundwatch.evaluation.decisions import decision_metrics
from soundwatch.synth.domain_shift import generate_domain_shift_dataset
from soundwatch.thresholds import (
    MIN_CLIPS_PER_ID,
    describe_threshold,
    fit_threshold,
    fit_thresholds,
    lookup_threshold,
)

N_SOURCE, N_TARGET, FEW_TARGET = 12, 9, 3
assert N_TARGET >= MIN_CLIPS_PER_ID > FEW_TARGET


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> tuple[list[Clip], list[Clip]]:
    """Training and test clips of a 2023-style set; section 01 keeps 3 target normals."""
    root = tmp_path_factory.mktemp("dthr")
    generate_domain_shift_dataset(
        root, "fan", n_sections=2, n_source=N_SOURCE, n_target=N_TARGET, n_test_normal=4,
        n_test_anomaly=4, duration=1.0, progress=False, seed=11,
    )  # fmt: skip
    train = discover(root / "fan" / "train")
    few = [c for c in train if (c.machine_id, c.domain) == ("01", "target")][FEW_TARGET:]
    train = [c for c in train if c not in few]
    return train, discover(root / "fan" / "test")


@pytest.fixture(scope="module")
def fitted(shifted) -> Detector:
    train, _ = shifted
    return create("logmel-mahalanobis", calibration="cross-fit").fit(train)


def test_domain_thresholds_are_fitted_on_training_normals_only(shifted, fitted) -> None:
    train, _ = shifted
    assert all(c.split == "train" and not c.is_anomaly for c in train)
    counts = {k: v.size for k, v in fitted.calibration_scores_.items()}
    # out-of-fold scores of every training normal, kept per section and domain
    assert counts == {"00/source": 12, "00/target": 9, "01/source": 12, "01/target": 3}
    method = fitted.threshold_method
    scores = fitted.calibration_scores_
    assert fitted.thresholds_["00/target"] == pytest.approx(
        fit_threshold(scores["00/target"], method)
    )
    assert fitted.thresholds_["00"] == pytest.approx(
        fit_threshold(np.concatenate([scores["00/source"], scores["00/target"]]), method)
    )
    assert fitted.thresholds_["all"] == pytest.approx(
        fit_threshold(np.concatenate(list(scores.values())), method)
    )


def test_too_few_domain_clips_fall_back_to_the_section(fitted) -> None:
    assert set(fitted.thresholds_) == {"all", "00", "00/source", "00/target", "01", "01/source"}
    assert fitted.threshold_for("01", "target") == fitted.thresholds_["01"]
    assert fitted.threshold_for("01", "source") == fitted.thresholds_["01/source"]
    assert fitted.threshold_source("01", "target") == (
        "machine ID 01 (no threshold for its target domain)"
    )


def test_fit_thresholds_min_clips_per_domain() -> None:
    rng = np.random.default_rng(0)
    by_group = {"00/source": rng.gamma(2, size=20), "00/target": rng.gamma(2, size=7)}
    thresholds = fit_thresholds(by_group, "percentile:90", min_clips=8)
    assert set(thresholds) == {"all", "00", "00/source"}
    thresholds = fit_thresholds(by_group, "percentile:90", min_clips=7)
    assert thresholds["00/target"] == pytest.approx(np.percentile(by_group["00/target"], 90))


def test_lookup_order_and_wording() -> None:
    thresholds = {"all": 1.0, "00": 2.0, "00/target": 3.0, "01": 4.0}
    cases = [
        (("00", "target"), "00/target", "section 00, target domain"),
        (("00", "source"), "00", "machine ID 00 (no threshold for its source domain)"),
        (("00", None), "00", "machine ID 00"),
        (("01", "target"), "01", "machine ID 01 (no threshold for its target domain)"),
        (("06", "target"), "all", "pooled (no threshold for ID 06)"),
        (("06", None), "all", "pooled (no threshold for ID 06)"),
        ((None, None), "all", "pooled"),
    ]
    for (machine_id, domain), key, words in cases:
        assert lookup_threshold(thresholds, machine_id, domain) == (key, thresholds[key])
        assert describe_threshold(thresholds, machine_id, domain) == words
    assert lookup_threshold({"00": 2.0}, "01", "target") == (None, None)


def test_clips_without_domain_keep_the_machine_id_thresholds() -> None:
    by_id = {"00": np.arange(10.0), "01": np.arange(3.0)}
    # median of the 13 pooled scores, and of 00 alone; 01 has too few for its own
    assert fit_thresholds(by_id, "percentile:50") == {"all": 3.0, "00": 4.5}


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_2023_decision_files_use_the_domain_thresholds(tmp_path: Path) -> None:
    names = [
        "section_00_source_test_normal_0000_a.wav",
        "section_00_source_test_anomaly_0000_a.wav",
        "section_00_target_test_normal_0000_a.wav",
        "section_00_target_test_anomaly_0000_a.wav",
    ]
    clips = [Clip(Path(n), "fan", "00", "test", n.split("_")[4], n.split("_")[2]) for n in names]
    scores = np.array([1.0, 3.0, 4.0, 6.0])
    # source clips fall back to the section's 2.0, target clips use their own 5.0
    thresholds = {"all": 0.0, "00": 2.0, "00/target": 5.0}
    write_dcase_submission(
        tmp_path, "fan", "x", clips, scores, thresholds, 0, 0, protocol="dcase2023"
    )
    rows = _rows(tmp_path / "decision_result_fan_section_00_test.csv")
    assert rows == [[n, d] for n, d in zip(names, ["0", "1", "0", "1"], strict=True)]
    metrics = decision_metrics(clips, scores, thresholds)["overall"]
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (2, 0, 2, 0)


def test_detector_decision_files_match_its_lookup(shifted, fitted, tmp_path: Path) -> None:
    _, test = shifted
    scores = fitted.score(test)
    write_dcase_submission(
        tmp_path, "fan", fitted.name, test, scores, fitted.thresholds_, 0, 0,
        protocol="dcase2023",
    )  # fmt: skip
    written = {}
    for section in ("00", "01"):
        written.update(_rows(tmp_path / f"decision_result_fan_section_{section}_test.csv"))
    expected = fitted.decide(test, scores)
    for clip, decision in zip(test, expected, strict=True):
        limit = fitted.threshold_for(clip.machine_id, clip.domain)
        assert int(written[clip.path.name]) == decision == int(scores[test.index(clip)] > limit)


def test_save_load_round_trip_keeps_domain_thresholds(shifted, fitted, tmp_path) -> None:
    _, test = shifted
    loaded = Detector.load(fitted.save(tmp_path / "model.safetensors"))
    assert loaded.thresholds_ == pytest.approx(fitted.thresholds_)
    assert set(loaded.calibration_scores_) == set(fitted.calibration_scores_)
    for clip in test:
        key = (clip.machine_id, clip.domain)
        assert loaded.threshold_for(*key) == fitted.threshold_for(*key)
        assert loaded.threshold_source(*key) == fitted.threshold_source(*key)
    assert loaded.threshold_source("00", "target") == "section 00, target domain"
    # refitting from the stored scores gives the same domain thresholds
    assert loaded.refit_threshold(fitted.threshold).thresholds_ == pytest.approx(fitted.thresholds_)
