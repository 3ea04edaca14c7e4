"""Tests of soundwatch.evaluation: metrics, thresholds and submission files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from soundwatch.data.clips import Clip
from soundwatch.errors import ConfigError
from soundwatch.evaluation.metrics import (
    IdResult,
    auc_pauc,
    evaluate_by_id,
    evaluate_by_kind,
    mean_scores,
)
from soundwatch.evaluation.submission import (
    format_table,
    write_id_file,
    write_result_csv,
    write_result_json,
    write_submission,
)
from soundwatch.thresholds import decide, gamma_threshold

# ---------------------------------------------------------------- metrics, by hand


def test_auc_by_hand_counts_correctly_ordered_pairs():
    # normal: 0.1, 0.4, 0.6    anomaly: 0.5, 0.7, 0.8
    # Pairs (anomaly > normal) out of 3 * 3 = 9:
    #   0.5 beats 0.1, 0.4 (not 0.6) -> 2
    #   0.7 beats all three          -> 3
    #   0.8 beats all three          -> 3
    # AUC = 8 / 9
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.4, 0.6, 0.5, 0.7, 0.8])
    auc, pauc = auc_pauc(y, s)
    assert auc == pytest.approx(8 / 9, abs=1e-12)
    assert isinstance(auc, float) and isinstance(pauc, float)


def test_pauc_by_hand_flat_segment():
    # Same data. ROC points (FPR, TPR) by falling threshold:
    #   0.8 -> (0, 1/3), 0.7 -> (0, 2/3), 0.6 (normal) -> (1/3, 2/3), 0.5 -> (1/3, 1), ...
    # On FPR in [0, 0.1] the curve is flat at TPR = 2/3, so
    #   raw pAUC = 0.1 * 2/3 = 1/15 = 0.0666...
    # McClish: min_area = 0.5 * 0.1**2 = 0.005, max_area = 0.1
    #   pAUC = 0.5 * (1 + (1/15 - 0.005) / (0.1 - 0.005))
    #        = 0.5 * (1 + 0.0616667 / 0.095) = 0.5 * 1.6491228 = 0.8245614
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.4, 0.6, 0.5, 0.7, 0.8])
    _, pauc = auc_pauc(y, s, max_fpr=0.1)
    assert pauc == pytest.approx(0.5 * (1 + (1 / 15 - 0.005) / 0.095), abs=1e-12)


def test_auc_pauc_by_hand_with_tie_and_interpolation():
    # normal: 0.9, 0.1, 0.2, 0.3, 0.4 (5, FPR step 0.2)   anomaly: 0.9, 0.8 (TPR step 0.5)
    # AUC, pairs out of 2 * 5 = 10 (a tie counts 1/2):
    #   0.9 vs 0.9 tie -> 0.5, beats the other four -> 4.5
    #   0.8 loses to 0.9, beats the other four      -> 4
    #   AUC = 8.5 / 10 = 0.85
    # ROC: the tie at 0.9 moves (0, 0) -> (0.2, 0.5) on a straight line; then 0.8 -> (0.2, 1).
    # At FPR = 0.1 the line gives TPR = 0.25; the area under [0, 0.1] is a triangle:
    #   raw pAUC = 0.5 * 0.1 * 0.25 = 0.0125
    #   pAUC = 0.5 * (1 + (0.0125 - 0.005) / (0.1 - 0.005))
    #        = 0.5 * (1 + 0.0075 / 0.095) = 0.5 * 1.0789474 = 0.5394737
    y = np.array([False] * 5 + [True] * 2)
    s = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.9, 0.8])
    auc, pauc = auc_pauc(y, s)
    assert auc == pytest.approx(0.85, abs=1e-12)
    assert pauc == pytest.approx(0.5 * (1 + 0.0075 / 0.095), abs=1e-12)


def test_auc_pauc_perfect_and_reversed():
    y = np.array([0, 0, 1, 1])
    assert auc_pauc(y, np.array([0.0, 1.0, 2.0, 3.0])) == (1.0, 1.0)
    auc, pauc = auc_pauc(y, np.array([3.0, 2.0, 1.0, 0.0]))
    # Reversed: AUC 0; raw pAUC 0 -> 0.5 * (1 + (0 - 0.005) / 0.095) = 0.4736842
    assert auc == 0.0
    assert pauc == pytest.approx(0.5 * (1 - 0.005 / 0.095), abs=1e-12)


def test_auc_pauc_one_class_is_an_error():
    with pytest.raises(ConfigError, match="both normal and anomalous"):
        auc_pauc(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ConfigError, match="0 normal and 2 anomalous"):
        auc_pauc(np.array([True, True]), np.array([0.1, 0.2]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_auc_pauc_non_finite_scores_are_an_error(bad):
    with pytest.raises(ConfigError, match="NaN or infinite"):
        auc_pauc(np.array([0, 1, 0, 1]), np.array([0.1, bad, 0.3, 0.4]))


def test_auc_pauc_bad_inputs():
    with pytest.raises(ConfigError, match="max_fpr"):
        auc_pauc(np.array([0, 1]), np.array([0.0, 1.0]), max_fpr=0.0)
    with pytest.raises(ConfigError, match="2 anomaly scores for 3"):
        auc_pauc(np.array([0, 1, 1]), np.array([0.0, 1.0]))
    with pytest.raises(ConfigError, match="1/0"):
        auc_pauc(np.array([0, 2]), np.array([0.0, 1.0]))


# ---------------------------------------------------------------- metrics per ID


def _clip(name, mid, label, mtype="fan"):
    return Clip(Path("/data") / mtype / "test" / name, mtype, mid, "test", label, None)


def _dev_clips():
    """Two evaluable IDs, one ID with normal clips only, one unlabelled clip."""
    clips = [
        _clip("normal_id_00_0.wav", "00", "normal"),
        _clip("normal_id_00_1.wav", "00", "normal"),
        _clip("anomaly_id_00_0.wav", "00", "anomaly"),
        _clip("normal_id_02_0.wav", "02", "normal"),
        _clip("anomaly_id_02_0.wav", "02", "anomaly"),
        _clip("anomaly_id_02_1.wav", "02", "anomaly"),
        _clip("normal_id_04_0.wav", "04", "normal"),
        _clip("id_02_x.wav", "02", None),
    ]
    scores = np.array([0.1, 0.5, 0.3, 0.2, 0.9, 0.1, 0.4, 7.0])
    return clips, scores


def test_evaluate_by_id_groups_sorts_and_skips():
    clips, scores = _dev_clips()
    results = evaluate_by_id(clips, scores)
    # ID 04 has no anomaly -> skipped; the unlabelled clip is ignored.
    assert [r.machine_id for r in results] == ["00", "02"]
    r00, r02 = results
    # ID 00: normal 0.1, 0.5; anomaly 0.3 -> beats 0.1 only -> AUC 1/2
    assert (r00.auc, r00.n_normal, r00.n_anomaly) == (0.5, 2, 1)
    # ID 02: normal 0.2; anomaly 0.9, 0.1 -> one of two pairs -> AUC 1/2
    assert (r02.auc, r02.n_normal, r02.n_anomaly) == (0.5, 1, 2)
    # ID 00 pAUC: the ROC leaves (0, 0) along TPR = 0 to FPR = 1/2, so the raw area on
    # FPR in [0, 0.1] is 0 -> McClish 0.5 * (1 + (0 - 0.005) / (0.1 - 0.005))
    assert r00.pauc == pytest.approx(0.5 * (1 - 0.005 / 0.095), abs=1e-12)


def test_evaluate_by_kind_ranks_each_kind_against_the_normals():
    clips, scores = _dev_clips()
    kinds = [None, None, "click", None, "click", "hum", None, None]
    by_kind = evaluate_by_kind(clips, scores, kinds)
    assert list(by_kind) == ["click", "hum"]
    # click: ID 00 ranks 0.3 against 0.1, 0.5 (1/2), ID 02 0.9 against 0.2 (1).
    assert by_kind["click"]["auc"] == 0.75 and by_kind["click"]["n_anomaly"] == 2
    # hum: only ID 02 has one, 0.1 below its normal 0.2; ID 00 has none and is skipped.
    assert by_kind["hum"]["auc"] == 0.0 and by_kind["hum"]["n_anomaly"] == 1
    assert evaluate_by_kind(clips, scores, [None] * len(clips)) == {}
    with pytest.raises(ConfigError, match="anomaly kinds"):
        evaluate_by_kind(clips, scores, kinds[:-1])


def test_evaluate_by_id_reversed_order_same_result():
    clips, scores = _dev_clips()
    assert evaluate_by_id(clips[::-1], scores[::-1]) == evaluate_by_id(clips, scores)


def test_evaluate_by_id_nothing_evaluable():
    clips = [_clip("a.wav", "00", "normal"), _clip("b.wav", "02", "anomaly")]
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate_by_id(clips, np.array([0.1, 0.2]))
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        evaluate_by_id([_clip("a.wav", "00", None)], np.array([0.1]))


def test_evaluate_by_id_length_mismatch():
    clips, scores = _dev_clips()
    with pytest.raises(ConfigError, match="for 8 clips"):
        evaluate_by_id(clips, scores[:-1])


def test_evaluate_by_id_missing_ids():
    a = _clip("a.wav", None, "normal")
    b = _clip("b.wav", None, "anomaly")
    (res,) = evaluate_by_id([a, b], np.array([0.0, 1.0]))
    assert res.machine_id == "00"
    with pytest.raises(ConfigError, match="no machine ID"):
        evaluate_by_id([a, b, _clip("c.wav", "02", "normal")], np.array([0.0, 1.0, 0.5]))


def test_mean_scores_arithmetic_and_harmonic():
    results = [IdResult("00", 0.5, 0.6, 1, 1), IdResult("02", 1.0, 0.8, 1, 1)]
    means = mean_scores(results)
    # Harmonic mean of 0.5 and 1.0: 2 / (1/0.5 + 1/1.0) = 2 / 3
    # Harmonic mean of 0.6 and 0.8: 2 / (1/0.6 + 1/0.8) = 2 / (35/12) = 24/35
    assert means == pytest.approx(
        {"mean_auc": 0.75, "mean_pauc": 0.7, "hmean_auc": 2 / 3, "hmean_pauc": 24 / 35},
        abs=1e-12,
    )
    assert set(means) == {"mean_auc", "mean_pauc", "hmean_auc", "hmean_pauc"}


def test_mean_scores_zero_auc_gives_zero_hmean():
    means = mean_scores([IdResult("00", 0.0, 0.47, 1, 1), IdResult("02", 1.0, 1.0, 1, 1)])
    assert means["hmean_auc"] == 0.0
    assert means["mean_auc"] == 0.5
    with pytest.raises(ConfigError):
        mean_scores([])


# ---------------------------------------------------------------- threshold


@pytest.mark.parametrize("shape", [2.0, 5.0])
def test_gamma_threshold_recovers_known_quantile(shape):
    rng = np.random.default_rng(0)
    scores = rng.gamma(shape, scale=3.0, size=2000)
    true = stats.gamma.ppf(0.9, shape, scale=3.0)
    assert gamma_threshold(scores, 0.9) == pytest.approx(true, rel=0.03)


def test_gamma_threshold_is_shift_and_scale_equivariant():
    # Negative log-likelihood-like scores: a gamma sample moved far below zero, and a
    # tiny-scaled one. The fit works on standardised scores, so the threshold just moves.
    rng = np.random.default_rng(1)
    base = rng.gamma(4.0, scale=1.0, size=1000)
    t = gamma_threshold(base)
    assert gamma_threshold(base - 500.0) == pytest.approx(t - 500.0, abs=1e-6)
    assert gamma_threshold(base * 1e-7) == pytest.approx(t * 1e-7, rel=1e-6)
    true = stats.gamma.ppf(0.9, 4.0)
    assert gamma_threshold(base - 500.0) + 500.0 == pytest.approx(true, rel=0.03)
    assert np.isfinite(gamma_threshold(-base))  # left-skewed, negative: still finite


def test_gamma_threshold_is_deterministic():
    scores = np.random.default_rng(2).gamma(3.0, size=300) - 10.0
    assert gamma_threshold(scores) == gamma_threshold(scores.copy())


def test_gamma_threshold_fallbacks():
    # Fewer than 3 scores: empirical quantile.
    assert gamma_threshold(np.array([1.0, 3.0]), 0.5) == 2.0
    assert gamma_threshold(np.array([4.0]), 0.9) == 4.0
    # All equal: the fit has nothing to fit.
    assert gamma_threshold(np.full(10, -2.5)) == -2.5


def test_gamma_threshold_validation():
    for q in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"\(0, 1\)"):
            gamma_threshold(np.arange(10.0), q)
    with pytest.raises(ConfigError, match="NaN"):
        gamma_threshold(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ConfigError, match="zero scores"):
        gamma_threshold(np.array([]))


def test_decide():
    d = decide(np.array([0.1, 0.5, 0.50001, 2.0]), 0.5)
    assert d.tolist() == [0, 0, 1, 1]  # strictly greater is anomalous
    assert d.dtype.kind == "i"
    with pytest.raises(ConfigError):
        decide(np.array([0.1]), float("nan"))
    with pytest.raises(ConfigError):
        decide(np.array([np.nan]), 0.5)


# ---------------------------------------------------------------- files


def _read_bytes(path: Path) -> str:
    # Read raw bytes so that "\r\n" would show.
    return path.read_bytes().decode("utf-8")


def test_write_id_file_scores_and_decisions(tmp_path):
    out = tmp_path / "new" / "dir"
    p = write_id_file(
        out,
        "anomaly_score",
        "fan",
        "02",
        [Path("/x/normal_id_02_0.wav"), "y/anomaly_id_02_1.wav"],
        [0.25, -1.5],
    )
    assert p == out / "anomaly_score_fan_id_02.csv"
    assert _read_bytes(p) == "normal_id_02_0.wav,0.25\nanomaly_id_02_1.wav,-1.5\n"
    p = write_id_file(out, "decision_result", "fan", "02", ["a.wav", "b.wav"], np.array([0, 1]))
    assert p == out / "decision_result_fan_id_02.csv"
    assert _read_bytes(p) == "a.wav,0\nb.wav,1\n"
    # No temporary files left behind.
    assert sorted(x.name for x in out.iterdir()) == [
        "anomaly_score_fan_id_02.csv",
        "decision_result_fan_id_02.csv",
    ]


def test_write_scores_full_precision(tmp_path):
    v = 0.1 + 0.2  # 0.30000000000000004
    p = write_id_file(tmp_path, "anomaly_score", "fan", "00", ["a.wav"], [v])
    assert float(_read_bytes(p).strip().split(",")[1]) == v


def test_writers_reject_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="file name"):
        write_id_file(tmp_path, "anomaly_score", "../fan", "00", ["a.wav"], [0.0])
    with pytest.raises(ConfigError, match="1 file names for 2"):
        write_id_file(tmp_path, "anomaly_score", "fan", "00", ["a.wav"], [0.0, 1.0])
    with pytest.raises(ConfigError, match="0 and 1"):
        write_id_file(tmp_path, "decision_result", "fan", "00", ["a.wav"], [2])
    assert list(tmp_path.iterdir()) == []


def test_write_result_csv_layout(tmp_path):
    results = [IdResult("00", 0.93, 0.71, 10, 5), IdResult("02", 0.5, 0.5, 3, 3)]
    means = {"mean_auc": 0.715, "mean_pauc": 0.605, "hmean_auc": 0.65, "hmean_pauc": 0.58}
    p = write_result_csv(tmp_path / "result.csv", "fan", results, means)
    assert _read_bytes(p) == (
        "fan\n"
        "id,AUC,pAUC\n"
        "00,0.93,0.71\n"
        "02,0.5,0.5\n"
        "Average,0.715,0.605\n"
        "Harmonic mean,0.65,0.58\n"
        "\n"
    )


def test_write_result_json_schema(tmp_path):
    results = [IdResult("00", 0.93, 0.71, 10, 5)]
    means = {"mean_auc": 0.93, "mean_pauc": 0.71, "hmean_auc": 0.93, "hmean_pauc": 0.71}
    p = tmp_path / "sub" / "result.json"
    payload = write_result_json(
        p, "fan", "gmm", results, means, 1.5, 0.25, extra={"seed": np.int64(3), "n": 1}
    )
    data = json.loads(_read_bytes(p))
    assert data == payload
    assert list(data) == [
        "machine_type",
        "detector",
        "per_id",
        "mean_auc",
        "mean_pauc",
        "hmean_auc",
        "hmean_pauc",
        "fit_seconds",
        "score_seconds",
        "seed",
        "n",
    ]
    assert data["per_id"] == [
        {"id": "00", "auc": 0.93, "pauc": 0.71, "n_normal": 10, "n_anomaly": 5}
    ]
    assert (data["machine_type"], data["detector"]) == ("fan", "gmm")
    assert (data["fit_seconds"], data["score_seconds"], data["seed"]) == (1.5, 0.25, 3)
    assert "\r" not in _read_bytes(p)


def test_write_result_json_rejects_clash_and_nan(tmp_path):
    with pytest.raises(ConfigError, match="clash"):
        write_result_json(tmp_path / "r.json", "fan", "gmm", [], None, 0, 0, {"mean_auc": 1})
    with pytest.raises(ConfigError, match=r"r\.json"):
        write_result_json(tmp_path / "r.json", "fan", "gmm", [], None, float("nan"), 0)
    assert not (tmp_path / "r.json").exists()


def test_write_submission_labelled(tmp_path):
    clips, scores = _dev_clips()
    result = write_submission(
        tmp_path, "fan", "gmm", clips, scores, {"02": 0.3, "all": 0.45}, 2.0, 0.5
    )
    names = sorted(x.name for x in tmp_path.iterdir())
    assert names == [
        "anomaly_score_fan_id_00.csv",
        "anomaly_score_fan_id_02.csv",
        "anomaly_score_fan_id_04.csv",
        "decision_result_fan_id_00.csv",
        "decision_result_fan_id_02.csv",
        "decision_result_fan_id_04.csv",
        "result.csv",
        "result.json",
    ]
    # ID 02, in clip order, with its own threshold 0.3; unlabelled clip included.
    assert _read_bytes(tmp_path / "anomaly_score_fan_id_02.csv") == (
        "normal_id_02_0.wav,0.2\nanomaly_id_02_0.wav,0.9\nanomaly_id_02_1.wav,0.1\n"
        "id_02_x.wav,7.0\n"
    )
    assert _read_bytes(tmp_path / "decision_result_fan_id_02.csv") == (
        "normal_id_02_0.wav,0\nanomaly_id_02_0.wav,1\nanomaly_id_02_1.wav,0\nid_02_x.wav,1\n"
    )
    # ID 00 uses "all" = 0.45: scores 0.1, 0.5, 0.3.
    assert _read_bytes(tmp_path / "decision_result_fan_id_00.csv") == (
        "normal_id_00_0.wav,0\nnormal_id_00_1.wav,1\nanomaly_id_00_0.wav,0\n"
    )
    assert [r["id"] for r in result["per_id"]] == ["00", "02"]
    assert result["mean_auc"] == 0.5 and result["hmean_auc"] == 0.5
    assert json.loads(_read_bytes(tmp_path / "result.json")) == result
    csv_lines = _read_bytes(tmp_path / "result.csv").split("\n")
    assert csv_lines[:3] == ["fan", "id,AUC,pAUC", "00,0.5," + str(result["per_id"][0]["pauc"])]
    assert csv_lines[-3:] == [
        f"Harmonic mean,0.5,{result['hmean_pauc']}",
        "",
        "",
    ]


def test_write_submission_unlabelled(tmp_path):
    clips = [_clip("id_00_0.wav", None, None), _clip("id_00_1.wav", None, None)]
    result = write_submission(tmp_path, "pump", "ae", clips, [1.0, 3.0], {"all": 2.0}, 1, 2)
    assert not (tmp_path / "result.csv").exists()
    assert _read_bytes(tmp_path / "anomaly_score_pump_id_00.csv") == (
        "id_00_0.wav,1.0\nid_00_1.wav,3.0\n"
    )
    assert _read_bytes(tmp_path / "decision_result_pump_id_00.csv") == (
        "id_00_0.wav,0\nid_00_1.wav,1\n"
    )
    assert result["per_id"] == []
    assert all(result[k] is None for k in ("mean_auc", "mean_pauc", "hmean_auc", "hmean_pauc"))
    assert json.loads(_read_bytes(tmp_path / "result.json")) == result


def test_write_submission_errors_write_nothing(tmp_path):
    clips, scores = _dev_clips()
    with pytest.raises(ConfigError, match="no decision threshold for machine id 00"):
        write_submission(tmp_path, "fan", "gmm", clips, scores, {"02": 0.3}, 0, 0)
    mixed = [_clip("a.wav", None, None), _clip("b.wav", "00", None)]
    with pytest.raises(ConfigError, match="no machine ID"):
        write_submission(tmp_path, "fan", "gmm", mixed, [0.0, 1.0], {"all": 0.5}, 0, 0)
    bad = scores.copy()
    bad[0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        write_submission(tmp_path, "fan", "gmm", clips, bad, {"all": 0.5}, 0, 0)
    assert list(tmp_path.iterdir()) == []


def test_format_table():
    results = [IdResult("00", 0.93, 0.71, 100, 50), IdResult("02", 1.0, 1.0, 5, 3)]
    table = format_table(results, mean_scores(results))
    lines = table.split("\n")
    assert lines[0].split() == ["id", "AUC", "pAUC", "n_normal", "n_anomaly"]
    assert lines[2].split() == ["00", "0.9300", "0.7100", "100", "50"]
    assert lines[4].split() == ["Average", "0.9650", "0.8550"]
    assert lines[5].startswith("Harmonic mean")
    assert len({len(line) for line in lines[:4]}) == 1  # fixed width
    assert len(format_table(results, None).split("\n")) == 4
