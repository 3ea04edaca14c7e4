"""DCASE 2020-2025 protocols: layouts, attributes, official metrics and submission files.

Expected numbers are worked out by hand in the comments. pAUC uses the McClish
standardisation of the evaluators: 0.5 * (1 + (raw - 0.005) / (0.1 - 0.005)) for
max FPR 0.1, where raw is the area under the ROC curve over FPR in [0, 0.1].
"""

from __future__ import annotations

import csv
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from soundwatch.data.attributes import parse_attributes, read_attribute_csv
from soundwatch.data.clips import Clip
from soundwatch.data.datasets import discover
from soundwatch.errors import ConfigError, DatasetError
from soundwatch.evaluation.dcase import (
    combine_results,
    official_score,
    section_results,
    submission_file_name,
    write_dcase_submission,
)
from soundwatch.evaluation.dcase_protocols import infer_protocol
from soundwatch.evaluation.metrics import evaluate_by_id


def mcclish(raw: float) -> float:
    return 0.5 * (1 + (raw - 0.005) / (0.1 - 0.005))


def hmean(*values: float) -> float:
    return len(values) / sum(1 / v for v in values)


# ------------------------------------------------------------------ data layouts
def write_silence(path: Path, seconds: float = 0.1, sr: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(b"\0\0" * int(seconds * sr))


def test_real_2023_mini_clips_know_section_domain_and_attributes(shared_dir):
    root = shared_dir / "data" / "dcase2023-mini" / "dev_data"
    clips = {c.path.name: c for c in discover(root)}
    toy = clips["section_00_source_test_normal_0028_car_C2_spd_34V_mic_1.wav"]
    assert (toy.machine_type, toy.machine_id, toy.split, toy.domain, toy.label) == (
        "ToyCar",
        "00",
        "test",
        "source",
        "normal",
    )
    assert toy.attributes == (("car", "C2"), ("spd", "34V"), ("mic", "1"))
    valve = clips["section_00_target_test_anomaly_0044_pat_03.wav"]
    assert (valve.domain, valve.label, valve.attributes) == ("target", "anomaly", (("pat", "03"),))
    # the official attributes_00.csv of bearing lists this clip with vel=8, loc=G
    bearing = clips["section_00_target_test_anomaly_0021_vel_8_loc_G.wav"]
    assert bearing.attributes == (("vel", "8"), ("loc", "G"))
    assert infer_protocol([c for c in clips.values() if c.split == "test"])[0] == "dcase2023"


def test_real_attribute_csv_is_read(shared_dir):
    table = read_attribute_csv(
        shared_dir / "data" / "dcase2023-mini" / "dev_data" / "fan" / "attributes_00.csv"
    )
    assert table["section_00_source_train_normal_0001_m-n_W.wav"] == (("m-n", "W"),)
    assert len(table) == 1200


def test_attribute_csv_wins_over_the_name_and_covers_eval_names(tmp_path):
    # an evaluation clip's name carries no attributes; the CSV gives them
    write_silence(tmp_path / "eval_data" / "fan" / "test" / "section_00_0000.wav")
    write_silence(
        tmp_path / "eval_data" / "fan" / "train" / "section_00_target_train_normal_0000_a_1.wav"
    )
    (tmp_path / "eval_data" / "fan" / "attributes_00.csv").write_text(
        "file_name,d1p,d1v,d2p,d2v\n"
        "fan/test/section_00_0000.wav,m-n,X,,\n"
        "fan/train/section_00_target_train_normal_0000_a_1.wav,a,1,b,2\n"
    )
    clips = {c.path.name: c for c in discover(tmp_path / "eval_data")}
    assert clips["section_00_0000.wav"].attributes == (("m-n", "X"),)
    assert clips["section_00_0000.wav"].label is None
    assert clips["section_00_target_train_normal_0000_a_1.wav"].attributes == (
        ("a", "1"),
        ("b", "2"),
    )


def test_broken_attribute_csv_is_skipped_with_a_warning(tmp_path, caplog):
    write_silence(tmp_path / "fan" / "train" / "section_00_source_train_normal_0000_a_1.wav")
    (tmp_path / "fan" / "attributes_00.csv").write_text("name,x\n")
    (clip,) = discover(tmp_path)
    assert clip.attributes == (("a", "1"),)
    assert "file_name" in caplog.text and "from the file names instead" in caplog.text
    with pytest.raises(DatasetError, match="file_name"):
        read_attribute_csv(tmp_path / "fan" / "attributes_00.csv")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "section_00_source_train_normal_0000_car_C2_spd_34V_mic_1.wav",
            (("car", "C2"), ("spd", "34V"), ("mic", "1")),
        ),
        ("section_00_source_train_normal_0000_noAttribute.wav", ()),
        ("section_01_target_test_anomaly_0003_odd.wav", (("attributes", "odd"),)),
        ("section_03_source_test_0000.wav", ()),
        ("normal_id_00_00000000.wav", ()),
    ],
)
def test_parse_attributes(name, expected):
    assert parse_attributes(name) == expected


def test_2021_layout_with_source_and_target_test_folders(tmp_path):
    root = tmp_path / "dev_data"
    for name in (
        "train/section_00_source_train_normal_0000_strength_1.wav",
        "train/section_00_target_train_normal_0000_strength_3.wav",
        "source_test/section_00_source_test_anomaly_0000.wav",
        "target_test/section_00_target_test_normal_0000.wav",
    ):
        write_silence(root / "fan" / name)
    # 2021 evaluation names carry no label; the folder gives the domain
    write_silence(tmp_path / "eval_data" / "fan" / "target_test" / "section_03_0000.wav")
    test = discover(root, split="test")
    assert [(c.domain, c.label) for c in test] == [("source", "anomaly"), ("target", "normal")]
    assert infer_protocol(test)[0] == "dcase2021"
    (ev,) = discover(tmp_path / "eval_data")
    assert (ev.machine_id, ev.split, ev.domain, ev.label) == ("03", "test", "target", None)


def test_infer_protocol_by_year(tmp_path):
    def clips(*names: str) -> list[Clip]:
        return [Clip(Path("dev_data/fan/test") / n, "fan", *_parse(n)) for n in names]

    assert infer_protocol(clips("anomaly_id_00_00000001.wav"))[0] == "dcase2020"
    assert (
        infer_protocol(
            clips(
                "section_00_target_test_normal_0000.wav", "section_02_source_test_anomaly_0000.wav"
            )
        )[0]
        == "dcase2022"
    )
    assert infer_protocol(clips("section_00_target_test_normal_0000.wav"))[0] == "dcase2023"


def _parse(name: str) -> tuple:
    from soundwatch.data.datasets import parse_filename

    info = parse_filename(name)
    return info["machine_id"], "test", info["label"], info["domain"]


# ------------------------------------------------------------------ official metrics
def clip(section: str, domain: str, label: str, i: int, machine_type: str = "fan") -> Clip:
    return Clip(
        Path(f"section_{section}_{domain}_test_{label}_{i:04d}.wav"),
        machine_type,
        section,
        "test",
        label,
        domain,
    )


def example() -> tuple[list[Clip], np.ndarray]:
    """Two sections of one machine type.

    section 00: source normals 1, 2; target normals 5, 0; source anomaly 3; target anomaly 4
    section 01: source normals 0.2, 0.6; target normal 0.4; source anomaly 0.5; target anomaly 0.9
    """
    rows = [
        ("00", "source", "normal", 1.0),
        ("00", "source", "normal", 2.0),
        ("00", "target", "normal", 5.0),
        ("00", "target", "normal", 0.0),
        ("00", "source", "anomaly", 3.0),
        ("00", "target", "anomaly", 4.0),
        ("01", "source", "normal", 0.2),
        ("01", "source", "normal", 0.6),
        ("01", "target", "normal", 0.4),
        ("01", "source", "anomaly", 0.5),
        ("01", "target", "anomaly", 0.9),
    ]
    clips = [clip(sec, dom, lab, i) for i, (sec, dom, lab, _) in enumerate(rows)]
    return clips, np.array([r[3] for r in rows])


# 2022-2025, section 00: AUC source = {1, 2} vs all anomalies {3, 4} = 1; AUC target =
# {5, 0} vs {3, 4}: 2 of 4 pairs = 0.5; pAUC over all: 5 (a normal) ranks first, so
# TPR = 0 up to FPR 0.25 and raw = 0.
# section 01: AUC source = {0.2, 0.6} vs {0.5, 0.9}: 3 of 4 = 0.75; AUC target = {0.4}
# vs {0.5, 0.9} = 1; pAUC: 0.9 (anomaly) first, then 0.6 (normal): TPR = 0.5 over FPR
# [0, 1/3], raw = 0.05.
POOLED = {
    "00": (1.0, 0.5, mcclish(0.0)),
    "01": (0.75, 1.0, mcclish(0.05)),
}


@pytest.mark.parametrize("protocol", ["dcase2022", "dcase2023", "dcase2024", "dcase2025"])
def test_2022_to_2025_metrics_and_official_score(protocol):
    clips, scores = example()
    results = section_results(clips, scores, protocol)
    for r in results:
        assert (r.auc_source, r.auc_target, r.pauc) == pytest.approx(POOLED[r.section])
        assert r.pauc_source is None and r.pauc_target is None
    score = official_score(results, protocol)
    assert score["official_score"] == pytest.approx(hmean(*POOLED["00"], *POOLED["01"]))
    assert score["hmean_auc_target"] == pytest.approx(hmean(0.5, 1.0))
    assert score["missing"] == []


def test_2021_metrics_stay_within_each_domain():
    # section 00 source: {1, 2} vs {3}: AUC 1, pAUC 1 (3 first: TPR 1 from FPR 0)
    # section 00 target: {5, 0} vs {4}: AUC 0.5; 5 first -> TPR 0 up to FPR 0.5, raw 0
    # section 01 source: {0.2, 0.6} vs {0.5}: AUC 0.5; 0.6 first -> raw 0
    # section 01 target: {0.4} vs {0.9}: AUC 1, pAUC 1
    clips, scores = example()
    results = {r.section: r for r in section_results(clips, scores, "dcase2021")}
    r0, r1 = results["00"], results["01"]
    assert (r0.auc_source, r0.pauc_source) == pytest.approx((1.0, 1.0))
    assert (r0.auc_target, r0.pauc_target) == pytest.approx((0.5, mcclish(0.0)))
    assert (r1.auc_source, r1.pauc_source) == pytest.approx((0.5, mcclish(0.0)))
    assert (r1.auc_target, r1.pauc_target) == pytest.approx((1.0, 1.0))
    assert r0.pauc is None
    score = official_score(list(results.values()), "dcase2021")
    expected = hmean(1.0, 1.0, 0.5, mcclish(0.0), 0.5, mcclish(0.0), 1.0, 1.0)
    assert score["official_score"] == pytest.approx(expected)
    assert score["hmean_pauc"] == pytest.approx(hmean(1.0, mcclish(0.0), mcclish(0.0), 1.0))


def test_2020_scores_per_machine_id():
    # id 00: normals {0.1, 0.2}, anomalies {0.15, 0.3}: 3 of 4 pairs -> AUC 0.75
    names = [
        "normal_id_00_0.wav",
        "normal_id_00_1.wav",
        "anomaly_id_00_0.wav",
        "anomaly_id_00_1.wav",
    ]
    clips = [Clip(Path(n), "fan", "00", "test", n.split("_")[0]) for n in names]
    (result,) = evaluate_by_id(clips, np.array([0.1, 0.2, 0.15, 0.3]))
    assert result.auc == pytest.approx(0.75)
    assert infer_protocol(clips)[0] == "dcase2020"
    with pytest.raises(ConfigError, match="no official score"):
        official_score([], "dcase2020")


def test_undefined_values_leave_the_official_score_undefined():
    clips = [clip("00", "source", "normal", 0), clip("00", "target", "anomaly", 1)]
    (r,) = section_results(clips, np.array([0.0, 1.0]), "dcase2023")
    assert r.auc_source == 1.0 and r.auc_target is None
    score = official_score([r], "dcase2023")
    assert score["official_score"] is None
    assert score["missing"] == ["fan section 00 auc_target"]


def test_labelled_clip_without_domain_is_refused():
    clips = [Clip(Path("section_00_0000.wav"), "fan", "00", "test", "normal")]
    with pytest.raises(ConfigError, match="domain"):
        section_results(clips, np.array([0.0]), "dcase2023")


def test_combine_two_machine_types():
    clips, scores = example()
    fan = section_results(clips, scores, "dcase2024")
    # a second machine type whose only section is perfect: all three values 1
    pump = [
        clip("00", d, lab, i, "pump")
        for i, (d, lab) in enumerate(
            [("source", "normal"), ("target", "normal"), ("source", "anomaly")]
        )
    ]
    pump_results = section_results(pump, np.array([0.0, 0.0, 1.0]), "dcase2024")
    from dataclasses import asdict

    payloads = [
        {"protocol": "dcase2024", "machine_type": "fan", "per_section": [asdict(r) for r in fan]},
        {
            "protocol": "dcase2024",
            "machine_type": "pump",
            "per_section": [asdict(r) for r in pump_results],
        },
    ]
    combined = combine_results(payloads)
    assert combined["official_score"] == pytest.approx(
        hmean(*POOLED["00"], *POOLED["01"], 1.0, 1.0, 1.0)
    )
    with pytest.raises(ConfigError, match="one protocol"):
        combine_results([payloads[0], {**payloads[1], "protocol": "dcase2021"}])
    with pytest.raises(ConfigError, match="twice"):
        combine_results([payloads[0], payloads[0]])


# ------------------------------------------------------------------ submission files
@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("dcase2021", "anomaly_score_fan_section_00_source_test.csv"),
        ("dcase2022", "anomaly_score_fan_section_00_test.csv"),
        ("dcase2025", "anomaly_score_fan_section_00_test.csv"),
    ],
)
def test_submission_file_names(protocol, expected):
    assert submission_file_name(protocol, "anomaly_score", "fan", "00", "source") == expected


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_write_2021_submission_splits_domains(tmp_path):
    clips, scores = example()
    result = write_dcase_submission(
        tmp_path, "fan", "x", clips, scores, {"all": 2.5}, 1.0, 2.0, protocol="dcase2021"
    )
    files = sorted(p.name for p in tmp_path.glob("*_test.csv"))
    assert files == sorted(
        f"{kind}_fan_section_{s}_{d}_test.csv"
        for kind in ("anomaly_score", "decision_result")
        for s in ("00", "01")
        for d in ("source", "target")
    )
    rows = read_rows(tmp_path / "decision_result_fan_section_00_source_test.csv")
    # threshold 2.5: scores 1, 2, 3 -> 0, 0, 1
    assert [r[1] for r in rows] == ["0", "0", "1"]
    assert result["protocol"] == "dcase2021"
    assert result["official"]["official_score"] is not None
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["per_section"][0]["section"] == "00"
    layout = read_rows(tmp_path / "result.csv")
    assert layout[:2] == [["fan"], ["section", "domain", "AUC", "pAUC"]]


def test_write_2023_submission_one_file_per_section(tmp_path):
    clips, scores = example()
    write_dcase_submission(
        tmp_path, "fan", "x", clips, scores, {"00": 10.0, "01": 0.0}, 0, 0, protocol="dcase2023"
    )
    rows = read_rows(tmp_path / "anomaly_score_fan_section_00_test.csv")
    assert [r[0] for r in rows] == [c.path.name for c in clips[:6]]
    assert [float(r[1]) for r in rows] == list(scores[:6])
    assert {r[1] for r in read_rows(tmp_path / "decision_result_fan_section_00_test.csv")} == {"0"}
    assert {r[1] for r in read_rows(tmp_path / "decision_result_fan_section_01_test.csv")} == {"1"}
    layout = read_rows(tmp_path / "result.csv")
    assert layout[1] == ["section", "AUC (all)", "AUC (source)", "AUC (target)", "pAUC"]
    assert float(layout[-1][2]) == pytest.approx(hmean(*POOLED["00"], *POOLED["01"]))


def test_2021_eval_clip_without_domain_is_refused_before_writing(tmp_path):
    clips = [Clip(Path("section_03_0000.wav"), "fan", "03", "test", None, None)]
    with pytest.raises(ConfigError, match="domain"):
        write_dcase_submission(
            tmp_path, "fan", "x", clips, np.array([0.0]), {"all": 1.0}, 0, 0, protocol="dcase2021"
        )
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ end to end
def write_noise(path: Path, rng: np.random.Generator, tone: bool, sr: int = 16000) -> None:
    """1 s of noise; ``tone`` adds a loud 3 kHz whistle (the anomaly)."""
    t = np.arange(sr) / sr
    signal = 0.1 * rng.standard_normal(sr)
    if tone:
        signal += 0.5 * np.sin(2 * np.pi * 3000 * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())


def make_year_tree(root: Path, machine_type: str, layout: str, seed: int) -> None:
    """A tiny labelled development set: section 00, source and target, 2023 or 2021 layout."""
    rng = np.random.default_rng(seed)
    for d, n in (("source", 8), ("target", 2)):
        for i in range(n):
            write_noise(
                root
                / machine_type
                / "train"
                / f"section_00_{d}_train_normal_{i:04d}_a_{i % 2}.wav",
                rng,
                False,
            )
        folder = "test" if layout == "2023" else f"{d}_test"
        for label in ("normal", "anomaly"):
            for i in range(2):
                name = f"section_00_{d}_test_{label}_{i:04d}_a_{i}.wav"
                write_noise(root / machine_type / folder / name, rng, label == "anomaly")


def test_evaluate_and_official_score_commands_2023(tmp_path, capsys):
    from soundwatch.cli.main import main

    root = tmp_path / "dev_data"
    for seed, machine_type in enumerate(("fan", "valve")):
        make_year_tree(root, machine_type, "2023", seed)
        code = main(
            [
                "evaluate",
                str(root),
                "-m",
                machine_type,
                "-d",
                "logmel-mahalanobis",
                "--out",
                str(tmp_path / machine_type),
            ]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "dcase2023 (inferred: only section 00" in out
        assert "official dcase2023 score (harmonic mean)" in out
        result = json.loads((tmp_path / machine_type / "result.json").read_text())
        assert result["protocol"] == "dcase2023"
        (section,) = result["per_section"]
        assert (section["n_normal_source"], section["n_normal_target"]) == (2, 2)
        assert section["n_anomaly_source"] + section["n_anomaly_target"] == 4
        names = {p.name for p in (tmp_path / machine_type).glob("*_test.csv")}
        assert names == {
            f"anomaly_score_{machine_type}_section_00_test.csv",
            f"decision_result_{machine_type}_section_00_test.csv",
        }
    code = main(["official-score", str(tmp_path / "fan"), str(tmp_path / "valve")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("dcase2023: fan, valve")
    assert "official_score" in out


def test_evaluate_2021_layout_and_wrong_protocol(tmp_path, capsys):
    from soundwatch.cli.main import main

    root = tmp_path / "dev_data"
    make_year_tree(root, "pump", "2021", 3)
    code = main(
        [
            "evaluate",
            str(root),
            "-m",
            "pump",
            "-d",
            "logmel-mahalanobis",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "dcase2021 (inferred: test clips in source_test/target_test folders)" in out
    assert (tmp_path / "r" / "anomaly_score_pump_section_00_target_test.csv").is_file()
    # 2020 clips cannot be scored per section: refused before any training
    for i, label in enumerate(("normal", "anomaly")):
        write_silence(tmp_path / "d20" / "fan" / "test" / f"{label}_id_00_{i:08d}.wav")
    write_silence(tmp_path / "d20" / "fan" / "train" / "normal_id_00_00000009.wav")
    code = main(
        [
            "evaluate",
            str(tmp_path / "d20"),
            "-m",
            "fan",
            "--protocol",
            "dcase2023",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    _, err = capsys.readouterr()
    assert code != 0 and err.startswith("error: dcase2023 needs the domain of every labelled clip")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "result.json").exists()


# ------------------------------------------------------------------ DCASE 2023 baseline
def test_dcase2023_ae_published_settings():
    from soundwatch.detectors import create

    detector = create("dcase2023-ae")
    params = detector.get_params()
    assert (params["batch_size"], params["epochs"], params["learning_rate"]) == (256, 100, 1e-3)
    assert (params["context"], params["n_mels"], params["hidden"], params["bottleneck"]) == (
        5,
        128,
        128,
        8,
    )
    assert params["validation_fraction"] == 0.1 and params["scoring"] == "mse"
    assert detector.train_config().restore_best is False  # the baseline keeps the last epoch
    with pytest.raises(ConfigError, match="scoring"):
        create("dcase2023-ae", scoring="euclid")


def test_dcase2023_ae_selective_mahalanobis(tmp_path):
    from soundwatch.detectors import Detector, create

    root = tmp_path / "dev_data"
    make_year_tree(root, "fan", "2023", 7)
    train = discover(root, "fan", split="train")
    test = discover(root, "fan", split="test")
    tiny = {"epochs": 2, "threads": 1, "hidden": 16, "bottleneck": 4, "depth": 2, "n_mels": 16}
    detector = create("dcase2023-ae", scoring="mahalanobis", **tiny).fit(train)
    assert set(detector.inv_cov_) == {"source", "target"}
    assert detector.inv_cov_["source"].shape == (5 * 16, 5 * 16)
    # the two covariances differ: each comes from its own domain's clips
    assert not np.allclose(detector.inv_cov_["source"], detector.inv_cov_["target"])
    scores = detector.score(test)
    store = detector._store(test, 1)
    from soundwatch.detectors.dcase2023_ae import _clip_mean_rows

    mean_errors = _clip_mean_rows(store, detector._map_windows(store, detector._window_errors))
    by_domain = [
        np.einsum("ij,jk,ik->i", mean_errors, detector.inv_cov_[d], mean_errors)
        for d in ("source", "target")
    ]
    np.testing.assert_allclose(scores, np.minimum(*by_domain), rtol=1e-6)
    assert np.all(scores <= by_domain[0] + 1e-9) and np.any(scores < by_domain[0])
    path = detector.save(tmp_path / "m.safetensors")
    np.testing.assert_allclose(Detector.load(path).score(test), scores, rtol=1e-6)


# ------------------------------------------------------------------ evaluation ground truth
def test_2023_eval_data_labelled_from_the_evaluator_files(tmp_path, capsys):
    from soundwatch.cli.main import main
    from soundwatch.data.ground_truth import apply_ground_truth

    rng = np.random.default_rng(11)
    root = tmp_path / "eval_data"
    for d, n in (("source", 8), ("target", 2)):
        for i in range(n):
            write_noise(
                root / "fan" / "train" / f"section_00_{d}_train_normal_{i:04d}.wav", rng, False
            )
    # unlabelled evaluation names; truth: (anomaly?, target?)
    truth = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0), (0, 1), (1, 1), (1, 0)]
    for i, (anomalous, _) in enumerate(truth):
        write_noise(root / "fan" / "test" / f"section_00_{i:04d}.wav", rng, bool(anomalous))
    gt = tmp_path / "evaluator"
    (gt / "ground_truth_data").mkdir(parents=True)
    (gt / "ground_truth_domain").mkdir()
    (gt / "ground_truth_data" / "ground_truth_fan_section_00_test.csv").write_text(
        "".join(f"section_00_{i:04d}.wav,{a}\n" for i, (a, _) in enumerate(truth))
    )
    (gt / "ground_truth_domain" / "ground_truth_fan_section_00_test.csv").write_text(
        "".join(f"section_00_{i:04d}.wav,{t}\n" for i, (_, t) in enumerate(truth))
    )
    test = apply_ground_truth(discover(root, "fan", split="test"), gt, "fan")
    assert [(c.label, c.domain) for c in test] == [
        ("anomaly" if a else "normal", "target" if t else "source") for a, t in truth
    ]
    code = main(
        [
            "evaluate",
            str(root),
            "-m",
            "fan",
            "--protocol",
            "dcase2023",
            "--ground-truth",
            str(gt),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    _, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    (section,) = result["per_section"]
    assert (
        section["n_normal_source"],
        section["n_normal_target"],
        section["n_anomaly_source"],
    ) == (2, 2, 2)
    assert result["official"]["official_score"] is not None
    # a ground truth that misses a clip is refused, not evaluated on part of the data
    path = gt / "ground_truth_data" / "ground_truth_fan_section_00_test.csv"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DatasetError, match="lists 7 of 8"):
        apply_ground_truth(discover(root, "fan", split="test"), gt, "fan")


def test_2021_ground_truth_gives_the_domain_from_the_file_name(tmp_path):
    from soundwatch.data.ground_truth import read_ground_truth

    (tmp_path / "ground_truth_fan_section_03_target_test.csv").write_text(
        "section_03_target_test_0000.wav,1\n"
    )
    (tmp_path / "ground_truth_fan_section_03_source_test.csv").write_text(
        "section_03_source_test_0000.wav,0\n"
    )
    table = read_ground_truth(tmp_path)
    assert table[("fan", "section_03_target_test_0000.wav")] == {
        "label": "anomaly",
        "domain": "target",
    }
    assert table[("fan", "section_03_source_test_0000.wav")] == {
        "label": "normal",
        "domain": "source",
    }
    (tmp_path / "ground_truth_fan_section_04_source_test.csv").write_text("x.wav,normal\n")
    with pytest.raises(DatasetError, match=r"file_name,0\|1"):
        read_ground_truth(tmp_path)


def test_unlabelled_2023_eval_clips_get_files_but_no_metrics(tmp_path):
    clips = [Clip(Path(f"section_00_{i:04d}.wav"), "ToyDrone", "00", "test") for i in range(3)]
    result = write_dcase_submission(
        tmp_path,
        "ToyDrone",
        "x",
        clips,
        np.array([0.1, 0.5, 0.9]),
        {"all": 0.4},
        0,
        0,
        protocol="dcase2025",
    )
    assert result["per_section"] == [] and result["official"] is None and result["mean_auc"] is None
    rows = read_rows(tmp_path / "decision_result_ToyDrone_section_00_test.csv")
    assert rows == [
        ["section_00_0000.wav", "0"],
        ["section_00_0001.wav", "1"],
        ["section_00_0002.wav", "1"],
    ]
    assert not (tmp_path / "result.csv").exists()
