"""Threshold methods (gamma, percentile, mean + k std), the dispatcher, the detector
parameter, the stored held-out scores, and ``--threshold`` on the command line."""

import copy
import csv
import json

import numpy as np
import pytest

from soundwatch.cli.main import main
from soundwatch.data.clips import Clip
from soundwatch.detectors import Detector, create
from soundwatch.detectors.modelfile import read_model_file
from soundwatch.errors import ConfigError
from soundwatch.evaluation.decisions import (
    best_f1_threshold,
    binary_metrics,
    candidate_thresholds,
    metrics_at,
    youden_threshold,
)
from soundwatch.thresholds import (
    fit_threshold,
    fit_thresholds,
    gamma_threshold,
    meanstd_threshold,
    parse_threshold_method,
    percentile_threshold,
)


# ---------------------------------------------------------------- the methods
def test_percentile_threshold_on_known_data():
    scores = np.arange(101.0)  # 0..100: the P-th percentile is P
    assert percentile_threshold(scores, 95) == pytest.approx(95.0)
    assert percentile_threshold(scores, 50) == pytest.approx(50.0)
    # Linear interpolation between order statistics.
    assert percentile_threshold(np.array([0.0, 10.0]), 25) == pytest.approx(2.5)
    assert percentile_threshold(np.array([7.0]), 99) == 7.0


def test_meanstd_threshold_on_known_data():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, sample std sqrt(2.5)
    assert meanstd_threshold(scores, 3) == pytest.approx(3 + 3 * np.sqrt(2.5))
    assert meanstd_threshold(scores, 0) == pytest.approx(3.0)
    assert meanstd_threshold(scores, -1) == pytest.approx(3 - np.sqrt(2.5))
    assert meanstd_threshold(np.array([4.0]), 3) == 4.0  # one score: no spread


def test_methods_reject_bad_values():
    for bad in (0, 100, -5, 120):
        with pytest.raises(ConfigError, match="percentile must be in"):
            percentile_threshold(np.arange(5.0), bad)
    with pytest.raises(ConfigError, match="finite"):
        meanstd_threshold(np.arange(5.0), float("inf"))
    for function in (percentile_threshold, meanstd_threshold):
        with pytest.raises(ConfigError, match="zero scores"):
            function(np.array([]))
        with pytest.raises(ConfigError, match="NaN"):
            function(np.array([1.0, np.nan]))


def test_dispatcher_matches_the_functions():
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 1.5, 400)
    assert fit_threshold(scores, "gamma:0.95") == gamma_threshold(scores, 0.95)
    assert fit_threshold(scores, "percentile:99") == percentile_threshold(scores, 99)
    assert fit_threshold(scores, "meanstd:2") == meanstd_threshold(scores, 2)
    # Bare names take the defaults; case and spaces do not matter.
    assert fit_threshold(scores, "gamma") == gamma_threshold(scores, 0.9)
    assert fit_threshold(scores, " Percentile ") == percentile_threshold(scores, 95)
    assert fit_threshold(scores, "MEANSTD") == meanstd_threshold(scores, 3)
    assert parse_threshold_method("gamma", default_quantile=0.8).spec == "gamma:0.8"
    assert parse_threshold_method("percentile:99.5").spec == "percentile:99.5"


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("median", "unknown threshold method 'median'"),
        ("", "unknown threshold method"),
        ("gamma:high", "'high' is not a number"),
        ("gamma:1.5", "out of range"),
        ("gamma:0", "out of range"),
        ("percentile:100", "out of range"),
        ("percentile:-1", "out of range"),
        ("meanstd:nan", "out of range"),
    ],
)
def test_dispatcher_errors_are_one_line_config_errors(spec, fragment):
    with pytest.raises(ConfigError) as info:
        fit_threshold(np.arange(10.0), spec)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert "gamma:Q" in message and "percentile:P" in message and "meanstd:K" in message


def test_fit_thresholds_per_id_and_pooled():
    rng = np.random.default_rng(1)
    by_id = {"00": rng.normal(0, 1, 20), "01": rng.normal(10, 1, 20), "02": rng.normal(5, 1, 3)}
    thresholds = fit_thresholds(by_id, "percentile:90", min_clips=8)
    assert list(thresholds) == ["all", "00", "01"]  # "02" has too few clips: pooled only
    assert thresholds["00"] == pytest.approx(np.percentile(by_id["00"], 90))
    pooled = np.concatenate(list(by_id.values()))
    assert thresholds["all"] == pytest.approx(np.percentile(pooled, 90))


# ---------------------------------------------------------------- oracle points
def test_oracle_operating_points_on_known_data():
    y = np.array([False, False, True, False, True])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    # Candidates lie between neighbouring scores; 0.25 flags 0.3, 0.4, 0.5.
    np.testing.assert_allclose(candidate_thresholds(s)[1:], [0.15, 0.25, 0.35, 0.45, 0.5])
    assert best_f1_threshold(y, s) == pytest.approx(0.25)  # F1 0.8
    assert youden_threshold(y, s) == pytest.approx(0.25)  # J = 1 - 1/3
    m = metrics_at(y, s, 0.25)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 2, 0)
    assert m.precision == pytest.approx(2 / 3) and m.recall == 1.0 and m.f1 == pytest.approx(0.8)
    assert m.accuracy == pytest.approx(0.8) and m.fpr == pytest.approx(1 / 3)
    # They differ when few anomalies hide among normals: F1 (blind to true negatives)
    # prefers flagging only the top clip, Youden's J catching both anomalies.
    y2 = np.array([False, False, False, False, True, False, False, False, True])
    s2 = np.array([1, 2, 3, 4, 5, 6, 7, 8, 10], dtype=float)
    assert best_f1_threshold(y2, s2) == pytest.approx(9.0)  # F1 2/3 vs 4/7
    assert youden_threshold(y2, s2) == pytest.approx(4.5)  # J 4/7 vs 1/2
    nothing = binary_metrics([True, False], [0, 0])
    assert nothing.precision == 0.0 and nothing.f1 == 0.0 and nothing.accuracy == 0.5
    with pytest.raises(ConfigError, match="normal and anomalous"):
        youden_threshold([True, True], [1.0, 2.0])


# ---------------------------------------------------------------- the detector parameter
@pytest.fixture(scope="module")
def slider_train(slider_mini):
    from soundwatch.data.datasets import discover

    return discover(slider_mini, "slider", "train")


@pytest.fixture(scope="module")
def default_model(slider_train):
    """logmel-mahalanobis with the default threshold, fitted once for the module."""
    return create("logmel-mahalanobis").fit(slider_train)


def test_detector_threshold_param_and_stored_scores(slider_train, tmp_path):
    train = slider_train
    detector = create("logmel-mahalanobis", threshold="percentile:80", calibration="held-out").fit(
        train
    )
    held = detector.calibration_scores_["00"]
    assert held.size == detector.fit_info_["n_validation"] == 8
    assert detector.thresholds_["00"] == pytest.approx(np.percentile(held, 80))
    path = detector.save(tmp_path / "m.safetensors")
    _, meta = read_model_file(path)
    assert meta["threshold"]["method"] == "percentile"
    assert meta["threshold"]["spec"] == "percentile:80"
    assert "quantile" not in meta["threshold"]
    assert meta["threshold"]["calibration"]["source"] == "held-out"
    assert meta["threshold"]["calibration"]["scores"]["00"] == held.tolist()

    # Re-deriving from the stored scores needs no retraining, and round-trips exactly.
    loaded = Detector.load(path)
    assert loaded.thresholds_ == detector.thresholds_
    loaded.refit_threshold("meanstd:2")
    assert loaded.thresholds_["00"] == pytest.approx(meanstd_threshold(held, 2))
    assert loaded.threshold_method.spec == "meanstd:2"
    loaded.refit_threshold("percentile:80")
    assert loaded.thresholds_ == detector.thresholds_
    with pytest.raises(ConfigError, match="unknown threshold method"):
        loaded.refit_threshold("nope")
    assert loaded.threshold_method.spec == "percentile:80"  # unchanged by the failure


def test_default_threshold_is_backwards_compatible(default_model):
    default = default_model
    assert default.threshold_method.spec == "gamma:0.9"
    held = default.calibration_scores_["00"]
    assert default.thresholds_["00"] == gamma_threshold(held, 0.9)
    # The older threshold_quantile parameter still sets a bare gamma's quantile.
    assert create("logmel-mahalanobis", threshold_quantile=0.95).threshold_method.spec == (
        "gamma:0.95"
    )
    with pytest.raises(ConfigError, match="threshold method 'gamma:2'"):
        create("logmel-mahalanobis", threshold="gamma:2")


def test_model_without_stored_scores_cannot_refit(default_model):
    detector = copy.deepcopy(default_model)
    detector.calibration_scores_ = {}  # as loaded from an older model file
    with pytest.raises(ConfigError, match="retrain"):
        detector.refit_threshold("percentile:95")


def test_clips_without_machine_id_count_for_the_pooled_threshold_only():
    clips = [Clip(f"x{i}.wav", "fan", None) for i in range(3)]
    detector = create("logmel-mahalanobis", threshold="meanstd:1")
    detector._set_calibration(clips, np.array([1.0, 2.0, 3.0]))
    assert detector._fit_thresholds() == {"all": pytest.approx(3.0)}


# ---------------------------------------------------------------- command line
def _scores(path):
    return list(csv.DictReader(path.open()))


def test_threshold_option_on_train_and_score(capsys, slider_mini, tmp_path):
    model = tmp_path / "model.safetensors"
    code = main(
        [
            "train",
            str(slider_mini),
            "-m",
            "slider",
            "--threshold",
            "percentile:90",
            "-o",
            str(model),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "percentile:90 thresholds" in out
    _, meta = read_model_file(model)
    assert meta["params"]["threshold"] == "percentile:90"
    held = np.array(meta["threshold"]["calibration"]["scores"]["00"])

    test_dir = slider_mini / "slider" / "test"
    assert main(["score", str(model), str(test_dir), "-o", str(tmp_path / "a.csv")]) == 0
    rows = _scores(tmp_path / "a.csv")
    assert float(rows[0]["threshold"]) == pytest.approx(np.percentile(held, 90), rel=1e-5)

    # Another method at scoring time, from the stored held-out scores.
    assert (
        main(
            [
                "score",
                str(model),
                str(test_dir),
                "--threshold",
                "meanstd:3",
                "-o",
                str(tmp_path / "b.csv"),
            ]
        )
        == 0
    )
    rows_b = _scores(tmp_path / "b.csv")
    assert float(rows_b[0]["threshold"]) == pytest.approx(meanstd_threshold(held, 3), rel=1e-5)
    assert [r["score"] for r in rows_b] == [r["score"] for r in rows]
    for row in rows_b:
        assert int(row["decision"]) == int(float(row["score"]) > float(row["threshold"]))
    capsys.readouterr()

    code = main(["score", str(model), str(test_dir), "--threshold", "meanstd:x"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "'x' is not a number" in err
    code = main(
        [
            "train",
            str(slider_mini),
            "-m",
            "slider",
            "--threshold",
            "gamma:0.9",
            "--param",
            "threshold=percentile:95",
            "-o",
            str(tmp_path / "c.safetensors"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "contradicts" in err


def test_threshold_option_on_evaluate(capsys, slider_mini, tmp_path):
    out_dir = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(slider_mini),
            "-m",
            "slider",
            "--threshold",
            "meanstd:2",
            "--out",
            str(out_dir),
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads((out_dir / "result.json").read_text())
    # Old keys kept, new keys added.
    assert result["threshold_method"] == "meanstd" and result["threshold_quantile"] is None
    assert result["threshold_spec"] == "meanstd:2"
    assert set(result["thresholds"]) == {"all", "00"}
    assert result["data_root"] == str(slider_mini.absolute())
    assert len(result["test_files"]) == 6
    assert all(f.startswith("slider/test/") for f in result["test_files"])
    decisions = dict(csv.reader((out_dir / "decision_result_slider_id_00.csv").open()))
    scores = dict(csv.reader((out_dir / "anomaly_score_slider_id_00.csv").open()))
    for name, score in scores.items():
        assert int(decisions[name]) == int(float(score) > result["thresholds"]["00"])
