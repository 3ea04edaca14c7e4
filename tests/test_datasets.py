"""Tests for soundwatch.data.datasets: file-name parsing and layout discovery."""

from pathlib import Path

import numpy as np
import pytest

from soundwatch.data.audio import write_audio
from soundwatch.data.clips import ANOMALY, NORMAL, Clip
from soundwatch.data.datasets import (
    clip_from_path,
    collect_audio,
    discover,
    machine_types,
    parse_filename,
)
from soundwatch.errors import ConfigError, DatasetError

SLIDER = Path("data/dcase2020-slider-mini/dev_data/slider")
TEST_MINI = Path("data/dcase2020-test-mini/dev_data")
TEST_MINI_IDS = {"ToyCar": "04", "ToyConveyor": "01", "fan": "06", "pump": "04", "valve": "02"}


def make_wav(path: Path) -> Path:
    """Write a short noise clip (0.05 s, 16 kHz) at ``path``."""
    noise = np.random.default_rng(len(str(path))).normal(0, 0.1, 800)
    return write_audio(path, noise, 16000)


def make_tree(root: Path, names: list[str]) -> list[Path]:
    return [make_wav(root / name) for name in names]


def as_tuple(clip: Clip) -> tuple:
    return (clip.path.name, clip.machine_type, clip.machine_id, clip.split, clip.label, clip.domain)


# --- parse_filename -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # DCASE 2020 development
        ("normal_id_00_00000000.wav", ("00", NORMAL, None, None)),
        ("anomaly_id_06_00000123.wav", ("06", ANOMALY, None, None)),
        # DCASE 2020 evaluation, unlabelled
        ("id_01_00000000.wav", ("01", None, None, None)),
        # DCASE 2021
        ("section_00_source_test_normal_0001.wav", ("00", NORMAL, "source", "test")),
        (
            "section_00_target_train_normal_0000_strength_1_ambient.wav",
            ("00", NORMAL, "target", "train"),
        ),
        ("section_02_target_test_anomaly_0042.wav", ("02", ANOMALY, "target", "test")),
        # DCASE 2022 / 2023 with attributes
        ("section_00_source_train_normal_0001_vel_6_loc_A.wav", ("00", NORMAL, "source", "train")),
        ("section_01_target_test_anomaly_0003_noAttribute.wav", ("01", ANOMALY, "target", "test")),
        # unlabelled evaluation names
        ("section_03_0000.wav", ("03", None, None, None)),
        ("section_00_test_0000.wav", ("00", None, None, "test")),
        # full paths and other extensions
        ("/some/where/NORMAL_ID_02_00000001.FLAC", ("02", NORMAL, None, None)),
        # unknown
        ("00000000.wav", (None, None, None, None)),
        ("recording.wav", (None, None, None, None)),
        ("normal_00000000.wav", (None, None, None, None)),
        ("section_xx_0000.wav", (None, None, None, None)),
    ],
)
def test_parse_filename(name, expected):
    result = parse_filename(name)
    assert set(result) == {"machine_id", "label", "domain", "split"}
    assert (result["machine_id"], result["label"], result["domain"], result["split"]) == expected


def test_parse_filename_accepts_path():
    assert parse_filename(Path("x") / "anomaly_id_04_00000001.wav")["machine_id"] == "04"


# --- DCASE 2020 layout (real data) ----------------------------------------------------


def test_slider_mini(shared_dir):
    root = shared_dir / SLIDER.parents[1]  # dcase2020-slider-mini
    clips = discover(root)
    assert len(clips) == 81
    assert clips == sorted(clips, key=lambda c: c.path)
    assert {c.machine_type for c in clips} == {"slider"}
    assert {c.machine_id for c in clips} == {"00"}
    assert {c.domain for c in clips} == {None}

    train = discover(root, machine_type="slider", split="train")
    assert len(train) == 75
    assert {c.label for c in train} == {NORMAL}
    test = discover(root, split="test")
    assert sorted(c.label for c in test) == [ANOMALY] * 3 + [NORMAL] * 3
    assert machine_types(root) == ["slider"]


@pytest.mark.parametrize("sub", [SLIDER, SLIDER / "train", SLIDER / "test"])
def test_slider_root_may_be_type_or_split_folder(shared_dir, sub):
    clips = discover(shared_dir / sub)
    assert {c.machine_type for c in clips} == {"slider"}
    assert len(clips) == {"slider": 81, "train": 75, "test": 6}[sub.name]


def test_test_mini(shared_dir):
    root = shared_dir / TEST_MINI
    assert machine_types(root) == ["fan", "pump", "ToyCar", "ToyConveyor", "valve"]
    clips = discover(root)
    assert len(clips) == 30
    for machine_type, machine_id in TEST_MINI_IDS.items():
        of_type = discover(root, machine_type=machine_type, split="test")
        assert len(of_type) == 6
        assert {c.machine_id for c in of_type} == {machine_id}
        assert sorted(c.label for c in of_type) == [ANOMALY] * 3 + [NORMAL] * 3
        assert all(c.path.parent.parent.name == machine_type for c in of_type)


def test_test_mini_has_no_train_split(shared_dir):
    root = shared_dir / TEST_MINI
    with pytest.raises(DatasetError) as exc:
        discover(root, machine_type="ToyCar", split="train")
    message = str(exc.value)
    assert str(root) in message
    assert "splits found: test" in message


def test_machine_type_is_matched_without_case(shared_dir):
    clips = discover(shared_dir / TEST_MINI, machine_type="toycar")
    assert {c.machine_type for c in clips} == {"ToyCar"}


def test_unknown_machine_type_lists_existing(shared_dir):
    root = shared_dir / TEST_MINI
    with pytest.raises(DatasetError) as exc:
        discover(root, machine_type="gearbox")
    message = str(exc.value)
    assert "gearbox" in message and str(root) in message
    assert "fan, pump, ToyCar, ToyConveyor, valve" in message
    assert "\n" not in message


def test_whole_shared_data_folder(shared_dir):
    clips = discover(shared_dir / "data")
    # 2020 slider (81) + 2020 test-mini (5 types x 6) + 2023 mini (7 types x 4)
    assert len(clips) == 81 + 30 + 28
    assert machine_types(shared_dir / "data") == [
        "bearing",
        "fan",
        "gearbox",
        "pump",
        "slider",
        "ToyCar",
        "ToyConveyor",
        "ToyTrain",
        "valve",
    ]


# --- DCASE 2020 evaluation and DCASE 2021+ layouts (synthetic) -------------------------


def test_dcase2020_eval_layout(tmp_path):
    make_tree(tmp_path, ["eval_data/fan/test/id_01_00000000.wav", "eval_data/fan/train/x.wav"])
    clips = discover(tmp_path / "eval_data")
    assert [as_tuple(c) for c in clips] == [
        ("id_01_00000000.wav", "fan", "01", "test", None, None),
        ("x.wav", "fan", None, "train", None, None),
    ]


def test_dcase2021_layout(tmp_path):
    make_tree(
        tmp_path / "dev_data",
        [
            "gearbox/train/section_00_target_train_normal_0000_strength_1_ambient.wav",
            "gearbox/train/section_01_source_train_normal_0003_strength_2_ambient.wav",
            "gearbox/source_test/section_00_source_test_anomaly_0001.wav",
            "gearbox/target_test/section_01_target_test_normal_0000.wav",
        ],
    )
    (tmp_path / "dev_data/gearbox/attributes_00.csv").write_text("not audio")
    clips = discover(tmp_path / "dev_data", machine_type="gearbox")
    assert [as_tuple(c)[1:] for c in clips] == [
        ("gearbox", "00", "test", ANOMALY, "source"),
        ("gearbox", "01", "test", NORMAL, "target"),
        ("gearbox", "00", "train", NORMAL, "target"),
        ("gearbox", "01", "train", NORMAL, "source"),
    ]
    assert len(discover(tmp_path / "dev_data", split="test")) == 2


def test_dcase2022_and_eval_names(tmp_path):
    make_tree(
        tmp_path / "bearing",
        [
            "train/section_00_source_train_normal_0001_vel_6_loc_A.wav",
            "test/section_00_source_test_anomaly_0001_vel_6_loc_B.wav",
            "test/section_03_0000.wav",
            "test/section_00_test_0000.wav",
        ],
    )
    clips = discover(tmp_path / "bearing")
    assert [as_tuple(c) for c in clips] == [
        (
            "section_00_source_test_anomaly_0001_vel_6_loc_B.wav",
            "bearing",
            "00",
            "test",
            ANOMALY,
            "source",
        ),
        ("section_00_test_0000.wav", "bearing", "00", "test", None, None),
        ("section_03_0000.wav", "bearing", "03", "test", None, None),
        (
            "section_00_source_train_normal_0001_vel_6_loc_A.wav",
            "bearing",
            "00",
            "train",
            NORMAL,
            "source",
        ),
    ]


def test_relative_split_folder_root(tmp_path, monkeypatch):
    make_tree(tmp_path, ["valve/train/normal_id_02_00000000.wav"])
    monkeypatch.chdir(tmp_path / "valve")
    (clip,) = discover("train")
    assert clip.path == Path("train/normal_id_02_00000000.wav")
    assert clip.machine_type == "valve"
    assert clip.split == "train"


def test_single_file_root(tmp_path):
    (path,) = make_tree(tmp_path, ["pump/test/anomaly_id_04_00000001.wav"])
    assert [as_tuple(c) for c in discover(path)] == [
        ("anomaly_id_04_00000001.wav", "pump", "04", "test", ANOMALY, None)
    ]


# --- MIMII layout ---------------------------------------------------------------------


def test_mimii_layout(tmp_path):
    make_tree(
        tmp_path,
        [
            "-6_dB_fan/fan/id_00/normal/00000000.wav",
            "-6_dB_fan/fan/id_00/abnormal/00000000.wav",
            "-6_dB_fan/fan/id_02/normal/00000001.wav",
            "6_dB_valve/id_04/abnormal/00000007.wav",
        ],
    )
    clips = discover(tmp_path)
    assert [as_tuple(c) for c in clips] == [
        ("00000000.wav", "fan", "00", None, ANOMALY, None),
        ("00000000.wav", "fan", "00", None, NORMAL, None),
        ("00000001.wav", "fan", "02", None, NORMAL, None),
        ("00000007.wav", "valve", "04", None, ANOMALY, None),
    ]
    assert machine_types(tmp_path) == ["fan", "valve"]
    assert len(discover(tmp_path / "-6_dB_fan" / "fan" / "id_00")) == 2
    with pytest.raises(DatasetError) as exc:
        discover(tmp_path, split="train")
    assert str(tmp_path) in str(exc.value)


# --- plain folders --------------------------------------------------------------------


def test_plain_folder(tmp_path):
    make_tree(
        tmp_path / "recordings",
        [
            "a/b/normal_id_03_00000001.WAV",
            "morning.flac",
            "evening.Wav",
            "x/section_01_target_test_anomaly_0002.wav",
        ],
    )
    (tmp_path / "recordings/notes.txt").write_text("hello")
    (tmp_path / "recordings/._morning.wav").write_bytes(b"\x00\x01")  # macOS junk, skipped
    (tmp_path / "recordings/.cache").mkdir()
    make_wav(tmp_path / "recordings/.cache/hidden.wav")

    clips = discover(tmp_path / "recordings")
    assert [as_tuple(c) for c in clips] == [
        ("normal_id_03_00000001.WAV", None, "03", None, NORMAL, None),
        ("evening.Wav", None, None, None, None, None),
        ("morning.flac", None, None, None, None, None),
        ("section_01_target_test_anomaly_0002.wav", None, "01", "test", ANOMALY, "target"),
    ]
    assert machine_types(tmp_path / "recordings") == []
    with pytest.raises(DatasetError) as exc:
        discover(tmp_path / "recordings", machine_type="fan")
    assert "none" in str(exc.value)


def test_clip_from_path_at_filesystem_top():
    assert clip_from_path("/x.wav") == Clip(path=Path("/x.wav"))
    clip = clip_from_path("/train/normal_id_00_00000000.wav")
    assert (clip.machine_type, clip.split, clip.label) == (None, "train", NORMAL)


# --- discover errors ------------------------------------------------------------------


def test_missing_root(tmp_path):
    root = tmp_path / "missing"
    with pytest.raises(DatasetError) as exc:
        discover(root)
    assert str(root) in str(exc.value)


def test_root_is_non_audio_file(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a.wav\n")
    with pytest.raises(DatasetError) as exc:
        discover(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("content", [[], ["readme.txt", "sub/data.csv"]])
def test_folder_without_audio(tmp_path, content):
    for name in content:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    with pytest.raises(DatasetError) as exc:
        discover(tmp_path)
    assert str(tmp_path) in str(exc.value)
    assert "no audio files" in str(exc.value)


def test_invalid_split_value(tmp_path):
    make_tree(tmp_path, ["fan/train/normal_id_00_00000000.wav"])
    with pytest.raises(ConfigError):
        discover(tmp_path, split="valid")


# --- collect_audio --------------------------------------------------------------------


def test_collect_audio(tmp_path):
    single, *_ = make_tree(
        tmp_path,
        [
            "pump/test/anomaly_id_04_00000001.wav",
            "pump/test/normal_id_04_00000002.wav",
            "loose/z.flac",
            "loose/deep/a.wav",
        ],
    )
    clips = collect_audio([single, tmp_path / "loose", tmp_path / "pump"])
    assert [as_tuple(c) for c in clips] == [
        ("anomaly_id_04_00000001.wav", "pump", "04", "test", ANOMALY, None),
        ("a.wav", None, None, None, None, None),
        ("z.flac", None, None, None, None, None),
        ("normal_id_04_00000002.wav", "pump", "04", "test", NORMAL, None),
    ]
    assert len(collect_audio([str(single)])) == 1


def test_collect_audio_errors(tmp_path):
    missing = tmp_path / "gone.wav"
    with pytest.raises(DatasetError) as exc:
        collect_audio([missing])
    assert str(missing) in str(exc.value)

    text = tmp_path / "a.txt"
    text.write_text("x")
    with pytest.raises(DatasetError) as exc:
        collect_audio([text])
    assert str(text) in str(exc.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as exc:
        collect_audio([empty])
    assert str(empty) in str(exc.value)

    with pytest.raises(DatasetError):
        collect_audio([])


def test_collect_audio_real(shared_dir):
    clips = collect_audio([shared_dir / TEST_MINI / "fan", shared_dir / SLIDER / "test"])
    assert len(clips) == 12
    assert [c.machine_type for c in clips] == ["fan"] * 6 + ["slider"] * 6
