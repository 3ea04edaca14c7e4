"""The detector contract, registry, model files, and the built-in detectors."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from soundwatch.data.clips import Clip
from soundwatch.data.datasets import discover
from soundwatch.detectors import Detector, available, create
from soundwatch.detectors.base import holdout_split
from soundwatch.detectors.modelfile import read_model_file
from soundwatch.errors import ConfigError, ModelFileError


@pytest.fixture(scope="module")
def slider(slider_mini):
    return discover(slider_mini, "slider", "train"), discover(slider_mini, "slider", "test")


@pytest.fixture(scope="module")
def mahalanobis(slider):
    """logmel-mahalanobis fitted once on the real slider training clips."""
    return create("logmel-mahalanobis").fit(slider[0])


def test_registry_lists_builtin_detectors():
    detectors = available()
    assert {"dcase2020-ae", "logmel-mahalanobis"} <= set(detectors)
    for name, cls in detectors.items():
        assert cls.name == name
        assert cls.summary and "\n" not in cls.summary
        assert cls.__doc__ and cls.describe() == cls.__doc__.strip(), f"{name}: no docstring"


def test_unknown_detector_and_parameters_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown detector 'nope'"):
        create("nope")
    with pytest.raises(ConfigError, match="unknown parameter"):
        create("dcase2020-ae", epoch=3)
    with pytest.raises(ConfigError, match="epochs expects int"):
        create("dcase2020-ae", epochs="many")
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        create("dcase2020-ae", epochs="0")


def test_parameters_are_coerced_from_strings():
    det = create("dcase2020-ae", epochs="7", standardize="true", duration="none")
    assert det.epochs == 7 and det.standardize is True and det.duration is None
    assert det.get_params()["epochs"] == 7


def test_holdout_split_is_stratified_and_deterministic():
    clips = [Clip(f"{i:03d}.wav", machine_id=mid) for mid in ("00", "02") for i in range(20)]
    train, held = holdout_split(clips, 0.1, seed=0)
    assert len(held) == 4 and len(train) == 36
    assert sorted(c.machine_id for c in held) == ["00", "00", "02", "02"]
    assert holdout_split(clips, 0.1, seed=0) == (train, held)
    assert not set(train) & set(held)


def test_logmel_mahalanobis_separates_real_slider_anomalies(slider, mahalanobis):
    _, test = slider
    labels = np.array([c.is_anomaly for c in test])
    scores = mahalanobis.score(test)
    assert scores[labels].min() > scores[~labels].max()


def test_dcase2020_ae_architecture_matches_baseline():
    from soundwatch.detectors.dcase2020_ae import DenseAutoencoder

    net = DenseAutoencoder(128, 5)
    linear = [m for m in net.layers if m.__class__.__name__ == "Linear"]
    sizes = [linear[0].in_features] + [m.out_features for m in linear]
    assert sizes == [640, 128, 128, 128, 128, 8, 128, 128, 128, 128, 640]
    n_batchnorm = sum(m.__class__.__name__ == "BatchNorm1d" for m in net.layers)
    assert n_batchnorm == len(linear) - 1


def test_dcase2020_ae_follows_the_official_recipe_by_default():
    # The official script trains 100 epochs in batches of 512 and keeps the last epoch;
    # its validation split only reports a loss.
    config = create("dcase2020-ae").train_config()
    assert (config.epochs, config.restore_best) == (100, False)
    assert create("dcase2020-ae").batch_size == 512
    assert create("dcase2020-ae", restore_best="true").train_config().restore_best is True
    # Other neural detectors keep the best validation epoch, as before.
    assert create("mlp-ae").train_config().restore_best is True
    assert create("dcase2023-ae").train_config().restore_best is False


@pytest.mark.parametrize("restore_best", [True, False])
def test_training_loop_keeps_best_or_last_epoch(restore_best):
    import torch

    from soundwatch.training.loop import TrainConfig, train

    class Scalar(torch.nn.Module):
        """Training pulls w to 1; the validation loss w**2 is lowest before any step."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def loss(self, target: float) -> torch.Tensor:
            return (self.w - target) ** 2

    model = Scalar()
    config = TrainConfig(epochs=5, learning_rate=0.1, restore_best=restore_best, progress=False)
    weights = []

    def train_batches(rng):
        yield 1.0
        weights.append(float(model.w.detach()))  # after this epoch's step

    history = train(model, train_batches, lambda: [0.0], config)
    kept = float(model.w.detach())
    assert weights == sorted(weights) and len(set(weights)) == 5  # w rises every epoch
    if restore_best:
        assert (history.best_epoch, kept) == (0, weights[0])
    else:
        assert (history.best_epoch, kept) == (4, weights[-1])


def test_per_id_models_route_clips_by_machine_id(slider):
    train, test = slider
    relabelled = [
        Clip(c.path, c.machine_type, "02" if i % 2 else "00", c.split, c.label)
        for i, c in enumerate(train)
    ]
    detector = create("logmel-mahalanobis", per_id=True).fit(relabelled)
    assert sorted(detector._members) == ["00", "02"]
    np.testing.assert_array_equal(detector.score(test), detector._members["00"]._score(test))
    # A clip of an ID the model never saw is judged by its closest ID model.
    unseen = [Clip(c.path, c.machine_type, "09", c.split, c.label) for c in test]
    np.testing.assert_array_equal(
        detector.score(unseen),
        np.minimum(detector._members["00"]._score(test), detector._members["02"]._score(test)),
    )


def test_model_file_metadata_is_json_without_pickle(mahalanobis, tmp_path):
    path = mahalanobis.save(tmp_path / "m.safetensors")
    tensors, meta = read_model_file(path)
    assert meta["detector"] == "logmel-mahalanobis"
    assert meta["params"]["n_mels"] == 128
    assert meta["threshold"]["method"] == "gamma"
    assert meta["fit_info"]["training_data"]["n_clips"] == 75
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    assert b"pickle" not in path.read_bytes()[:64]


def test_model_file_from_other_version_is_refused(mahalanobis, tmp_path):
    path = mahalanobis.save(tmp_path / "m.safetensors")
    tensors, meta = read_model_file(path)
    meta["format_version"] = 999
    meta["soundwatch_version"] = "9.0.0"
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"soundwatch": json.dumps(meta)})
    with pytest.raises(ModelFileError, match=r"soundwatch 9\.0\.0 in model format 999"):
        Detector.load(old)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x10\x00\x00\x00"])
def test_corrupt_model_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError):
        Detector.load(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(ModelFileError, match="not a soundwatch model"):
        Detector.load(path)
    with pytest.raises(ModelFileError, match="not found"):
        Detector.load(tmp_path / "missing.safetensors")
