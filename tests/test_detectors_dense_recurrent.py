"""Tests for the dense (mlp-ae, mlp-encoder-distance, vae) and recurrent (lstm-predictor,
gru-ae) detectors: one real end-to-end fit per family, variants, and their building
blocks. The contract every detector keeps (round trip, determinism, ...) is in
test_contract."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import soundwatch.detectors.mlp_ae
import soundwatch.detectors.recurrent
import soundwatch.detectors.vae  # noqa: F401  (registration)
from soundwatch.data.datasets import discover
from soundwatch.detectors import Detector, available, create
from soundwatch.detectors.params import parse_list
from soundwatch.detectors.windows import (
    dense_stack,
    grid_indices,
    sampled_batches,
)
from soundwatch.errors import ConfigError
from soundwatch.features.frames import FrameStore

NAMES = ["mlp-ae", "mlp-encoder-distance", "vae", "lstm-predictor", "gru-ae"]

# Tiny networks, short epochs and one thread (two contend on a busy 2-core machine) keep
# each fit to about a second.
FAST = {"epochs": 2, "threads": 1}


@pytest.fixture(scope="module", autouse=True)
def restore_torch_threads():
    """``threads=1`` sets torch's global thread count; give other tests the default back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def slider(shared_dir):
    root = shared_dir / "data/dcase2020-slider-mini/dev_data"
    return discover(root, "slider", "train"), discover(root, "slider", "test")


@pytest.mark.parametrize("name", NAMES)
def test_registered(name):
    assert name in available()
    cls = available()[name]
    assert cls.summary and cls.__doc__


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "params"),
    [("mlp-ae", {"hidden": "64,32", "latent": 8}), ("gru-ae", {"hidden": 16, "stride": 16})],
    ids=["dense", "recurrent"],
)
def test_end_to_end_on_real_slider(name, params, slider):
    """One dense and one recurrent detector on real clips; the model file round trip of
    every detector is in test_contract."""
    train, test = slider
    detector = create(name, **FAST, **params).fit(train)
    scores = detector.score(test)
    assert scores.shape == (6,) and np.isfinite(scores).all()
    # The held-out normals drove validation.
    assert detector.fit_info_["n_validation"] > 0
    assert np.isfinite(detector.history_["valid_loss"]).all()
    assert detector.history_["best_epoch"] in range(FAST["epochs"])


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("vae", {"hidden": "32,32", "latent": 4, "batchnorm": True, "stride": 8}),
        ("gru-ae", {"hidden": 8, "layers": 1, "decoder_input": "zeros", "stride": 32}),
    ],
    ids=["vae-batchnorm", "gru-ae-zeros"],
)
def test_variants_fit_and_score(name, params, tiny_slider):
    train, test = tiny_slider
    detector = create(name, **FAST, **params).fit(train)
    assert np.isfinite(detector.history_["train_loss"]).all()
    assert np.isfinite(detector.score(test)).all()


def test_encoder_distance_shares_the_autoencoder():
    ae, distance = available()["mlp-ae"], available()["mlp-encoder-distance"]
    assert issubclass(distance, ae)
    assert {k: v for k, v in distance.params.items() if k != "distance"} == ae.params
    assert distance.params["distance"].default == "euclidean"  # the published score


def test_encoder_distance_mahalanobis_scores_whitened_mean_codes(tiny_slider, tmp_path):
    train, test = tiny_slider
    params = {**FAST, "hidden": "32", "latent": 4, "frames": 4}
    euclid = create("mlp-encoder-distance", **params).fit(train)
    maha = create("mlp-encoder-distance", distance="mahalanobis", **params).fit(train)
    # Same seed, same network: only the distance differs.
    store = maha._store(test, maha.score_stride)
    codes = maha._clip_codes(store)
    np.testing.assert_allclose(
        euclid.score(test), np.linalg.norm(codes - euclid.center_, axis=1), rtol=1e-6
    )
    # One Gaussian per machine ID; a clip is scored under its own ID's.
    ids = np.array([c.machine_id for c in test])
    assert sorted(maha.scorers_) == sorted(set(ids))
    expected = np.array(
        [maha.scorers_[i].score(code[None])[0] for i, code in zip(ids, codes, strict=True)]
    )
    np.testing.assert_allclose(maha.score(test), expected, rtol=1e-6)
    # A clip of an ID the model never saw gets its smallest distance over the IDs.
    unseen = [replace(c, machine_id="99") for c in test]
    nearest = np.min([s.score(codes) for s in maha.scorers_.values()], axis=0)
    np.testing.assert_allclose(maha.score(unseen), nearest, rtol=1e-6)
    loaded = Detector.load(maha.save(tmp_path / "maha.safetensors"))
    np.testing.assert_allclose(loaded.score(test), expected, rtol=1e-6)
    with pytest.raises(ConfigError, match="distance"):
        create("mlp-encoder-distance", distance="cosine")
    # One Gaussian per ID needs two clips of each ID, checked before training.
    one_of_02 = [c for c in train if c.machine_id == "00"] + [
        next(c for c in train if c.machine_id == "02")
    ]
    lonely = create("mlp-encoder-distance", distance="mahalanobis", validation_fraction=0, **params)
    with pytest.raises(ConfigError, match="ID 02 has 1"):
        lonely.fit(one_of_02)
    assert not hasattr(lonely, "network_")


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("mlp-ae", {"hidden": "1024,abc"}),
        ("mlp-ae", {"hidden": "1024,0"}),
        ("mlp-ae", {"hidden": ""}),
        ("mlp-ae", {"frames": 0}),
        ("mlp-encoder-distance", {"latent": "eight"}),
        ("vae", {"hidden": "400;400"}),
        ("vae", {"batchnorm": "maybe"}),
        ("vae", {"beta": -1}),
        ("lstm-predictor", {"hidden": 0}),
        ("lstm-predictor", {"stride": 0}),
        ("gru-ae", {"decoder_input": "ones"}),
        ("gru-ae", {"unknown": 1}),
    ],
)
def test_bad_params(name, params):
    with pytest.raises(ConfigError):
        create(name, **params)


def test_study_variants_are_reachable():
    deep = create("mlp-ae", frames="64", hidden="4096,2048,1024,512,256")
    assert deep._context() * 128 == 8192 and deep._hidden == (4096, 2048, 1024, 512, 256)
    vae = create("vae", hidden="400,400", latent="20", batchnorm="true")
    network = vae._build_network(128)
    linear = [m for m in network.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(640, 400), (400, 400), (400, 40)]
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in network.encoder)


def test_parse_list():
    assert parse_list("hidden", " 1024, 512,256 ") == (1024, 512, 256)
    with pytest.raises(ConfigError, match="comma-separated ints"):
        parse_list("hidden", "1024,,256")


def test_dense_stack_last_layer_is_linear():
    layers = list(dense_stack([10, 6, 4, 2], batchnorm=True))
    assert isinstance(layers[-1], torch.nn.Linear)
    assert sum(isinstance(m, torch.nn.ReLU) for m in layers) == 2
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in layers) == 2


def test_sampled_batches_draw_a_fresh_fraction_each_epoch():
    rng = np.random.default_rng(0)
    first = np.concatenate(list(sampled_batches(1000, 4, 50, rng)))
    second = np.concatenate(list(sampled_batches(1000, 4, 50, rng)))
    assert len(first) == len(np.unique(first)) == 250
    assert not np.array_equal(np.sort(first), np.sort(second))
    # A last partial batch is dropped, unless it is the only one.
    assert len(np.concatenate(list(sampled_batches(1000, 3, 100, rng)))) == 300
    assert len(np.concatenate(list(sampled_batches(10, 1, 100, rng)))) == 10


def test_grid_indices_match_a_strided_store():
    rng = np.random.default_rng(0)
    specs = [rng.normal(size=(3, n)).astype(np.float32) for n in (20, 17, 9)]
    dense, strided = FrameStore(specs, 4), FrameStore(specs, 4, stride=3)
    idx = grid_indices(dense, 3)
    np.testing.assert_array_equal(dense.windows(idx), strided.windows(np.arange(strided.n_windows)))
    np.testing.assert_array_equal(dense.window_clip[idx], strided.window_clip)
