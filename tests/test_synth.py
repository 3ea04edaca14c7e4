"""Tests of the synthetic machine-sound generator (soundwatch.synth)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from soundwatch.data.datasets import discover
from soundwatch.data.manifest import anomaly_kinds, manifest_kinds
from soundwatch.errors import ConfigError, DatasetError
from soundwatch.synth import (
    ANOMALY_KINDS,
    MACHINES,
    MANIFEST_NAME,
    generate_dataset,
    render_clip,
    sample_id_params,
)
from soundwatch.synth.noise import factory_noise, mix_at_snr

SMALL = dict(
    n_ids=2,
    n_train_per_id=2,
    n_test_normal_per_id=1,
    n_test_anomaly_per_id=2,
    duration=1.0,
    progress=False,
)


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav"))


def _bytes(root):
    return {name: (root / name).read_bytes() for name in _files(root)}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = generate_dataset(root, "slider", seed=3, **SMALL)
    return root, summary


def test_machines_and_kinds_are_described():
    assert {"slider", "fan"} <= set(MACHINES)
    for machine in MACHINES:
        assert isinstance(MACHINES[machine], str) and MACHINES[machine]
        assert len(ANOMALY_KINDS[machine]) >= 3


def test_layout_names_and_counts(small_set):
    root, summary = small_set
    names = _files(root / "slider")
    expected = []
    for mid in ("00", "02"):
        expected += [f"train/normal_id_{mid}_{i:08d}.wav" for i in range(2)]
        expected += [f"test/normal_id_{mid}_{i:08d}.wav" for i in range(1)]
        expected += [f"test/anomaly_id_{mid}_{i:08d}.wav" for i in range(2)]
    assert names == sorted(expected)
    assert summary["n_clips"] == 10
    assert (summary["n_train"], summary["n_test_normal"], summary["n_test_anomaly"]) == (4, 2, 4)
    assert summary["ids"] == ["00", "02"]
    assert all(re.fullmatch(r"(train|test)/(normal|anomaly)_id_\d\d_\d{8}\.wav", n) for n in names)


def test_anomaly_kinds_come_from_the_manifest(small_set, tmp_path):
    root, _ = small_set
    manifest = json.loads((root / "slider" / "synth_manifest.json").read_text())
    expected = {c["file"]: c["kind"] for c in manifest["clips"] if c["label"] == "anomaly"}
    assert manifest_kinds(root / "slider") == expected
    test = discover(root, "slider", split="test")
    kinds = anomaly_kinds(test)
    assert [k is None for k in kinds] == [not c.is_anomaly for c in test]
    assert set(kinds) - {None} <= set(ANOMALY_KINDS["slider"])
    # Real data has no manifest; a broken one is an error here and a warning in evaluate.
    assert manifest_kinds(tmp_path) == {}
    (tmp_path / "synth_manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a readable synth manifest"):
        manifest_kinds(tmp_path)
    (tmp_path / "test").mkdir()
    clip = discover(root, "slider", split="test")[0]
    moved = tmp_path / "test" / clip.path.name
    moved.write_bytes(clip.path.read_bytes())
    assert anomaly_kinds(discover(tmp_path, split="test")) == [None]


def test_audio_format(small_set):
    root, _ = small_set
    for name in _files(root):
        info = sf.info(str(root / name))
        assert info.samplerate == 16000
        assert info.channels == 1
        assert info.subtype == "PCM_16"
        assert info.frames == 16000


def test_default_clip_is_10_s_16_bit_mono(tmp_path):
    generate_dataset(
        tmp_path, "slider", n_ids=1, n_train_per_id=1, n_test_normal_per_id=0,
        n_test_anomaly_per_id=0, progress=False,
    )  # fmt: skip
    info = sf.info(str(tmp_path / "slider" / "train" / "normal_id_00_00000000.wav"))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (
        16000, 1, 160000, "PCM_16",
    )  # fmt: skip
    y, _ = sf.read(str(tmp_path / "slider" / "train" / "normal_id_00_00000000.wav"))
    assert np.max(np.abs(y)) < 0.99 and np.std(y) > 1e-3


def test_manifest(small_set):
    root, summary = small_set
    manifest = json.loads((root / "slider" / MANIFEST_NAME).read_text())
    assert summary["manifest"] == str(root / "slider" / MANIFEST_NAME)
    assert manifest["machine"] == "slider"
    settings = manifest["settings"]
    assert settings["seed"] == 3 and settings["snr_db"] == 0.0 and settings["severity"] == 1.0
    assert settings["sample_rate"] == 16000 and settings["duration"] == 1.0
    assert set(manifest["ids"]) == {"00", "02"}
    for params in manifest["ids"].values():
        assert "cycle_s" in params and "background" in params
    assert manifest["ids"]["00"] != manifest["ids"]["02"]
    clips = manifest["clips"]
    assert sorted(c["file"] for c in clips) == _files(root / "slider")
    for c in clips:
        if c["label"] == "anomaly":
            assert c["kind"] in ANOMALY_KINDS["slider"]
            assert c["severity"] > 0
        else:
            assert c["kind"] is None and c["severity"] == 0
    # Kinds are cycled per ID, so two anomalies per ID use two different kinds.
    kinds_00 = [c["kind"] for c in clips if c["machine_id"] == "00" and c["label"] == "anomaly"]
    assert len(set(kinds_00)) == 2


def test_deterministic_for_a_seed_and_worker_count(tmp_path, small_set):
    root, _ = small_set
    generate_dataset(tmp_path / "a", "slider", seed=3, workers=2, **SMALL)
    assert _bytes(tmp_path / "a") == _bytes(root)
    generate_dataset(tmp_path / "b", "slider", seed=4, **SMALL)
    other = _bytes(tmp_path / "b")
    same = _bytes(root)
    assert other.keys() == same.keys()
    assert all(other[k] != same[k] for k in same)


def test_fewer_training_clips_keep_the_same_test_clips(tmp_path, small_set):
    # --n-train builds the few-shot regime: only the training normals may change.
    root, _ = small_set
    generate_dataset(tmp_path, "slider", seed=3, **{**SMALL, "n_train_per_id": 1})
    few, full = _bytes(tmp_path), _bytes(root)
    assert {k: v for k, v in few.items() if "/test/" in k} == {
        k: v for k, v in full.items() if "/test/" in k
    }
    train = [k for k in few if "/train/" in k]
    assert len(train) == 2 and all(few[k] == full[k] for k in train)


def test_refuses_to_overwrite(tmp_path):
    opts = dict(SMALL, n_ids=1)
    generate_dataset(tmp_path, "slider", **opts)
    with pytest.raises(ConfigError, match="not empty"):
        generate_dataset(tmp_path, "slider", **opts)
    keep = tmp_path / "slider" / "notes.txt"
    keep.write_text("mine")
    stale = tmp_path / "slider" / "train" / "normal_id_00_00000099.wav"
    stale.write_bytes(b"old")
    generate_dataset(tmp_path, "slider", overwrite=True, **opts)
    assert keep.read_text() == "mine"
    assert not stale.exists()
    assert len(_files(tmp_path / "slider")) == 5


def test_refuses_non_empty_folder_of_user_data(tmp_path):
    (tmp_path / "fan").mkdir()
    (tmp_path / "fan" / "data.bin").write_bytes(b"x")
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path, "fan", **SMALL)


@pytest.mark.parametrize(
    "machine,kind", [(m, k) for m in sorted(ANOMALY_KINDS) for k in ANOMALY_KINDS[m]]
)
def test_every_anomaly_kind_renders_and_differs_from_normal(machine, kind):
    params = sample_id_params(machine, "00", seed=1)
    normal = render_clip(machine, params, None, 1.0, np.random.default_rng(11))
    anomaly = render_clip(machine, params, kind, 1.0, np.random.default_rng(11))
    for y in (normal, anomaly):
        assert y.dtype == np.float32 and y.shape == (160000,)
        assert np.all(np.isfinite(y))
        assert np.std(y) > 1e-3
        assert np.max(np.abs(y)) <= 0.98 + 1e-6
    diff = np.sqrt(np.mean((anomaly - normal) ** 2)) / np.sqrt(np.mean(normal**2))
    assert diff > 1e-3
    # Severity 0 is the normal clip, exactly.
    zero = render_clip(machine, params, kind, 0.0, np.random.default_rng(11))
    np.testing.assert_array_equal(zero, normal)


@pytest.mark.parametrize("machine", sorted(ANOMALY_KINDS))
def test_id_spread_draws_units_of_one_product(machine):
    def flat(tree):
        if isinstance(tree, dict):
            return [x for key in sorted(tree) for x in flat(tree[key])]
        if isinstance(tree, list):
            return [x for item in tree for x in flat(item)]
        return [tree]

    # 1 is the default and leaves the independent draws (and so old data sets) unchanged.
    assert sample_id_params(machine, "02", 3, id_spread=1.0) == sample_id_params(machine, "02", 3)
    same = [sample_id_params(machine, mid, 3, id_spread=0.0) for mid in ("00", "02")]
    assert same[0] == same[1]
    for spread in (0.2, 0.6):
        a, b = (sample_id_params(machine, mid, 3, id_spread=spread) for mid in ("00", "02"))
        assert a != b and len(flat(a)) == len(flat(b))
    # Closer units: every continuous parameter moves linearly towards the product's.
    far = np.array(flat(sample_id_params(machine, "02", 3, id_spread=0.6)), dtype=float)
    near = np.array(flat(sample_id_params(machine, "02", 3, id_spread=0.2)), dtype=float)
    product = np.array(flat(same[1]), dtype=float)
    np.testing.assert_allclose(near - product, (far - product) / 3, atol=1e-9)


def test_render_clip_seed_and_length():
    params = sample_id_params("fan", "02")
    a = render_clip("fan", params, "normal", rng=5, duration=0.5, sample_rate=8000)
    b = render_clip("fan", params, None, rng=5, duration=0.5, sample_rate=8000)
    c = render_clip("fan", params, None, rng=6, duration=0.5, sample_rate=8000)
    assert a.shape == (4000,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_arguments_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown synthetic machine"):
        generate_dataset(tmp_path, "toaster", **SMALL)
    with pytest.raises(ConfigError):
        render_clip("toaster", {}, None, 1.0, 0)
    with pytest.raises(ConfigError):
        sample_id_params("toaster", "00")
    params = sample_id_params("slider", "00")
    with pytest.raises(ConfigError, match="anomaly kind"):
        render_clip("slider", params, "imbalance", 1.0, 0)
    with pytest.raises(ConfigError, match="anomaly kind"):
        generate_dataset(tmp_path, "slider", anomaly_kinds=["squeak"], **SMALL)
    with pytest.raises(ConfigError, match="severity"):
        generate_dataset(tmp_path, "slider", severity=-1.0, **SMALL)
    with pytest.raises(ConfigError, match="n_train_per_id"):
        generate_dataset(tmp_path, "slider", **dict(SMALL, n_train_per_id=-1))
    with pytest.raises(ConfigError, match="snr_db"):
        generate_dataset(tmp_path, "slider", snr_db=float("nan"), **SMALL)
    with pytest.raises(ConfigError, match="id_spread must be at most 1"):
        generate_dataset(tmp_path, "slider", id_spread=1.5, **SMALL)
    assert not (tmp_path / "slider").exists()  # nothing written before validation


def test_anomaly_kinds_subset(tmp_path):
    generate_dataset(tmp_path, "fan", anomaly_kinds="bearing_wear", **dict(SMALL, n_ids=1))
    manifest = json.loads((tmp_path / "fan" / MANIFEST_NAME).read_text())
    kinds = {c["kind"] for c in manifest["clips"] if c["label"] == "anomaly"}
    assert kinds == {"bearing_wear"}


def test_mix_at_snr_sets_the_power_ratio():
    rng = np.random.default_rng(0)
    noise = factory_noise(16000, 16000.0, rng)
    assert np.isclose(np.sqrt(np.mean(noise.astype(np.float64) ** 2)), 1.0, rtol=1e-3)
    signal = np.sin(np.arange(16000) * 0.1).astype(np.float32)
    for snr in (6.0, 0.0, -6.0):
        mixed = mix_at_snr(signal, noise, snr)
        residual = mixed.astype(np.float64) - signal
        ratio = 10 * np.log10(np.mean(signal.astype(np.float64) ** 2) / np.mean(residual**2))
        assert ratio == pytest.approx(snr, abs=0.01)
