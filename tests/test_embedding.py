"""Audio encoders, pooling, embedding scorers and the embedding detectors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture
from sklearn.svm import OneClassSVM

from soundwatch.data.datasets import discover
from soundwatch.detectors import embedding  # noqa: F401  (registration)
from soundwatch.detectors.embedding import EmbeddingDetector
from soundwatch.detectors.registry import create
from soundwatch.detectors.scorers import (
    SCORERS,
    GMMScorer,
    OCSVMScorer,
    Scorer,
    create_scorer,
    parse_gamma,
)
from soundwatch.encoders.base import Encoder
from soundwatch.encoders.embed import embed_clips
from soundwatch.encoders.pooling import pool, pooled_dim
from soundwatch.encoders.random_cnn import RandomConvEncoder
from soundwatch.encoders.registry import ENCODERS, shared_encoder
from soundwatch.errors import ConfigError

SCORER_NAMES = ["mahalanobis", "knn", "ocsvm", "gmm", "mean-distance", "ldn-knn", "pca-residual"]


# ------------------------------------------------------------------------------ pooling


FRAMES = np.array([[0.0, -1.0], [1.0, -1.0], [2.0, -1.0]])


def test_pool_mean_max_meanstd():
    np.testing.assert_allclose(pool(FRAMES, "mean"), [1.0, -1.0])
    np.testing.assert_allclose(pool(FRAMES, "max"), [2.0, -1.0])
    np.testing.assert_allclose(pool(FRAMES, "meanstd"), [1.0, -1.0, np.sqrt(2 / 3), 0.0])
    assert pooled_dim(2, "meanstd") == 4 and pooled_dim(2, "gem") == 2


def test_pool_gem_is_shifted_generalised_mean():
    # Column 0: min 0, shifted (0, 1, 2): (mean(0, 1, 4)) ** (1/2) = sqrt(5/3).
    # Column 1 is constant: its GeM is the constant itself.
    np.testing.assert_allclose(pool(FRAMES, "gem", p=2.0), [np.sqrt(5 / 3), -1.0])
    # p = 1 is the mean, large p approaches the max; shifting all frames shifts GeM.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4))
    np.testing.assert_allclose(pool(x, "gem", p=1.0), x.mean(0))
    np.testing.assert_allclose(pool(x, "gem", p=500.0), x.max(0), rtol=0.02, atol=0.02)
    np.testing.assert_allclose(pool(x + 10.0, "gem"), pool(x, "gem") + 10.0)
    assert np.all(pool(x, "gem") >= x.mean(0) - 1e-12) and np.all(pool(x, "gem") <= x.max(0))


def test_pool_rejects_bad_input():
    with pytest.raises(ConfigError, match="unknown pooling"):
        pool(FRAMES, "median")
    with pytest.raises(ConfigError, match="n_frames"):
        pool(np.zeros((0, 3)), "mean")
    with pytest.raises(ConfigError, match=">= 1"):
        pool(FRAMES, "gem", p=0.5)


# ------------------------------------------------------------------------------ scorers


@pytest.fixture(scope="module")
def gaussian_data():
    """Correlated Gaussian normals, held-out normals, and far outliers."""
    rng = np.random.default_rng(0)
    d = 6
    mixing = rng.normal(size=(d, d))
    offset = rng.normal(size=d) * 5
    train = rng.normal(size=(200, d)) @ mixing + offset
    inliers = rng.normal(size=(30, d)) @ mixing + offset
    outliers = rng.normal(size=(30, d)) @ mixing + offset + 6.0 * np.abs(mixing).sum(0)
    return train, inliers, outliers


SCORER_CONFIGS = [
    ("mahalanobis", {}),
    ("knn", {"metric": "euclidean"}),
    ("knn", {"metric": "cosine", "k": 1}),
    ("ocsvm", {}),
    ("gmm", {}),
    ("mean-distance", {"metric": "euclidean"}),
    ("mean-distance", {"metric": "cosine"}),
]


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize(("name", "params"), SCORER_CONFIGS)
def test_scorer_separates_outliers_and_round_trips(name, params, standardize, gaussian_data):
    train, inliers, outliers = gaussian_data
    scorer = create_scorer(name, standardize=standardize, **params).fit(train)
    s_in, s_out = scorer.score(inliers), scorer.score(outliers)
    assert s_in.shape == (30,) and s_out.shape == (30,)
    assert np.isfinite(s_in).all() and np.isfinite(s_out).all()
    # Cosine distances of centred data see only the direction of a deviation, not its
    # size, so far outliers along a normal direction look normal: no separation there.
    if not (standardize and params.get("metric") == "cosine"):
        assert s_out.min() > np.median(s_in)
        assert s_out.mean() > s_in.mean()

    arrays, meta = scorer.state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    assert all(v.dtype != object for v in arrays.values())
    restored = Scorer.from_state({k: v.copy() for k, v in arrays.items()}, meta)
    assert type(restored) is type(scorer)
    np.testing.assert_array_equal(restored.score(outliers), s_out)
    np.testing.assert_array_equal(restored.score(inliers), s_in)


def test_scorer_errors():
    with pytest.raises(ConfigError, match="unknown scorer 'lof'"):
        create_scorer("lof")
    with pytest.raises(ConfigError, match="metric"):
        create_scorer("knn", metric="manhattan")
    with pytest.raises(ConfigError, match="gamma"):
        parse_gamma("wide")
    with pytest.raises(ConfigError, match="at least 2"):
        create_scorer("mahalanobis").fit(np.zeros((1, 3)))
    scorer = create_scorer("mean-distance").fit(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ConfigError, match="3-d"):
        scorer.score(np.zeros((2, 4)))
    assert parse_gamma("0.5") == 0.5 and parse_gamma("scale") == "scale"
    assert set(SCORER_NAMES) == set(SCORERS.names())


def test_knn_scores_are_mean_distances_to_k_nearest():
    train = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    scorer = create_scorer("knn", k=2, metric="euclidean").fit(train)
    # From (0, 1): distances 1, sqrt(2), sqrt(10) -> mean of the two smallest.
    np.testing.assert_allclose(scorer.score([[0.0, 1.0]]), [(1 + np.sqrt(2)) / 2])
    cosine = create_scorer("knn", k=1, metric="cosine").fit([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(cosine.score([[3.0, 0.0], [1.0, 1.0]]), [0.0, 1 - np.sqrt(0.5)])
    # k larger than the training set uses every training vector.
    big_k = create_scorer("knn", k=50, metric="euclidean").fit(train)
    np.testing.assert_allclose(big_k.score([[0.0, 0.0]]), [4 / 3])


@pytest.mark.parametrize("gamma", ["scale", "auto", 0.05])
def test_ocsvm_numpy_decision_function_equals_sklearn(gamma, gaussian_data):
    train, inliers, outliers = gaussian_data
    scorer = OCSVMScorer(nu=0.2, gamma=gamma).fit(train)
    reference = OneClassSVM(kernel="rbf", nu=0.2, gamma=gamma).fit(train)
    queries = np.vstack([inliers, outliers, train[:10]])
    np.testing.assert_allclose(
        scorer.score(queries), -reference.decision_function(queries), rtol=1e-9, atol=1e-9
    )


def test_gmm_numpy_log_likelihood_equals_sklearn(gaussian_data):
    train, inliers, outliers = gaussian_data
    scorer = GMMScorer(n_components=3, reg=1e-3, seed=1).fit(train)
    reference = GaussianMixture(
        n_components=3,
        covariance_type="full",
        reg_covar=1e-3 * train.var(axis=0).mean(),
        max_iter=200,
        random_state=1,
    ).fit(train)
    queries = np.vstack([inliers, outliers])
    np.testing.assert_allclose(scorer.score(queries), -reference.score_samples(queries), rtol=1e-9)


# ------------------------------------------------------------------------------ encoders


def test_random_cnn_encoder_shapes_and_determinism():
    encoder = ENCODERS.create("random-cnn", batch_size=2)
    assert isinstance(encoder, RandomConvEncoder)
    assert RandomConvEncoder.weights_available()
    wave = np.random.default_rng(0).normal(scale=0.1, size=(3, 16000)).astype(np.float32)
    frames = encoder.frame_embeddings(wave)
    # 1 + 16000 // 512 = 32 log-mel frames, time stride 4 -> 8 embedding frames.
    assert frames.shape == (3, 8, 64) and frames.dtype == np.float32
    assert encoder.frame_seconds == pytest.approx(4 * 512 / 16000)
    # Same weights every time (fixed seed, no global random state).
    again = ENCODERS.create("random-cnn", batch_size=2).frame_embeddings(wave)
    np.testing.assert_array_equal(again, frames)
    # Batching changes the result only by float round-off.
    single = ENCODERS.create("random-cnn").frame_embeddings(wave[1:2])[0]
    np.testing.assert_allclose(single, frames[1], rtol=1e-4, atol=1e-6)
    assert not np.allclose(ENCODERS.create("random-cnn", seed=1).frame_embeddings(wave), frames)
    with pytest.raises(ConfigError, match="no weights file"):
        ENCODERS.create("random-cnn", weights="x.pt")
    with pytest.raises(ConfigError, match="batch, n_samples"):
        encoder.frame_embeddings(wave[0])


def test_unknown_encoder_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown encoder 'nope'.*random-cnn"):
        ENCODERS.create("nope")
    with pytest.raises(ConfigError, match=r"unknown encoder 'nope'.*random-cnn"):
        shared_encoder("nope")


def test_encoder_names_are_listed_without_importing_torch():
    # A fresh interpreter: the lazy names must be exactly what the modules register.
    code = (
        "import importlib, pkgutil, sys\n"
        "from soundwatch.encoders.registry import ENCODERS\n"
        "import soundwatch.encoders as package\n"
        "names = ENCODERS.names()\n"
        "assert 'torch' not in sys.modules\n"
        "for module in pkgutil.iter_modules(package.__path__):\n"
        "    importlib.import_module(f'soundwatch.encoders.{module.name}')\n"
        "assert ENCODERS.names() == names, sorted(set(ENCODERS.names()) ^ set(names))\n"
        "assert all(ENCODERS.get(name).name == name for name in names)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_shared_encoder_is_one_instance_per_configuration(monkeypatch):
    first = shared_encoder("random-cnn", None, "cpu", 2)
    assert shared_encoder("random-cnn", None, "cpu", 2) is first
    assert shared_encoder("random-cnn", None, "cpu", 3) is not first
    assert isinstance(first, RandomConvEncoder) and first.batch_size == 2
    # "auto" is the GPU when there is one, else the same CPU encoder.
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert shared_encoder("random-cnn", None, "auto", 2) is first


def test_weights_available_and_cache_params(tmp_path):
    class NeedsWeights(Encoder):
        name = "test-needs-weights"
        embedding_dim = 2

        def _load(self):
            pass

        def _frames(self, waveforms):
            return waveforms[:, None, :2]

    assert not NeedsWeights.weights_available()
    checkpoint = tmp_path / "w.pt"
    assert not NeedsWeights.weights_available(checkpoint)
    checkpoint.write_bytes(b"one")
    assert NeedsWeights.weights_available(checkpoint)
    first = NeedsWeights(weights=str(checkpoint)).cache_params()
    assert NeedsWeights().cache_params()["weights"] == "default"
    checkpoint.write_bytes(b"other content")
    assert NeedsWeights(weights=str(checkpoint)).cache_params() != first


# ------------------------------------------------------------------------------ detector


@pytest.fixture(scope="module")
def slider(shared_dir: Path):
    root = shared_dir / "data" / "dcase2020-slider-mini" / "dev_data"
    return discover(root, "slider", "train"), discover(root, "slider", "test")


def test_embedding_cache_hit_on_second_call(slider, tmp_path, monkeypatch):
    monkeypatch.setenv("SOUNDWATCH_CACHE", str(tmp_path))
    calls = []

    @ENCODERS.register
    class CountingEncoder(RandomConvEncoder):
        name = "test-counting-cnn"

        def _frames(self, waveforms):
            calls.append(len(waveforms))
            return super()._frames(waveforms)

    try:
        clips = slider[1]
        encoder = ENCODERS.create("test-counting-cnn")
        vectors, frames = embed_clips(clips, encoder, "meanstd")
        assert len(calls) == len(clips)
        assert vectors.shape == (len(clips), 128)
        assert all(f.shape[1] == 64 and f.dtype == np.float32 for f in frames)
        assert list((tmp_path / "encoder-test-counting-cnn").rglob("*.npy"))

        again, frames_again = embed_clips(clips, ENCODERS.create("test-counting-cnn"), "meanstd")
        assert len(calls) == len(clips)  # every clip came from the cache
        np.testing.assert_array_equal(again, vectors)
        # Pooling happens after the cache: another pooling needs no network pass either.
        pooled_max, _ = embed_clips(clips, encoder, "max")
        assert len(calls) == len(clips)
        np.testing.assert_allclose(pooled_max, np.stack([f.max(0) for f in frames_again]))
    finally:
        ENCODERS.unregister("test-counting-cnn")


@pytest.mark.parametrize("scorer", SCORER_NAMES)
def test_embedding_detector_with_every_scorer(scorer, tiny_slider):
    train, test = tiny_slider
    detector = create("embedding", encoder="random-cnn", scorer=scorer).fit(train)
    scores = detector.score(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    assert set(detector._members) == {c.machine_id for c in train}
    assert {m.scorer_.name for m in detector._members.values()} == {scorer}


def test_embedding_detector_separates_real_slider_anomalies(slider):
    train, test = slider
    detector = create("embedding", encoder="random-cnn", pooling="meanstd").fit(train)
    scores = detector.score(test)
    anomalous = np.array([c.is_anomaly for c in test])
    assert scores[anomalous].mean() > scores[~anomalous].mean()


def test_short_named_variants_share_the_class():
    for name, scorer in [
        ("efficientat-knn", "knn"),
        ("efficientat-ocsvm", "ocsvm"),
        ("efficientat-gmm", "gmm"),
    ]:
        detector = create(name)
        assert isinstance(detector, EmbeddingDetector)
        assert detector.scorer == scorer and detector.encoder == "efficientat-mn04"


def test_unknown_encoder_or_scorer_is_a_config_error(slider):
    train, _ = slider
    with pytest.raises(ConfigError, match="scorer must be one of"):
        create("embedding", scorer="isolation-forest")
    with pytest.raises(ConfigError, match="ocsvm gamma"):
        create("embedding", ocsvm_gamma="wide")
    detector = create("embedding", encoder="no-such-encoder")  # validated lazily
    with pytest.raises(ConfigError, match=r"unknown encoder 'no-such-encoder'.*random-cnn"):
        detector.fit(train[:10])


def test_detector_parameters_are_coerced_from_strings():
    detector = create("embedding", standardize="false", knn_k="3", weights="none")
    assert detector.standardize is False and detector.knn_k == 3 and detector.weights is None
    scorer = create("embedding", scorer="gmm", gmm_components="4").make_scorer()
    assert isinstance(scorer, GMMScorer) and scorer.n_components == 4
    assert scorer.n_features_ is None  # not fitted


def test_empty_or_anomalous_training_data_is_refused(slider):
    # The base contract refuses these before any encoder is built.
    _, test = slider
    with pytest.raises(ConfigError, match="no training clips"):
        create("embedding", encoder="random-cnn").fit([])
    with pytest.raises(ConfigError, match="must be normal"):
        create("embedding", encoder="random-cnn").fit(test)


@pytest.mark.slow
def test_efficientat_mahalanobis_end_to_end_on_real_slider(
    efficientat_weights, slider_mini, monkeypatch
):
    """The offline pretrained encoder, end to end on real DCASE slider clips."""
    monkeypatch.setenv("SOUNDWATCH_EFFICIENTAT_WEIGHTS", str(efficientat_weights))
    train = discover(slider_mini, "slider", "train")
    test = discover(slider_mini, "slider", "test")
    detector = create("embedding", encoder="efficientat-mn04", scorer="mahalanobis").fit(train)
    scores = detector.score(test)
    labels = np.array([c.is_anomaly for c in test])
    assert scores[labels].min() > scores[~labels].max()
