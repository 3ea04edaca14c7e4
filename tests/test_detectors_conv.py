"""The convolutional patch detectors: conv-ae, conv-ae-svdd and conv-vae."""

import numpy as np
import pytest
import torch

import soundwatch.detectors.conv as conv
from soundwatch.data.datasets import discover
from soundwatch.detectors import Detector, create
from soundwatch.detectors.modelfile import read_model_file
from soundwatch.detectors.neural import TorchDetectorMixin
from soundwatch.detectors.windows import to_batch
from soundwatch.errors import ConfigError
from soundwatch.features.frames import FrameStore

# Tiny networks on 16-frame patches: a few seconds per fit on the mini data set.
TINY = {"epochs": 2, "frames": 16, "train_patches": 2, "score_stride": 16}
FAST = {
    "conv-ae": {**TINY, "channels": "4,8,8", "latent": 16},
    "conv-ae-svdd": {**TINY, "channels": "4,8,8,8", "latent": 8},
    "conv-vae": {**TINY, "channels": "4,8,8", "latent": 8},
}


@pytest.fixture(scope="module", autouse=True)
def feature_cache(tmp_path_factory):
    """Cache features in a temporary folder shared by this module's tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOUNDWATCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def slider(shared_dir):
    root = shared_dir / "data/dcase2020-slider-mini/dev_data"
    return discover(root, "slider", "train"), discover(root, "slider", "test")


@pytest.mark.slow
def test_conv_ae_end_to_end_on_real_slider(slider, tmp_path):
    """The conv family end to end on real clips: held-out validation, min-max scaling
    fitted on the training patches and stored in the model file."""
    train, test = slider
    detector = create("conv-ae", **FAST["conv-ae"]).fit(train)
    assert 1 <= len(detector.history_["train_loss"]) <= 2
    assert np.isfinite(detector.history_["valid_loss"]).all()  # held-out normals used
    scores = detector.score(test)
    assert scores.shape == (6,) and np.isfinite(scores).all()
    low, high = detector.scaler_.min_, detector.scaler_.max_
    assert low < high
    _, metadata = read_model_file(detector.save(tmp_path / "ae.safetensors"))
    assert metadata["state"]["scaler"] == {"min": low, "max": high}
    assert metadata["state"]["scaling"] == "minmax"


def test_svdd_center_is_fixed_before_training_and_saved(tiny_slider, tmp_path, monkeypatch):
    train, _ = tiny_slider
    before = {}
    original = TorchDetectorMixin.run_training

    def spy(self, network, train_batches, valid_batches):
        before["center"] = network.center.clone()
        before["weights"] = network.encoder.blocks[0][0].weight.detach().clone()
        return original(self, network, train_batches, valid_batches)

    monkeypatch.setattr(TorchDetectorMixin, "run_training", spy)
    detector = create("conv-ae-svdd", **FAST["conv-ae-svdd"]).fit(train)
    center = detector.center_
    assert center.shape == (8,)
    assert np.array_equal(center, before["center"].numpy())  # training left it alone
    assert not torch.equal(detector.network_.encoder.blocks[0][0].weight, before["weights"])
    assert (np.abs(center) >= detector.center_eps - 1e-7).all()  # collapse guard
    assert all(
        m.bias is None
        for m in detector.network_.encoder.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    )
    loaded = Detector.load(detector.save(tmp_path / "svdd.safetensors"))
    assert np.array_equal(loaded.center_, center)


def test_svdd_with_reconstruction_term_and_skip_connections(tiny_slider):
    train, _ = tiny_slider
    params = {**FAST["conv-ae-svdd"], "epochs": 1, "recon_weight": 0.5, "skip": True}
    detector = create("conv-ae-svdd", **params).fit(train)
    assert detector.network_.decoder is not None and detector.network_.decoder.skip
    assert np.isfinite(detector.history_["train_loss"]).all()


def test_vae_grid_search_records_results(tiny_slider, tmp_path):
    train, test = tiny_slider
    params = {
        **FAST["conv-vae"],
        "epochs": 1,
        "grid_search": True,
        "cv_folds": 2,
        "grid_epochs": 1,
        "latent_grid": "4,8",
        "beta_grid": "0.1",
    }
    detector = create("conv-vae", **params).fit(train)
    grid = detector.grid_
    assert [(r["latent"], r["beta"]) for r in grid["results"]] == [(4, 0.1), (8, 0.1)]
    assert all(len(r["fold_losses"]) == 2 for r in grid["results"])
    best = min(grid["results"], key=lambda r: r["mean_loss"])
    assert grid["selected"] == {"latent": best["latent"], "beta": best["beta"]}
    assert detector.latent_ == best["latent"]
    _, metadata = read_model_file(detector.save(tmp_path / "vae.safetensors"))
    assert metadata["state"]["grid_search"] == grid
    loaded = Detector.load(tmp_path / "vae.safetensors")
    assert loaded.latent_ == best["latent"]
    assert np.array_equal(loaded.score(test), detector.score(test))


def test_cv_folds_are_balanced_per_machine_id(slider):
    train, _ = slider
    folds = conv.ConvVAEDetector.cv_folds_of(train, 3, seed=0)
    assert sorted(np.bincount(folds)) == [25, 25, 25]
    assert np.array_equal(folds, conv.ConvVAEDetector.cv_folds_of(train, 3, seed=0))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("conv-ae", {"channels": "8,x"}, "comma-separated ints"),
        ("conv-ae", {"channels": "8,0"}, "must be >= 1"),
        ("conv-ae", {"frames": 20}, "divisible by"),
        ("conv-ae", {"n_mels": 100, "channels": "4,4,4,4"}, "divisible by"),
        ("conv-ae", {"latent": -1}, "must be >= 0"),
        ("conv-ae-svdd", {"skip": True}, "needs recon_weight > 0"),
        ("conv-ae-svdd", {"dropout": 1.5}, "must be <="),
        ("conv-vae", {"beta_grid": "0.1,big"}, "comma-separated floats"),
        ("conv-vae", {"latent_grid": ""}, "is empty"),
        ("conv-vae", {"cv_folds": 1}, "must be >= 2"),
        ("conv-vae", {"epochs": 0}, "must be >= 1"),
    ],
)
def test_bad_params_are_config_errors(name, params, message):
    with pytest.raises(ConfigError, match=message):
        create(name, **params)


def test_grid_search_needs_enough_clips(slider):
    train, _ = slider
    detector = create("conv-vae", **FAST["conv-vae"], grid_search=True, cv_folds=50)
    with pytest.raises(ConfigError, match="at least cv_folds"):
        detector.fit(train[:20])


def test_sample_patches_draws_distinct_windows_of_every_clip():
    spectrograms = [np.zeros((4, n), dtype=np.float32) for n in (40, 12, 25)]
    store = FrameStore(spectrograms, context=8, stride=4)
    counts = np.bincount(store.window_clip)  # 9, 2, 5 windows
    rng = np.random.default_rng(0)
    picked = conv.sample_patches(store, 3, rng)
    assert len(set(picked)) == len(picked)
    assert np.array_equal(np.bincount(store.window_clip[picked]), np.minimum(counts, 3))
    assert sorted(conv.sample_patches(store, 0, rng)) == list(range(store.n_windows))


def test_patches_are_mel_by_frame_images():
    spectrogram = np.arange(4 * 10, dtype=np.float32).reshape(4, 10)
    store = FrameStore([spectrogram], context=8, stride=2)
    images = to_batch(store.windows(np.array([1]), flatten=False), "images")
    assert images.shape == (1, 1, 4, 8)
    assert np.array_equal(images[0, 0].numpy(), spectrogram[:, 2:10])


@pytest.mark.parametrize("skip", [False, True])
def test_encoder_decoder_shapes(skip):
    encoder = conv.ConvEncoder((32, 16), (4, 8, 8), latent=6, bias=False, affine=False)
    decoder = conv.ConvDecoder(encoder.feature_shape, (4, 8, 8), latent=6, skip=skip)
    x = torch.randn(3, 1, 32, 16)
    code, features = encoder(x)
    assert code.shape == (3, 6) and [f.shape[1:] for f in features] == [
        (4, 16, 8),
        (8, 8, 4),
        (8, 4, 2),
    ]
    assert decoder(code, features).shape == x.shape
