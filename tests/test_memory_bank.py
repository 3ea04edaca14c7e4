"""The memory-bank detector family and its backends (soundwatch.detectors.memory_bank)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soundwatch.detectors import Detector, create
from soundwatch.detectors.bank_features import band_groups, impulse_stats, modulation_spectrum
from soundwatch.detectors.bank_scorers import greedy_coreset
from soundwatch.detectors.memory_bank import aggregate_scores, augment_arrays
from soundwatch.detectors.scorers import Scorer, create_scorer
from soundwatch.errors import ConfigError

# Small banks and few folds keep each fit to about a second on the tiny set.
SMALL = {"bank_size": 32, "loo_folds": 3, "patch_frames": 8, "patch_hop": 8}


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


# ---------------------------------------------------------------- bank helpers
def test_greedy_coreset_is_bounded_spread_and_deterministic():
    rng = np.random.default_rng(0)
    # A dense blob and three far outliers: a coreset of 8 must keep the outliers.
    x = np.vstack([rng.normal(size=(500, 4)), [[50, 0, 0, 0], [0, 50, 0, 0], [0, 0, 50, 0]]])
    chosen = greedy_coreset(x, 8, seed=1)
    assert chosen.shape == (8,) and len(set(chosen.tolist())) == 8
    assert {500, 501, 502} <= set(chosen.tolist())
    np.testing.assert_array_equal(chosen, greedy_coreset(x, 8, seed=1))
    np.testing.assert_array_equal(greedy_coreset(x, 1000), np.arange(len(x)))
    # High-dimensional rows go through a random projection and still give valid indices.
    wide = greedy_coreset(rng.normal(size=(300, 400)), 20)
    assert wide.shape == (20,) and wide.max() < 300


@pytest.mark.parametrize("name", ["knn", "ldn-knn", "mahalanobis", "pca-residual"])
def test_each_backend_scores_outliers_higher_and_round_trips(name):
    rng = np.random.default_rng(0)
    # Normals vary in a 2-d subspace of 6 dimensions; outliers leave it.
    mixing = rng.normal(size=(2, 6))

    def normals(n: int) -> np.ndarray:
        return rng.normal(size=(n, 2)) @ mixing + 0.1 * rng.normal(size=(n, 6))

    train, inliers = normals(200), normals(20)
    outliers = normals(20) + 3.0 * rng.normal(size=(20, 6))
    scorer = create_scorer(name).fit(train)
    scores = scorer.score(np.vstack([inliers, outliers]))
    assert _auc(scores, np.r_[np.zeros(20), np.ones(20)]) > 0.95
    arrays, meta = scorer.state()
    np.testing.assert_allclose(Scorer.from_state(arrays, meta).score(outliers), scores[20:])


def test_ldn_knn_normalises_by_local_density():
    rng = np.random.default_rng(0)
    dense = rng.normal(scale=0.1, size=(200, 2))
    sparse = rng.normal(scale=2.0, size=(200, 2)) + [20.0, 0.0]
    scorer = create_scorer("ldn-knn", k=3).fit(np.vstack([dense, sparse]))
    plain = create_scorer("knn", k=3).fit(np.vstack([dense, sparse]))
    # Equally typical points of the two clusters: plain kNN calls the sparse one far
    # more anomalous, LDN-kNN scores them alike.
    probe = np.array([[0.1, 0.0], [22.0, 0.0]])
    ldn, knn = scorer.score(probe), plain.score(probe)
    assert knn[1] / knn[0] > 5 and 0.3 < ldn[1] / ldn[0] < 3


def test_pca_residual_ignores_the_normal_subspace():
    rng = np.random.default_rng(0)
    train = np.zeros((100, 5))
    train[:, :2] = rng.normal(size=(100, 2)) * 10
    scorer = create_scorer("pca-residual", variance=0.99).fit(train)
    along, across = np.array([[30.0, 30, 0, 0, 0]]), np.array([[0.0, 0, 1, 0, 0]])
    assert scorer.score(along)[0] < 1e-6 < scorer.score(across)[0]
    with pytest.raises(ConfigError, match="variance"):
        create_scorer("pca-residual", variance=1.5)


def test_aggregate_max_topk_mean():
    scores = np.array([1.0, 5.0, 3.0, 2.0, 2.0])
    owners = np.array([0, 0, 0, 1, 1])
    np.testing.assert_allclose(aggregate_scores(scores, owners, 2, "max", 2), [5, 2])
    np.testing.assert_allclose(aggregate_scores(scores, owners, 2, "topk", 2), [4, 2])
    np.testing.assert_allclose(aggregate_scores(scores, owners, 2, "mean", 2), [3, 2])


def test_augmentation_copies_shifts_and_mixes():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(16, 40)).astype(np.float32) for _ in range(3)]
    out, sources = augment_arrays(
        arrays, 2, ["pitch"], max_pitch=2, max_time=0, rng=rng, time_axis=1, pitch_axis=0
    )
    assert len(out) == 6 and sources.tolist() == [0, 0, 1, 1, 2, 2]
    for new, src in zip(out, sources, strict=True):
        shifted = [np.roll(arrays[src], s, axis=0)[2:-2] for s in (-2, -1, 1, 2)]
        assert any(np.allclose(new[2:-2], s) for s in shifted)
    mixed, _ = augment_arrays(arrays, 1, ["mixup"], max_pitch=0, max_time=0, rng=rng)
    assert all(
        m.shape == a.shape and not np.allclose(m, a) for m, a in zip(mixed, arrays, strict=True)
    )
    # Frame embeddings have no frequency axis: pitch alone gives nothing.
    frames = [a.T for a in arrays]
    none, _ = augment_arrays(
        frames, 2, ["pitch"], max_pitch=2, max_time=0, rng=rng, pitch_axis=None
    )
    assert none == []


# ---------------------------------------------------------------- clip statistics
def test_impulse_stats_see_short_ticks_and_ignore_the_level():
    rng = np.random.default_rng(0)
    logmel = rng.normal(size=(16, 300))
    ticked = logmel.copy()
    ticked[8:12, ::50] += 20.0  # six short ticks in mel bands 8-11 (band group 2 of 4)
    plain, ticks = impulse_stats(logmel, 4), impulse_stats(ticked, 4)
    assert plain.shape == (20,)
    # Group 2's 99th percentile over its median, maximum and largest rise jump; the
    # other groups do not move.
    per_stat = (ticks - plain).reshape(5, 4)
    assert (per_stat[1:, 2] > 2.0).all()
    np.testing.assert_allclose(per_stat[:, [0, 1, 3]], 0.0)
    # Relative to each group's median: a louder clip has the same statistics.
    np.testing.assert_allclose(impulse_stats(logmel + 30.0, 4), plain)


def test_modulation_spectrum_peaks_at_the_envelope_rate():
    frames = np.arange(512)
    logmel = np.zeros((8, 512))
    logmel[:4] = np.sin(2 * np.pi * 0.1 * frames)  # 0.1 cycles per frame in bands 0-3
    logmel[4:] = np.random.default_rng(0).normal(size=(4, 512))
    spectrum = modulation_spectrum(logmel, 2, 12).reshape(2, 12)
    edges = np.geomspace(1 / 256, 0.5, 13)
    peak_bin = int(np.searchsorted(edges, 0.1) - 1)
    assert int(np.argmax(spectrum[0])) == peak_bin
    assert spectrum[0, peak_bin] > spectrum[1, peak_bin] + 1.0
    # Any length gives the same number of bins (short clips fall back to nearest bins).
    assert modulation_spectrum(logmel[:, :40], 2, 12).shape == (24,)
    assert band_groups(logmel, 100).shape == (8, 512)


# ---------------------------------------------------------------- the detector
@pytest.mark.parametrize(
    "params",
    [
        {"feature": "logmel-stats", "level": "clip", "backends": "mahalanobis"},
        {"feature": "logmel-patch", "level": "frame", "backends": "knn", "aggregate": "max"},
        {"feature": "logmel-patch", "level": "frame", "backends": "ldn-knn", "aggregate": "topk"},
        {"feature": "logmel-patch", "level": "clip", "backends": "pca-residual", "subbands": 4},
        {"feature": "logmel-patch", "mel_pool": 4, "subbands": 2},
        {
            "feature": "logmel-patch,logmel-impulse,logmel-modulation",
            "view_groups": 8,
            "view_fusion": "max",
            "subbands": 2,
        },
        {
            "feature": "logmel-patch",
            "level": "frame",
            "backends": "knn,mahalanobis",
            "fusion": "min",
            "aggregate": "mean",
        },
    ],
)
def test_fit_score_save_load(params, tiny_slider, tmp_path: Path):
    train, test = tiny_slider
    detector = create("memory-bank", **SMALL, **params).fit(train)
    scores = detector.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    loaded = Detector.load(detector.save(tmp_path / "bank.safetensors"))
    np.testing.assert_allclose(loaded.score(test), scores)
    assert loaded.get_params() == detector.get_params()


def test_frame_bank_is_capped_by_the_coreset(tiny_slider):
    train, _ = tiny_slider
    detector = create(
        "memory-bank",
        **{**SMALL, "patch_hop": 1, "bank_size": 10},
        level="frame",
        per_id=False,
        backends="knn",
    ).fit(train)
    (unit,) = detector.units_
    assert unit.train_.shape[0] == 10


def test_leave_out_fusion_standardises_each_unit(tiny_slider):
    train, _ = tiny_slider
    detector = create(
        "memory-bank",
        **SMALL,
        per_id=False,
        backends="knn,mahalanobis,pca-residual",
        subbands=2,
        validation_fraction=0.0,
    ).fit(train)
    assert len(detector.units_) == 6 and len(detector.loo_mean_) == 6
    assert (detector.loo_std_ > 0).all()
    # Training clips score near 0 on the z-scale the leave-out statistics define: a
    # leave-out score is higher than an in-bank one, so the mean z of training clips is
    # below 0 but within a few leave-out standard deviations.
    z = detector.score(train)
    assert np.isfinite(z).all() and -10 < z.mean() < 1


def test_subbands_match_each_band_separately(tiny_slider):
    train, _ = tiny_slider
    detector = create("memory-bank", **SMALL, subbands=4, per_id=False).fit(train)
    bands = detector.bands_
    assert len(bands) == 4
    covered = np.sort(np.concatenate(bands))
    np.testing.assert_array_equal(covered, np.arange(2 * detector.n_mels // detector.mel_pool))


def test_feature_views_are_scored_and_standardised_separately(tiny_slider):
    train, test = tiny_slider
    detector = create(
        "memory-bank",
        **SMALL,
        per_id=False,
        feature="logmel-patch,logmel-impulse,logmel-modulation",
        mel_pool=2,
        view_groups=8,
        modulation_bins=6,
        subbands=2,
    ).fit(train)
    # Two sub-bands of the 64 pooled patch bands, then one band per other view.
    widths = [len(b) for b in detector.bands_]
    assert widths == [64, 64, 5 * 8, 8 * 6]
    np.testing.assert_array_equal(detector.view_of_band_, [0, 0, 1, 2])
    np.testing.assert_array_equal(np.sort(np.concatenate(detector.bands_)), np.arange(sum(widths)))
    assert len(detector.units_) == 4 and (detector.loo_std_ > 0).all()
    # The fused score is the mean of the views' scores (max over the patch sub-bands).
    n_clips = len(test)
    raws = detector._raw(test)
    x, owners = detector._featurise(raws)
    per_band = [
        (detector._unit_scores(unit, x[:, cols], owners, n_clips) - m) / s
        for unit, cols, m, s in zip(
            detector.units_, detector.bands_, detector.loo_mean_, detector.loo_std_, strict=True
        )
    ]
    expected = np.mean([np.maximum(per_band[0], per_band[1]), per_band[2], per_band[3]], axis=0)
    np.testing.assert_allclose(detector.score(test), expected)


def test_level_norm_in_few_shot_banks_ignores_loudness(tiny_slider, tmp_path: Path):
    train, test = tiny_slider
    few = create("memory-bank", **SMALL, per_id=False, level_norm="few").fit(train)
    # 16 training clips (less the held-out ones) are fewer than augment_below=20.
    assert few.level_norm_active_
    raws = few._raw(test)
    louder = [r + 6.0 for r in raws]
    # (float32 log-mels: equal up to rounding)
    np.testing.assert_allclose(few._score_raws(louder), few._score_raws(raws), atol=1e-4)
    loaded = Detector.load(few.save(tmp_path / "few.safetensors"))
    assert loaded.level_norm_active_
    np.testing.assert_allclose(loaded.score(test), few.score(test))
    # Larger banks (here: augment_below lowered) and level_norm=off keep the level.
    for params in ({"augment_below": 2}, {"level_norm": "off"}):
        plain = create("memory-bank", **SMALL, per_id=False, **params).fit(train)
        assert not plain.level_norm_active_
        assert not np.allclose(plain._score_raws(louder), plain._score_raws(raws))


def test_augmentation_grows_the_bank_and_keeps_copies_out_of_their_fold(tiny_slider):
    train, test = tiny_slider
    big = {**SMALL, "bank_size": 1000}
    plain = create("memory-bank", **big, per_id=False, backends="knn", augment=0)
    augmented = create(
        "memory-bank", **big, per_id=False, backends="knn", augment=3, augment_below=0
    )
    plain.fit(train)
    augmented.fit(train)
    assert augmented.units_[0].train_.shape[0] == 4 * plain.units_[0].train_.shape[0]
    assert np.isfinite(augmented.score(test)).all()
    # Banks of at least augment_below clips are left as recorded.
    many = create(
        "memory-bank", **big, per_id=False, backends="knn", augment=3, augment_below=5
    ).fit(train)
    assert many.units_[0].train_.shape[0] == plain.units_[0].train_.shape[0]


def test_few_shot_ten_clips_separates_anomalies(tmp_path_factory):
    from soundwatch.data.datasets import discover
    from soundwatch.synth import generate_dataset

    root = tmp_path_factory.mktemp("ten-shot")
    generate_dataset(
        root,
        "fan",
        n_ids=1,
        n_train_per_id=10,
        n_test_normal_per_id=6,
        n_test_anomaly_per_id=6,
        duration=3.0,
        severity=3.0,
        progress=False,
    )
    train, test = discover(root, "fan", "train"), discover(root, "fan", "test")
    assert len(train) == 10
    detector = create("memory-bank").fit(train)
    labels = np.array([c.label == "anomaly" for c in test], dtype=int)
    assert _auc(detector.score(test), labels) > 0.7


def test_bad_combinations_are_refused():
    with pytest.raises(ConfigError, match="level=clip"):
        create("memory-bank", feature="logmel-stats", level="frame")
    with pytest.raises(ConfigError, match="subbands need a frequency axis"):
        create("memory-bank", feature="efficientat", subbands=2)
    with pytest.raises(ConfigError, match="backends must be"):
        create("memory-bank", backends="knn,nope")
    with pytest.raises(ConfigError, match="augment_ops must be"):
        create("memory-bank", augment_ops="")
    with pytest.raises(ConfigError, match="does not divide"):
        create("memory-bank", mel_pool=3)
    with pytest.raises(ConfigError, match="feature must be"):
        create("memory-bank", feature="logmel-patch,nope")
    with pytest.raises(ConfigError, match="twice"):
        create("memory-bank", feature="logmel-patch,logmel-patch")
    with pytest.raises(ConfigError, match="several feature views"):
        create("memory-bank", feature="logmel-patch,efficientat")
    with pytest.raises(ConfigError, match="several feature views"):
        create("memory-bank", feature="logmel-patch,logmel-impulse", level="frame")
    with pytest.raises(ConfigError, match="level=clip"):
        create("memory-bank", feature="logmel-impulse", level="frame")


@pytest.mark.parametrize("level", ["clip", "frame"])
def test_efficientat_banks(level, tiny_slider, efficientat_weights, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("SOUNDWATCH_EFFICIENTAT_WEIGHTS", str(efficientat_weights))
    train, test = tiny_slider
    detector = create(
        "memory-bank",
        **SMALL,
        feature="efficientat",
        level=level,
        backends="knn,mahalanobis",
        metric="cosine",
        k=1,
    ).fit(train)
    scores = detector.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    np.testing.assert_allclose(
        Detector.load(detector.save(tmp_path / "m.safetensors")).score(test), scores
    )
