"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
# Set to 1 to skip, instead of fail, the tests that read real clips and model weights
# from ../shared (for a checkout without that folder beside it).
SKIP_SHARED_ENV = "SOUNDWATCH_SKIP_SHARED"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ``shared/`` folder beside the repository.

    A missing folder fails the test: the real-data tests must not vanish silently. Set
    ``SOUNDWATCH_SKIP_SHARED=1`` to skip them instead.
    """
    if not SHARED_DIR.is_dir():
        if os.environ.get(SKIP_SHARED_ENV) == "1":
            pytest.skip(f"shared data folder not found: {SHARED_DIR} ({SKIP_SHARED_ENV}=1)")
        pytest.fail(
            f"shared data folder not found: {SHARED_DIR}; put the real data there, or set "
            f"{SKIP_SHARED_ENV}=1 to skip the tests that need it",
            pytrace=False,
        )
    return SHARED_DIR


@pytest.fixture(autouse=True, scope="session")
def _private_feature_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep tests from reading or writing the user's feature cache."""
    os.environ["SOUNDWATCH_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="session")
def slider_mini(shared_dir: Path) -> Path:
    """Root of the real DCASE 2020 slider mini data set (75 train, 3 + 3 test clips)."""
    return shared_dir / "data" / "dcase2020-slider-mini" / "dev_data"


@pytest.fixture(scope="session")
def efficientat_weights(shared_dir: Path) -> Path:
    """The shared EfficientAT mn04 AudioSet weights folder."""
    folder = shared_dir / "models" / "efficientat-mn04-as"
    if not folder.is_dir():
        pytest.fail(f"EfficientAT weights not found in {folder}", pytrace=False)
    return folder


@pytest.fixture(scope="session")
def tiny_slider_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny synthetic slider set (DCASE 2020 layout): two machine IDs, eight 3 s
    training clips and one normal and one anomalous test clip per ID."""
    from soundwatch.synth import generate_dataset

    root = tmp_path_factory.mktemp("tiny-slider")
    generate_dataset(
        root,
        "slider",
        n_ids=2,
        n_train_per_id=8,
        n_test_normal_per_id=1,
        n_test_anomaly_per_id=1,
        duration=3.0,
        progress=False,
    )
    return root


@pytest.fixture(scope="session")
def tiny_slider(tiny_slider_root: Path) -> tuple[list, list]:
    """The tiny synthetic slider set as (train, test) clips."""
    from soundwatch.data.datasets import discover

    return (
        discover(tiny_slider_root, "slider", "train"),
        discover(tiny_slider_root, "slider", "test"),
    )
