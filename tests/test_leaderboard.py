"""``soundwatch bench`` and the leaderboard files."""

import csv
import json

import pytest

from soundwatch.cli.main import main
from soundwatch.errors import ConfigError
from soundwatch.evaluation.leaderboard import rank, resolve_detectors, split_params


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


@pytest.mark.slow
def test_bench_writes_three_leaderboard_files(capsys, tiny_slider_root, tmp_path):
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            str(tiny_slider_root),
            "--machine",
            "slider",
            "--detectors",
            "logmel-mahalanobis,dcase2020-ae",
            "--param",
            "dcase2020-ae.epochs=1",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
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
    assert (
        main(
            [
                "bench",
                str(tiny_slider_root),
                "--machine",
                "slider",
                "--detectors",
                "dcase2020-ae",
                "--param",
                "epochs=1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "dcase2020-ae: skipped (same settings)" in capsys.readouterr().err
    assert (out / "dcase2020-ae" / "result.json").stat().st_mtime_ns == before
    rows = {r["detector"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert rows["dcase2020-ae"]["settings"] == "same"
    assert rows["logmel-mahalanobis"]["settings"] == "not in this bench"

    # Changed parameters rerun the detector instead of passing off the old result.
    assert (
        main(
            [
                "bench",
                str(tiny_slider_root),
                "--machine",
                "slider",
                "--detectors",
                "dcase2020-ae",
                "--param",
                "epochs=2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "reran (settings changed: params (epochs))" in err and "fit " in err
    result = json.loads((out / "dcase2020-ae" / "result.json").read_text())
    assert result["params"]["epochs"] == 2 and result["fingerprint"]["params"]["epochs"] == 2
