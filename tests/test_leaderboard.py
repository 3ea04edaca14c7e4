"""``soundwatch bench`` and the leaderboard files."""

import csv
import json

import pytest

from soundwatch.cli.main import main
from soundwatch.errors import ConfigError
from soundwatch.evaluation.leaderboard import rank, resolve_detectors, split_params
from soundwatch.synth import generate_dataset


def test_resolve_detectors():
    assert "dcase2020-ae" in resolve_detectors("all")
    assert resolve_detectors("dcase2020-ae, logmel-mahalanobis") == [
        "dcase2020-ae",
        "logmel-mahalanobis",
    ]
    with pytest.raises(ConfigError, match="unknown detector"):
        resolve_detectors("dcase2020-ae,nope")


def test_split_params_routes_prefixed_and_shared_keys():
    detectors = ["dcase2020-ae", "logmel-mahalanobis"]
    params = split_params({"dcase2020-ae.epochs": "3", "n_mels": "64"}, detectors)
    assert params == {
        "dcase2020-ae": {"epochs": "3", "n_mels": "64"},
        "logmel-mahalanobis": {"n_mels": "64"},
    }
    with pytest.raises(ConfigError, match="no chosen detector"):
        split_params({"bogus": "1"}, detectors)
    with pytest.raises(ConfigError, match="not among"):
        split_params({"vae.epochs": "1"}, detectors)


def test_rank_orders_by_auc_and_puts_failures_last():
    results = [
        {"detector": "a", "mean_auc": 0.7, "mean_pauc": 0.6, "per_id": []},
        {"detector": "b", "error": "exit status 1"},
        {
            "detector": "c",
            "mean_auc": 0.9,
            "mean_pauc": 0.5,
            "per_id": [{"id": "00", "auc": 0.9, "pauc": 0.5}],
            "per_kind": {"click": {"auc": 0.8, "pauc": 0.6, "n_anomaly": 3}},
        },
    ]
    rows = rank(results)
    assert [r["detector"] for r in rows] == ["c", "a", "b"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["auc_id_00"] == 0.9
    assert rows[0]["auc_kind_click"] == 0.8 and "auc_kind_click" not in rows[1]


def bench(root, out, detectors: str, param: str) -> int:
    """``soundwatch bench`` of ``detectors`` on slider data under ``root`` into ``out``."""
    argv = ["bench", str(root), "--machine", "slider", "--detectors", detectors]
    return main([*argv, "--param", param, "--out", str(out)])


@pytest.mark.slow
def test_bench_writes_three_leaderboard_files(capsys, tiny_slider_root, tmp_path):
    out = tmp_path / "bench"
    code = bench(tiny_slider_root, out, "logmel-mahalanobis,dcase2020-ae", "dcase2020-ae.epochs=1")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "few-shot regime skipped: ID 00 has 8 training normals" in captured.err
    assert not (out / "regimes.md").exists()
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert {r["detector"] for r in rows} == {"logmel-mahalanobis", "dcase2020-ae"}
    for row in rows:
        assert float(row["peak_memory_mb"]) > 0 and float(row["fit_seconds"]) > 0
        assert row["auc_id_00"] and row["pauc_id_00"]
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["machine_type"] == "slider" and len(board["rows"]) == 2
    assert "| rank | detector |" in (out / "leaderboard.md").read_text()
    for name in ("logmel-mahalanobis", "dcase2020-ae"):
        assert (out / name / "result.json").is_file()
        assert (out / name / "anomaly_score_slider_id_00.csv").is_file()
    # A second run with the same settings reuses the results instead of training again,
    # and the leaderboard keeps the row of the detector not chosen this time.
    before = (out / "dcase2020-ae" / "result.json").stat().st_mtime_ns
    assert bench(tiny_slider_root, out, "dcase2020-ae", "epochs=1") == 0
    assert "dcase2020-ae: skipped (same settings)" in capsys.readouterr().err
    assert (out / "dcase2020-ae" / "result.json").stat().st_mtime_ns == before
    rows = {r["detector"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert rows["dcase2020-ae"]["settings"] == "same"
    assert rows["logmel-mahalanobis"]["settings"] == "not in this bench"

    # Changed parameters rerun the detector instead of passing off the old result.
    assert bench(tiny_slider_root, out, "dcase2020-ae", "epochs=2") == 0
    err = capsys.readouterr().err
    assert "reran (settings changed: params (epochs))" in err and "fit " in err
    result = json.loads((out / "dcase2020-ae" / "result.json").read_text())
    assert result["params"]["epochs"] == 2 and result["fingerprint"]["params"]["epochs"] == 2


@pytest.mark.slow
def test_few_shot_regime_trains_on_the_clips_of_a_smaller_synth_set(
    capsys, tiny_slider_root, tmp_path
):
    out = tmp_path / "bench"
    args = ["--machine", "slider", "--detectors", "logmel-mahalanobis"]
    code = main(["bench", str(tiny_slider_root), *args, "--few-shot", "3", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "few-shot regime, 3 training normals per ID" in captured.out
    few = json.loads((out / "few-shot-3" / "logmel-mahalanobis" / "result.json").read_text())
    full = json.loads((out / "logmel-mahalanobis" / "result.json").read_text())
    assert few["n_train_per_id"] == 3 and full["n_train_per_id"] is None
    assert few["fingerprint"]["n_train"] == 3
    table = (out / "regimes.md").read_text()
    assert "| detector | full AUC | 3-shot AUC |" in table and "| logmel-mahalanobis |" in table

    # The same clips as `soundwatch synth --n-train 3` (same seed and sizes), so the
    # same scores.
    small = tmp_path / "small"
    generate_dataset(
        small, "slider", n_ids=2, n_train_per_id=3, n_test_normal_per_id=1,
        n_test_anomaly_per_id=1, duration=3.0, progress=False,
    )  # fmt: skip
    direct = tmp_path / "direct"
    argv = ["evaluate", str(small), "-m", "slider", "-d", "logmel-mahalanobis"]
    assert main([*argv, "--out", str(direct)]) == 0
    for name in ("anomaly_score_slider_id_00.csv", "anomaly_score_slider_id_02.csv"):
        assert (direct / name).read_text() == (
            out / "few-shot-3" / "logmel-mahalanobis" / name
        ).read_text()


def test_evaluate_refuses_more_training_clips_than_an_id_has(capsys, tiny_slider_root, tmp_path):
    argv = ["evaluate", str(tiny_slider_root), "-m", "slider", "--out", str(tmp_path / "o")]
    assert main([*argv, "--n-train", "9"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: --n-train 9: ID 00 has only 8 training normals"
    assert not (tmp_path / "o").exists()
