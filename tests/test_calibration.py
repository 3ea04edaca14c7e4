"""Decisions that hold on new recordings (issue 10, item 1): recording sessions in the
synthetic data, cross-fitted calibration split by recording group, --calibrate-on, the
drift warning, decision metrics, and the validation_fraction=0 wording."""

import json
from pathlib import Path

import numpy as np
import pytest

from soundwatch.cli.main import main
from soundwatch.data.audio import write_audio
from soundwatch.data.clips import Clip
from soundwatch.data.datasets import discover, parse_filename
from soundwatch.detectors import create
from soundwatch.detectors.base import Detector
from soundwatch.detectors.calibration import group_folds, recording_groups
from soundwatch.errors import ConfigError
from soundwatch.evaluation.decisions import decision_metrics, decision_summary, unusable_decisions
from soundwatch.synth import generate_dataset
from soundwatch.thresholds import design_rate, drift_check, parse_threshold_method


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sessions_root(tmp_path_factory) -> Path:
    """A small slider set recorded in 2 sessions (2-s clips)."""
    root = tmp_path_factory.mktemp("sessions")
    generate_dataset(
        root,
        machine="slider",
        n_ids=1,
        n_train_per_id=16,
        n_test_normal_per_id=6,
        n_test_anomaly_per_id=6,
        sessions=2,
        duration=2.0,
        progress=False,
    )
    return root


# ----------------------------------------------------------------------- synth sessions
def test_synth_sessions_tag_files_and_differ(sessions_root):
    machine_dir = sessions_root / "slider"
    manifest = json.loads((machine_dir / "synth_manifest.json").read_text())
    assert manifest["settings"]["sessions"] == 2
    records = manifest["clips"]
    for split in ("train", "test"):  # both splits span both sessions
        assert {r["session"] for r in records if r["split"] == split} == {1, 2}
    for r in records:
        assert r["file"].endswith(f"_session{r['session']:02d}_take{r['take']}.wav")
        assert (machine_dir / r["file"]).is_file()
        # the DCASE name still tells ID and label
        info = parse_filename(r["file"])
        assert info["machine_id"] == r["machine_id"] and info["label"] == r["label"]
    # training and test clips of a session are different recordings (takes)
    assert {r["take"] for r in records if r["split"] == "train"} == {1, 2}
    assert {r["take"] for r in records if r["split"] == "test"} == {0}
    by_session = {r["session"]: r["conditions"] for r in records if r["take"] == 1}
    assert by_session[1] != by_session[2]
    assert set(by_session[1]) == {"gain_db", "tilt_db_oct", "background_db", "load"}
    assert len(discover(sessions_root, "slider", "train")) == 16


def test_synth_one_session_keeps_todays_names_and_manifest(tmp_path):
    generate_dataset(tmp_path, n_ids=1, n_train_per_id=2, n_test_normal_per_id=0,
                     n_test_anomaly_per_id=0, duration=0.5, progress=False)  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "slider" / "train").iterdir())
    assert names == ["normal_id_00_00000000.wav", "normal_id_00_00000001.wav"]
    manifest = json.loads((tmp_path / "slider" / "synth_manifest.json").read_text())
    assert "sessions" not in manifest["settings"] and "session" not in manifest["clips"][0]


def test_synth_cli_sessions_option(capsys, tmp_path):
    code, _, _ = run(capsys, "synth", tmp_path, "--ids", 1, "--n-train", 3, "--n-test-normal",
                     0, "--n-test-anomaly", 0, "--sessions", 3)  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "slider" / "train").iterdir())
    assert [n[-20:-4] for n in names] == ["_session01_take1", "_session02_take1",
                                          "_session03_take1"]  # fmt: skip
    code, _, err = run(capsys, "synth", tmp_path / "x", "--sessions", 0)
    assert code == 1 and err.startswith("error: ") and "sessions" in err


# ----------------------------------------------------------------------- groups, folds
def _clips(names, ids=None):
    ids = ids or ["00"] * len(names)
    return [
        Clip(Path("/d/train") / n, machine_id=i, label="normal")
        for n, i in zip(names, ids, strict=True)
    ]


def test_recording_groups_auto_session_folder_none_regex():
    tagged = _clips([f"normal_id_00_{i:08d}_session{i % 3 + 1:02d}_take1.wav" for i in range(9)])
    groups, how = recording_groups(tagged)
    assert how == "session" and sorted(set(groups)) == [
        "session01_take1",
        "session02_take1",
        "session03_take1",
    ]
    plain = _clips([f"normal_id_00_{i:08d}.wav" for i in range(4)])
    assert recording_groups(plain)[1] == "clip"  # one folder, no tags: each clip its own
    foldered = [Clip(Path(f"/d/day{i % 2}/c{i}.wav")) for i in range(4)]
    groups, how = recording_groups(foldered)
    assert how == "folder" and len(set(groups)) == 2
    groups, how = recording_groups(_clips(["a_mic1_x.wav", "b_mic2_y.wav"]), r"_(mic\d)_")
    assert groups == ["mic1", "mic2"] and how.startswith("regex")
    with pytest.raises(ConfigError, match="no recording group"):
        recording_groups(plain, "session")
    with pytest.raises(ConfigError, match="regular expression"):
        recording_groups(plain, "(")


def test_group_folds_keep_groups_together_within_each_id():
    names = [f"n_{i}_session{i % 4 + 1:02d}.wav" for i in range(16)]
    ids = ["00"] * 8 + ["02"] * 8
    clips = _clips(names, ids)
    groups, _ = recording_groups(clips, "session")
    folds, n = group_folds(clips, groups, n_folds=5, seed=0)
    assert n == 4  # fewer groups than folds: one group per fold
    for g in set(groups):
        for mid in ("00", "02"):
            assert len({folds[i] for i, c in enumerate(clips) if groups[i] == g
                        and c.machine_id == mid}) == 1  # fmt: skip
    for mid in ("00", "02"):  # every ID appears in several folds
        assert len({folds[i] for i, c in enumerate(clips) if c.machine_id == mid}) == 4


def test_cross_fitted_calibration_uses_every_training_normal(sessions_root, tmp_path):
    train = discover(sessions_root, "slider", "train")
    detector = create("logmel-mahalanobis").fit(train)
    info = detector.calibration_info_
    assert detector.calibration_source_ == "cross-fit"
    assert info["group_by"] == "session" and info["n_groups"] == 4 and info["folds"] == 4
    assert detector.fit_info_["n_train"] == 16 and detector.fit_info_["n_validation"] == 0
    out_of_fold = np.concatenate(list(detector.calibration_scores_.values()))
    assert out_of_fold.size == 16
    # a model that saw the clip scores it lower than models that did not
    assert out_of_fold.mean() > detector.score(train).mean()
    # stored and reloaded with the model
    loaded = Detector.load(detector.save(tmp_path / "m.safetensors"))
    assert loaded.calibration_info_["source"] == "cross-fit"
    assert "cross-fitted" in loaded.calibration_info_["description"]
    # the old behaviour stays selectable
    old = create("logmel-mahalanobis", calibration="held-out").fit(train)
    assert old.calibration_source_ == "held-out" and old.fit_info_["n_validation"] > 0


def test_neural_detectors_keep_the_held_out_split():
    assert create("logmel-mahalanobis").uses_cross_fit
    assert not create("mlp-ae").uses_cross_fit
    assert create("mlp-ae", calibration="cross-fit").uses_cross_fit
    with pytest.raises(ConfigError, match="calibration"):
        create("mlp-ae", calibration="sometimes")


def test_real_slider_normals_no_longer_all_flagged(capsys, slider_mini, tmp_path):
    """The issue's case: AUC 1.0, yet the held-out threshold flagged all 3 test normals."""
    code, out, _ = run(capsys, "evaluate", slider_mini, "-m", "slider", "--out", tmp_path / "r")
    assert code == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["calibration"]["source"] == "cross-fit"
    assert result["decisions"]["overall"]["fp"] < 3
    assert "cross-fitted" in out


def test_group_by_option_sets_the_parameter(capsys, sessions_root, tmp_path):
    code, out, _ = run(capsys, "evaluate", sessions_root, "-m", "slider", "--group-by", "clip",
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 0 and "split by clip" in out
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["params"]["group_by"] == "clip"
    code, _, err = run(capsys, "evaluate", sessions_root, "-m", "slider", "--group-by", "clip",
                       "-p", "group_by=folder", "--out", tmp_path / "r2")  # fmt: skip
    assert code == 1 and "contradicts" in err


# ----------------------------------------------------------------------- --calibrate-on
def test_calibrate_on_sets_only_the_threshold(capsys, sessions_root, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    normals = sorted((sessions_root / "slider" / "test").glob("normal_*.wav"))
    for path in normals:  # stand-in for separately recorded normals
        (calib / path.name).write_bytes(path.read_bytes())
    model = tmp_path / "m.safetensors"
    code, out, _ = run(capsys, "train", sessions_root, "-m", "slider", "--calibrate-on", calib,
                       "-o", model)  # fmt: skip
    assert code == 0 and "separately recorded" in out
    detector = Detector.load(model)
    assert detector.calibration_source_ == "calibrate-on"
    assert sum(v.size for v in detector.calibration_scores_.values()) == len(normals)
    assert detector.fit_info_["n_train"] == 16  # trained on all training clips only

    code, _, err = run(capsys, "train", sessions_root, "-m", "slider", "--calibrate-on",
                       tmp_path / "missing", "-o", tmp_path / "m2.safetensors")  # fmt: skip
    assert code == 1 and "--calibrate-on" in err and not (tmp_path / "m2.safetensors").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    anomaly = next((sessions_root / "slider" / "test").glob("anomaly_*.wav"))
    (bad / anomaly.name).write_bytes(anomaly.read_bytes())
    code, _, err = run(capsys, "evaluate", sessions_root, "-m", "slider", "--calibrate-on", bad,
                       "--out", tmp_path / "r")  # fmt: skip
    assert code == 1 and "must be normal" in err and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------- drift warning
def test_drift_check_statistic():
    assert design_rate(parse_threshold_method("gamma:0.9")) == pytest.approx(0.1)
    assert design_rate(parse_threshold_method("percentile:95")) == pytest.approx(0.05)
    assert design_rate(parse_threshold_method("meanstd:3")) == pytest.approx(0.00135, rel=0.01)
    assert drift_check(np.ones(3), 0.1).drifting  # 3 of 3 at 10%: p = 0.001
    assert not drift_check(np.r_[1, 0, 0, 0, 0], 0.1).drifting  # 20%: under 3x
    assert not drift_check(np.r_[1, 1, 0, 0, 0], 0.1).drifting  # 40%, p = 0.08
    check = drift_check(np.r_[np.ones(40), np.zeros(60)], 0.1)
    assert check.drifting and check.p_value < 1e-6
    message = check.message()
    assert "--calibrate-on" in message and "--threshold" in message and "\n" not in message


def test_score_warns_once_when_a_batch_drifts(capsys, sessions_root, tmp_path):
    model = tmp_path / "m.safetensors"
    assert run(capsys, "train", sessions_root, "-m", "slider", "-o", model)[0] == 0
    batch = tmp_path / "batch"
    batch.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):  # same rate and length as the training clips, but white noise
        write_audio(batch / f"noise_{i}.wav", 0.3 * rng.standard_normal(32000), 16000)
    code, _, err = run(capsys, "score", model, batch, "-o", tmp_path / "s.csv")
    assert code == 0
    drift = [line for line in err.splitlines() if "--calibrate-on" in line]
    assert len(drift) == 1 and "--threshold" in drift[0] and "8 of 8" in drift[0]
    # a batch of normal training clips raises no such warning
    train = sessions_root / "slider" / "train"
    code, _, err = run(capsys, "score", model, train, "-o", tmp_path / "t.csv")
    assert code == 0 and "--calibrate-on" not in err
    # the named remedy works in score: the threshold is refitted on the noise's scores
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(8):
        write_audio(calib / f"noise_{i}.wav", 0.3 * rng.standard_normal(32000), 16000)
    code, _, err = run(capsys, "score", model, batch, "--calibrate-on", calib,
                       "-o", tmp_path / "c.csv")  # fmt: skip
    assert code == 0 and "--calibrate-on" not in err
    rows = (tmp_path / "c.csv").read_text().splitlines()[1:]
    assert sum(int(row.split(",")[-1]) for row in rows) < 8


def test_evaluate_and_report_warn_when_decisions_are_unusable(capsys, sessions_root, tmp_path):
    # a threshold fitted on training scores flags far too many new normals
    out = tmp_path / "r"
    code, _, err = run(capsys, "evaluate", sessions_root, "-m", "slider", "-p",
                            "calibration=held-out", "-p", "validation_fraction=0",
                            "--out", out)  # fmt: skip
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    assert result["drift"]["drifting"] and result["drift"]["on"] == "normal clips"
    assert len([line for line in err.splitlines() if "--calibrate-on" in line]) == 1
    assert "Decisions are unusable" in unusable_decisions(result)
    code, _, _ = run(capsys, "report", out)
    page = (out / "report" / "report.html").read_text()
    assert "Decisions are unusable" in page


# ----------------------------------------------------------------------- decision metrics
def test_decision_metrics_counts():
    clips = [Clip(Path(f"{lab}_{i}.wav"), machine_id="00", label=lab)
             for i, lab in enumerate(["normal"] * 4 + ["anomaly"] * 2)]  # fmt: skip
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.1])
    d = decision_metrics(clips, scores, {"all": 0.5})
    assert d["overall"] == {"precision": 0.5, "recall": 0.5, "fpr": 0.25,
                            "tp": 1, "fp": 1, "tn": 3, "fn": 1}  # fmt: skip
    assert d["per_id"]["00"] == d["overall"]
    none_flagged = decision_metrics(clips, scores, {"all": 5.0})["overall"]
    assert none_flagged["precision"] is None and none_flagged["fpr"] == 0.0
    summary = decision_summary(clips, scores, {"all": 0.5}, parse_threshold_method("gamma"))
    assert summary["design_rate"] == pytest.approx(0.1) and not summary["drift"]["drifting"]


def test_evaluate_prints_decision_metrics(capsys, sessions_root, tmp_path):
    code, out, _ = run(capsys, "evaluate", sessions_root, "-m", "slider", "--out", tmp_path / "r")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("id "))
    assert header.split()[:6] == ["id", "AUC", "pAUC", "prec", "recall", "FPR"]
    assert "meant to flag 10% of normal clips" in out
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    overall = result["decisions"]["overall"]
    assert {"precision", "recall", "fpr"} <= set(overall)
    assert overall["fp"] + overall["tn"] == 6 and overall["tp"] + overall["fn"] == 6


# ----------------------------------------------------------------------- validation_fraction=0
def test_validation_fraction_zero_says_training_scores(capsys, sessions_root, tmp_path):
    train = discover(sessions_root, "slider", "train")
    detector = create("logmel-mahalanobis", calibration="held-out", validation_fraction=0.0).fit(
        train
    )
    assert detector.calibration_source_ == "training"
    assert "validation_fraction=0" in detector.calibration_info_["description"]
    out = tmp_path / "r"
    code, stdout, _ = run(capsys, "evaluate", sessions_root, "-m", "slider", "-p",
                          "calibration=held-out", "-p", "validation_fraction=0",
                          "--out", out)  # fmt: skip
    assert code == 0 and "training scores (validation_fraction=0)" in stdout
    result = json.loads((out / "result.json").read_text())
    assert result["calibration"]["source"] == "training"
    assert "validation_fraction=0" in result["calibration"]["description"]
    run(capsys, "report", out)
    page = (out / "report" / "report.html").read_text()
    assert "fitted on training scores (validation_fraction=0)" in page


def test_too_few_clips_to_cross_fit_say_so(sessions_root):
    train = discover(sessions_root, "slider", "train")[:3]
    detector = create("logmel-mahalanobis").fit(train)
    assert detector.calibration_source_ == "training"
    assert "too few clips to hold any out" in detector.calibration_info_["description"]


def test_gamma_threshold_survives_one_outlier():
    """One far outlier among 100 normal scores made the three-parameter gamma fit
    degenerate, with its 0.9 quantile below the scores' median (all normals flagged)."""
    from soundwatch.thresholds import gamma_threshold

    for seed in range(5):
        rng = np.random.default_rng(seed)
        bulk = 100 + rng.gamma(4.0, 25.0, 99)
        threshold = gamma_threshold(np.r_[bulk, 1000.0], 0.9)
        assert np.quantile(bulk, 0.8) < threshold < np.quantile(bulk, 0.99)
        # scores without an outlier keep the three-parameter fit
        assert gamma_threshold(bulk, 0.9) == pytest.approx(np.quantile(bulk, 0.9), rel=0.1)
