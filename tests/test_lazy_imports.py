"""Listing detectors and loading a non-neural model import no torch.

Each check runs in a fresh interpreter, since this test process has imported torch long
before. Scoring computes log-mel spectrograms, which soundwatch does with torch
(:mod:`soundwatch.features.logmel`), so it is not checked here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from soundwatch.data.audio import write_audio
from soundwatch.data.datasets import discover
from soundwatch.detectors import create

REPO = Path(__file__).resolve().parents[1]


def run_without_torch(code: str) -> str:
    """Run ``code`` in a fresh interpreter; fail if it imported torch. Returns stdout."""
    program = (
        textwrap.dedent(code) + "\nimport sys\nprint('torch imported:', 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "torch imported: False" in result.stdout, result.stdout
    return result.stdout


def test_listing_detectors_imports_no_torch() -> None:
    out = run_without_torch(
        """
        from soundwatch.cli.main import main
        main(["detectors"])
        """
    )
    assert "logmel-mahalanobis" in out and "conv-ae" in out


@pytest.fixture(scope="module")
def mahalanobis_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A logmel-mahalanobis model fitted on 1 s noise clips of two machine IDs."""
    root = tmp_path_factory.mktemp("lazy")
    rng = np.random.default_rng(0)
    for machine_id in ("00", "01"):
        for i in range(6):
            wave = 0.1 * rng.standard_normal(16000) * (1.0 + int(machine_id))
            write_audio(root / "fan" / "train" / f"normal_id_{machine_id}_{i:08d}.wav", wave, 16000)
    detector = create("logmel-mahalanobis", validation_fraction=0.0).fit(discover(root))
    return detector.save(root / "model.safetensors")


def test_loading_a_logmel_mahalanobis_model_imports_no_torch(mahalanobis_model: Path) -> None:
    out = run_without_torch(
        f"""
        from soundwatch.detectors import Detector
        detector = Detector.load({str(mahalanobis_model)!r})
        print(detector.name, sorted(detector.thresholds_))
        """
    )
    assert "logmel-mahalanobis" in out
