"""Scale out on a real local Ray: archive scoring (corrupt files, resume, fractional
CPUs on 2 cores) and fleet training. One Ray instance serves the whole module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from soundwatch.cli.main import main  # noqa: E402
from soundwatch.detectors import create  # noqa: E402
from soundwatch.evaluation.protocol import training_clips  # noqa: E402
from soundwatch.runtime import ScoringRuntime  # noqa: E402
from soundwatch.services import distributed  # noqa: E402
from soundwatch.services.distributed import (  # noqa: E402
    actor_cpus,
    iter_archive,
    part_name,
    score_archive,
    train_fleet,
)
from soundwatch.synth.dataset import generate_dataset  # noqa: E402

# Each test drives a real local Ray cluster: end-to-end, so left out of the edit loop.
pytestmark = pytest.mark.slow

CORRUPT = ("empty.wav", "text.wav", "truncated.wav")


@pytest.fixture(scope="module")
def local_ray():
    # Two CPUs, as on the CI machine: actors must not take whole CPUs here.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scale-data")
    generate_dataset(
        root,
        "slider",
        n_ids=3,
        n_train_per_id=8,
        n_test_normal_per_id=3,
        n_test_anomaly_per_id=3,
        duration=2.0,
        progress=False,
        seed=3,
    )
    return root


@pytest.fixture(scope="module")
def model(data, tmp_path_factory) -> Path:
    detector = create("logmel-mahalanobis")
    detector.fit(training_clips(data, "slider"))
    return detector.save(tmp_path_factory.mktemp("scale-model") / "slider.safetensors")


@pytest.fixture(scope="module")
def archive(data, tmp_path_factory) -> Path:
    """A nested tree of the 18 test clips plus 3 corrupt files."""
    root = tmp_path_factory.mktemp("archive")
    for n, clip in enumerate(sorted((data / "slider" / "test").glob("*.wav"))):
        target = root / f"day{n % 2}" / "slider" / "test" / clip.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, target)
    bad = root / "day1" / "slider" / "test"
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("not audio")
    good = next(bad.glob("normal_*.wav")).read_bytes()
    (bad / "truncated.wav").write_bytes(good[:30])
    return root


def _read(out: Path) -> list[dict]:
    rows = []
    for part in sorted(out.glob("part-*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


def test_iter_archive_streams_folders_lists_and_globs(archive, tmp_path):
    tree = list(iter_archive([archive]))
    assert len(tree) == 21
    listing = tmp_path / "clips.txt"
    listing.write_text("# archive\n" + "\n".join(tree[:5]) + "\n\n")
    assert list(iter_archive([listing])) == tree[:5]
    assert list(iter_archive([f"{archive}/**/anomaly_*.wav"])) == [
        p for p in tree if Path(p).name.startswith("anomaly_")
    ]


def test_actor_cpus_leave_room_for_ray_data_tasks():
    assert actor_cpus(2, 2) == 0.5
    assert actor_cpus(2, 1) == 1.0
    assert actor_cpus(64, 64) < 1.0


def test_archive_with_corrupt_files_matches_single_process(
    local_ray, model, archive, tmp_path, monkeypatch
):
    # Several listing files, as in a large archive.
    monkeypatch.setattr(distributed, "LISTING_PARTITIONS", 2)
    out = tmp_path / "scores"
    summary = score_archive(model, [str(archive)], out, partition_size=6, workers=2, progress=False)
    # 2 workers on 2 CPUs: half a CPU each, so Ray Data's read tasks still run.
    assert summary.workers == 2 and summary.actor_cpus == 0.5
    rows = _read(out)
    assert len(rows) == 21 and summary.clips == 21 and summary.errors == 3
    assert sorted(Path(r["path"]).name for r in rows if r["error"]) == sorted(CORRUPT)
    assert all(r["score"] is None for r in rows if r["error"])
    good = [r for r in rows if not r["error"]]
    # The same answer as the single-process runtime gives.
    reference = ScoringRuntime().load({"model": model}).score([r["path"] for r in good])
    np.testing.assert_allclose([r["score"] for r in good], [x.score for x in reference], rtol=1e-6)
    assert [r["decision"] for r in good] == [x.decision for x in reference]
    assert {r["model_digest"] for r in rows} == {reference[0].model_digest}
    assert {r["machine_id"] for r in good} == {"00", "02", "04"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["errors_this_run"] == 3


def test_rerun_skips_complete_partitions_and_redoes_interrupted(
    local_ray, model, archive, tmp_path
):
    out = tmp_path / "scores"
    score_archive(model, [str(archive)], out, partition_size=6, progress=False)
    first = _read(out)
    assert len(list(out.glob("part-*.parquet"))) == 4
    # Interrupt partition 1: its file is gone and a half-written temporary one is left.
    (out / part_name(1)).unlink()
    (out / f".{part_name(1)}.abc.tmp").write_bytes(b"half")
    messages = []
    summary = score_archive(
        model, [str(archive)], out, partition_size=6, progress=False, say=messages.append
    )
    assert summary.partitions_done_before == 3 and summary.clips == 6
    assert any("interrupted" in m for m in messages)
    assert not list(out.glob(".*.tmp"))
    assert _read(out) == first
    # A third run has nothing left to do.
    again = score_archive(model, [str(archive)], out, partition_size=6, progress=False)
    assert again.partitions_done_before == 4 and again.clips == 0


def test_rerun_after_the_archive_shrank_rescores_and_drops_old_partitions(
    local_ray, model, archive, tmp_path
):
    copy = tmp_path / "archive"
    shutil.copytree(archive, copy)
    out = tmp_path / "scores"
    score_archive(model, [str(copy)], out, partition_size=6, progress=False)
    for path in sorted((copy / "day1").rglob("*.wav"))[:8]:
        path.unlink()
    messages = []
    summary = score_archive(
        model, [str(copy)], out, partition_size=6, progress=False, say=messages.append
    )
    assert summary.partitions == 3 and summary.partitions_removed == 1
    assert any("archive changed" in m for m in messages)
    rows = _read(out)
    assert len(rows) == 13 and all(Path(r["path"]).exists() for r in rows)


def test_rerun_with_other_settings_is_refused(local_ray, model, archive, tmp_path):
    out = tmp_path / "scores"
    score_archive(model, [str(archive)], out, partition_size=10, progress=False)
    assert main(["score", str(model), str(archive), "--engine", "ray", "-o", str(out)]) == 1


def test_cli_score_engine_ray_writes_parquet_and_csv(local_ray, model, archive, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        ["score", str(model), str(archive), "--engine", "ray", "-o", str(out), "--csv"]
        + ["--partition-size", "8"]
    )
    assert code == 2  # some files skipped
    text = capsys.readouterr().out
    assert "scored 18 clips" in text and "skipped 3 files" in text
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("path,machine_id,score") and len(lines) == 22


def test_score_options_of_the_engine_need_it(model, archive):
    assert main(["score", str(model), str(archive), "--address", "ray://x:1"]) == 1


def test_fleet_of_three_machines(local_ray, data, tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'root = "{data}"\ndetector = "logmel-mahalanobis"\n'
        '[[machine]]\ntype = "slider"\nids = ["00", "02", "04"]\n'
    )
    out = tmp_path / "fleet"
    assert main(["train-fleet", str(config), "--engine", "ray", "-o", str(out)]) == 0
    index = json.loads((out / "fleet.json").read_text())
    assert sorted(index["models"]) == ["slider-00", "slider-02", "slider-04"]
    board = (out / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 4
    rows = train_fleet(config, tmp_path / "again", cpus_per_fit=0.5)
    assert all(r["error"] is None and r["n_train"] == 8 and r["n_test"] == 6 for r in rows)
    assert all(0.0 <= r["auc"] <= 1.0 for r in rows)
    # The fleet index is a model map for the runtime; it checks the digests.
    runtime = ScoringRuntime().load(out / "fleet.json")
    assert sorted(runtime.machines) == ["slider-00", "slider-02", "slider-04"]
    clip = next((data / "slider" / "test").glob("*id_02*.wav"))
    assert runtime.score([clip], "slider-02")[0].score is not None
    shutil.copy(out / "slider-00.safetensors", out / "slider-04.safetensors")
    with pytest.raises(Exception, match="changed since the fleet index"):
        ScoringRuntime().load(out / "fleet.json")


def test_fleet_member_with_bad_data_is_reported_not_retried(local_ray, data, tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text(f'root = "{data}"\n[[machine]]\ntype = "pump"\n')
    out = tmp_path / "fleet"
    assert main(["train-fleet", str(config), "--engine", "ray", "-o", str(out)]) == 2
    assert "no clips of machine type 'pump'" in capsys.readouterr().out
    assert json.loads((out / "fleet.json").read_text())["models"] == {}
