"""Synthetic domain shift (synth --domain-shift) and the domain-generalising detectors:
domain-memory-bank (separate source and target banks) and attribute-classifier."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from soundwatch.cli.main import main
from soundwatch.data.datasets import discover
from soundwatch.data.manifest import MANIFEST_NAME, manifest_kinds
from soundwatch.detectors import Detector, create
from soundwatch.errors import ConfigError
from soundwatch.synth import generate_domain_shift_dataset
from soundwatch.synth.domain_shift import SHIFTS, domain_conditions

TINY_SET = dict(
    n_sections=3,
    n_source=6,
    n_target=3,
    n_test_normal=2,
    n_test_anomaly=2,
    duration=1.0,
    progress=False,
)
BANK = {"bank_size": 32, "loo_folds": 3, "patch_frames": 8, "patch_hop": 8}
CLASSIFIER = {
    "epochs": 1,
    "batch_size": 4,
    "n_mels": 32,
    "crop_seconds": 0.5,
    "score_hop_seconds": 0.5,
    "width": 4,
    "embedding_dim": 8,
    "threads": 1,
    "fallback": "off",
    "score_method": "nll",
}


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shift")
    generate_domain_shift_dataset(root, "fan", seed=2, **TINY_SET)
    return root


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.wav"))


# ---------------------------------------------------------------- synth --domain-shift
def test_layout_names_and_counts_follow_dcase_2023(shifted: Path) -> None:
    fan = shifted / "fan"
    train, test = _names(fan / "train"), _names(fan / "test")
    assert len(train) == 3 * (6 + 3) and len(test) == 3 * 2 * (2 + 2)
    assert "section_00_source_train_normal_0000_spd_96.wav" in train
    assert "section_00_target_train_normal_0002_spd_115.wav" in train
    assert "section_01_target_test_anomaly_0001_mic_3.wav" in test
    assert "section_02_source_test_normal_0001_noise_B.wav" in test
    # Test clips are balanced over domains and labels in every section.
    for sec in ("00", "01", "02"):
        for domain in ("source", "target"):
            for label in ("normal", "anomaly"):
                prefix = f"section_{sec}_{domain}_test_{label}_"
                assert sum(n.startswith(prefix) for n in test) == 2


def test_attribute_csvs_are_in_the_published_format(shifted: Path) -> None:
    fan = shifted / "fan"
    with open(fan / "attributes_01.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file_name", "d1p", "d1v"]
    listed = {row[0]: (row[1], row[2]) for row in rows[1:]}
    assert listed["fan/train/section_01_source_train_normal_0001_mic_2.wav"] == ("mic", "2")
    on_disk = {f"fan/{p.parent.name}/{p.name}" for p in fan.glob("*/section_01_*.wav")}
    assert set(listed) == on_disk


def test_clips_know_section_domain_and_attributes(shifted: Path) -> None:
    clips = discover(shifted, "fan")
    assert len(clips) == 3 * (9 + 8)
    by_name = {c.path.name: c for c in clips}
    clip = by_name["section_02_target_test_anomaly_0000_noise_C.wav"]
    assert (clip.machine_id, clip.domain, clip.split, clip.label) == (
        "02",
        "target",
        "test",
        "anomaly",
    )
    assert clip.attributes == (("noise", "C"),)
    kinds = manifest_kinds(shifted / "fan")
    assert kinds["test/section_02_target_test_anomaly_0000_noise_C.wav"]
    manifest = json.loads((shifted / "fan" / MANIFEST_NAME).read_text())
    assert manifest["shifts"] == {"00": "spd", "01": "mic", "02": "noise"}


def test_source_and_target_conditions_differ_and_shift_scales_them() -> None:
    for section, (name, _sources, (target_value, _)) in enumerate(SHIFTS):
        source_conditions = [domain_conditions(section, "source", i)[2] for i in range(3)]
        attr, value, target = domain_conditions(section, "target", 0)
        assert (attr, value) == (name, target_value)
        assert all(target != c for c in source_conditions)
        assert domain_conditions(section, "target", 0, shift=0.0)[2] == {
            "gain_db": 0.0,
            "tilt_db_oct": 0.0,
            "background_db": 0.0,
            "load": 1.0,
        }
    assert domain_conditions(0, "target", 0)[2]["load"] == pytest.approx(1.15)
    assert domain_conditions(0, "target", 0, shift=2.0)[2]["load"] == pytest.approx(1.3225)


def test_target_audio_differs_from_source_more_than_source_from_itself(shifted: Path) -> None:
    import soundfile as sf

    def spectrum(path: Path) -> np.ndarray:
        y, _ = sf.read(path)
        power = np.abs(np.fft.rfft(y))[:8000] ** 2
        bands = np.log(power.reshape(40, -1).mean(axis=1) + 1e-12)
        return bands - bands.mean()  # the level varies per clip on purpose

    train = shifted / "fan" / "train"
    for sec, attr in (("00", "spd"), ("01", "mic"), ("02", "noise")):
        source = [spectrum(p) for p in sorted(train.glob(f"section_{sec}_source_*.wav"))]
        target = [spectrum(p) for p in sorted(train.glob(f"section_{sec}_target_*.wav"))]
        within = np.linalg.norm(np.mean(source[0::2], 0) - np.mean(source[1::2], 0))
        across = np.linalg.norm(np.mean(source, 0) - np.mean(target, 0))
        assert across > within, attr


def test_deterministic_and_refuses_to_overwrite(shifted: Path, tmp_path: Path) -> None:
    generate_domain_shift_dataset(tmp_path, "fan", seed=2, **TINY_SET)
    name = "train/section_01_target_train_normal_0000_mic_3.wav"
    assert (tmp_path / "fan" / name).read_bytes() == (shifted / "fan" / name).read_bytes()
    with pytest.raises(ConfigError, match="not empty"):
        generate_domain_shift_dataset(tmp_path, "fan", seed=2, **TINY_SET)
    (tmp_path / "fan" / "notes.txt").write_text("mine")
    generate_domain_shift_dataset(tmp_path, "fan", seed=3, overwrite=True, **TINY_SET)
    assert (tmp_path / "fan" / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="n_target"):
        generate_domain_shift_dataset(tmp_path / "x", "fan", n_target=-1)


def test_cli_domain_shift_options(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "set")
    cases = [
        (["--domain-shift", "--ids", "2"], "--ids do not apply to --domain-shift"),
        (["--n-source", "3"], "--n-source need --domain-shift"),
        (["--domain-shift", "--n-target", "-2"], "--n-target must be"),
    ]
    for options, message in cases:
        assert main(["synth", out, *options]) != 0
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "set").exists()


# ---------------------------------------------------------------- domain-memory-bank
def test_domain_banks_score_target_normals_as_normal(shifted: Path, tmp_path: Path) -> None:
    root = tmp_path / "big"
    generate_domain_shift_dataset(
        root, "fan", n_sections=1, n_source=16, n_target=4, n_test_normal=4,
        n_test_anomaly=0, shift=3.0, duration=1.0, progress=False, seed=5,
    )  # fmt: skip
    train = discover(root / "fan" / "train")
    test = discover(root / "fan" / "test")
    target = np.array([c.domain == "target" for c in test])
    # The same features and augmentation in one bank: only the domain split differs.
    plain = create("domain-memory-bank", **BANK, domains=False).fit(train)
    domains = create("domain-memory-bank", **BANK).fit(train)
    plain_scores, domain_scores = plain.score(test), domains.score(test)
    # A target normal is far from the 16 source clips but near the 4 target ones.
    assert domain_scores[target].mean() < plain_scores[target].mean()
    # Both banks are fitted (on the clips not held out for the decision threshold).
    counts = domains._members["00"].n_domain_clips_
    assert counts["source"] >= 14 and counts["target"] >= 3
    path = domains.save(tmp_path / "bank.safetensors")
    np.testing.assert_allclose(Detector.load(path).score(test), domain_scores)


def test_domain_score_is_the_smaller_standardised_bank_score(shifted: Path) -> None:
    train = discover(shifted / "fan" / "train")
    test = discover(shifted / "fan" / "test")
    detector = create("domain-memory-bank", per_id=False, **BANK).fit(train)
    raws = detector._raw(test)
    per_bank = [bank._score_raws(raws) for bank in detector.domain_banks_.values()]
    np.testing.assert_allclose(detector.score(test), np.min(per_bank, axis=0))
    assert set(detector.domain_banks_) == {"source", "target"}


def test_domains_without_target_clips_use_one_bank_and_say_so(shifted: Path, caplog) -> None:
    train = [c for c in discover(shifted / "fan" / "train") if c.domain == "source"]
    detector = create("domain-memory-bank", per_id=False, **BANK).fit(train)
    assert set(detector.domain_banks_) == {"source"}
    assert "no target-domain training clips" in caplog.text


# ---------------------------------------------------------------- attribute-classifier
def test_attribute_classes_and_section_fallback(shifted: Path, tmp_path: Path) -> None:
    train = discover(shifted / "fan" / "train")
    detector = create("attribute-classifier", **CLASSIFIER).fit(train)
    names = {key.machine_id for key in detector.classes_}
    assert names == {
        "00:spd=96", "00:spd=100", "00:spd=104", "00:spd=115",
        "01:mic=1", "01:mic=2", "01:mic=3",
        "02:noise=A", "02:noise=B", "02:noise=C",
    }  # fmt: skip
    # A test clip without attributes is scored against its own section's classes only.
    plain = tmp_path / "fan" / "test"
    plain.mkdir(parents=True)
    source = shifted / "fan" / "test" / "section_01_source_test_normal_0000_mic_1.wav"
    shutil.copy(source, plain / "section_01_source_test_normal_0000.wav")
    unnamed = discover(plain)
    assert unnamed[0].attributes == ()
    nll = detector._fallback_columns(unnamed, list(detector._own_classes()))
    allowed = {detector.classes_[j].machine_id for j in np.flatnonzero(nll[0])}
    assert allowed == {"01:mic=1", "01:mic=2", "01:mic=3"}
    assert np.isfinite(detector.score(unnamed)).all()


def test_id_classes_ignore_attributes(shifted: Path) -> None:
    train = discover(shifted / "fan" / "train")
    detector = create("id-classifier", **CLASSIFIER).fit(train)
    assert {key.machine_id for key in detector.classes_} == {"00", "01", "02"}
