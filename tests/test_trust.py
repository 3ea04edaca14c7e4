"""Results a user can trust (issue 10): no stale, mixed or pooled results; failures
before the work; warnings for input unlike the training data; the Python API."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from soundwatch.cli.main import main
from soundwatch.data.audio import load_audio, write_audio

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, fragment):
    lines = err.strip().splitlines()
    return (
        code not in (0, None)
        and len(lines) == 1
        and lines[0].startswith("error: ")
        and (fragment in lines[0])
    )


@pytest.fixture(scope="module")
def model(slider_mini, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "slider.safetensors"
    assert main(["train", str(slider_mini), "--machine", "slider", "-o", str(path)]) == 0
    return path


@pytest.fixture
def test_dir(slider_mini):
    return slider_mini / "slider" / "test"


def _link_root(slider_mini, root, types):
    """A data root whose machine-type folders all point at the slider clips."""
    for machine in types:
        for split in ("train", "test"):
            folder = root / machine / split
            folder.mkdir(parents=True)
            for clip in (slider_mini / "slider" / split).glob("*.wav"):
                (folder / clip.name).symlink_to(clip)
    return root


# ------------------------------------------------------------------ 2. no mixed results
def test_train_demands_machine_on_a_root_of_several_types(capsys, slider_mini, tmp_path):
    root = _link_root(slider_mini, tmp_path / "root", ["fan", "slider"])
    code, _, err = run(capsys, "train", root, "-o", tmp_path / "m.safetensors")
    assert one_line_error(code, err, "several machine types (fan, slider)"), err
    assert "--machine" in err and not (tmp_path / "m.safetensors").exists()


def test_model_records_machine_type_and_warns_on_another(capsys, model, test_dir, tmp_path):
    from soundwatch import load

    assert load(model).fit_info_["machine_type"] == "slider"
    fan = tmp_path / "fan" / "test"
    fan.mkdir(parents=True)
    clip = next(test_dir.glob("normal_*.wav"))
    (fan / clip.name).symlink_to(clip)
    code, out, err = run(capsys, "score", model, fan)
    assert code == 0
    warnings = err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), err
    assert clip.name in warnings[0] and "machine type fan" in warnings[0]
    assert "slider" in warnings[0]
    code, out, err = run(capsys, "score", model, fan, "--strict")
    assert one_line_error(code, err, "machine type fan"), err
    assert out == ""


def test_inspect_and_score_name_a_pooled_threshold(capsys, model, test_dir, tmp_path):
    clip = next(test_dir.glob("normal_id_00_*.wav"))
    unseen = tmp_path / "normal_id_06_00000000.wav"
    shutil.copyfile(clip, unseen)
    code, out, err = run(capsys, "inspect", unseen, "--model", model, "--out", tmp_path / "i.png")
    assert code == 0, err
    assert "pooled (no threshold for ID 06)" in out and "machine ID 06" not in out
    code, out, err = run(capsys, "score", model, unseen, clip)
    assert code == 0, err
    rows = list(csv.DictReader(out.splitlines()))
    assert rows[0]["threshold_source"] == "pooled (no threshold for ID 06)"
    assert rows[1]["threshold_source"] in {"machine ID 00", "pooled (no threshold for ID 00)"}


def test_evaluate_overwrite_replaces_the_whole_folder(capsys, slider_mini, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    argv = ["evaluate", slider_mini, "--machine", "slider", "--out", out]
    assert run(capsys, *argv)[0] == 0
    stale = [out / "anomaly_score_slider_id_02.csv", out / "report" / "report.html"]
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_text("from an earlier run")
    code, _, err = run(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert not any(p.exists() for p in stale)
    assert (out / "result.json").is_file() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]  # no temporary folder left

    # A run that fails while writing leaves the earlier one as it was.
    from soundwatch.evaluation import protocol

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(protocol, "_write_run", fail)
    code, _, err = run(capsys, *argv, "--overwrite")
    assert code != 0 and "disk full" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]


# ------------------------------------------------------------------ 3. fail before the work
def test_unwritable_outputs_are_refused_before_training(capsys, slider_mini, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = [
        ["evaluate", slider_mini, "--machine", "slider", "--out", blocker / "results"],
        ["train", slider_mini, "--machine", "slider", "-o", blocker / "m.safetensors"],
        [
            "bench",
            slider_mini,
            "--machine",
            "slider",
            "--detectors",
            "logmel-mahalanobis",
            "-o",
            blocker / "bench",
        ],
    ]
    for argv in cases:
        code, _, err = run(capsys, *argv)
        assert one_line_error(code, err, "cannot write to"), err
        assert "training" not in err and ".tmp" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_out_is_refused(capsys, slider_mini, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run(capsys, "train", slider_mini, "-m", "slider", "-o", folder / "m.st")
        assert one_line_error(code, err, "cannot write to"), err
    finally:
        folder.chmod(0o700)


def test_score_skip_bad(capsys, model, test_dir, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    good = sorted(test_dir.glob("*.wav"))[:2]
    for clip in good:
        (batch / clip.name).symlink_to(clip)
    (batch / "broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    csv_path = tmp_path / "scores.csv"
    code, _, err = run(capsys, "score", model, batch, "-o", csv_path)
    assert one_line_error(code, err, "broken.wav"), err
    assert not csv_path.exists()
    code, _, err = run(capsys, "score", model, batch, "-o", csv_path, "--skip-bad")
    assert code == 2
    rows = list(csv.DictReader(csv_path.open()))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(c.name for c in good)
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and "broken.wav:" in skipped[0] and "1 of 3" in skipped[1]


def test_input_unlike_the_training_data_warns(capsys, model, test_dir, tmp_path):
    clip = next(test_dir.glob("normal_*.wav"))
    y = load_audio(clip, 8000)
    low = write_audio(tmp_path / "low_rate.wav", y, 8000)
    stereo = write_audio(tmp_path / "stereo.wav", np.stack([y, y], axis=1), 8000)
    short = write_audio(tmp_path / "short.wav", load_audio(clip, 16000)[:16000], 16000)
    code, _, err = run(capsys, "score", model, low, stereo, short)
    assert code == 0
    warnings = err.strip().splitlines()
    assert len(warnings) == 4 and all(w.startswith("warning: ") for w in warnings), err
    assert "low_rate.wav: sample rate 8000 Hz (trained on 16000 Hz)" in warnings[0]
    assert "stereo.wav: 2 channel(s)" in err and "short.wav: duration 1.00 s" in err
    assert "stereo.wav: sample rate" in err
    code, _, err = run(capsys, "score", model, low, "--strict")
    assert one_line_error(code, err, "low_rate.wav: sample rate 8000 Hz"), err
    code, _, err = run(capsys, "inspect", low, "--model", model, "-o", tmp_path / "low.png")
    assert code == 0 and err.startswith("warning: ") and "low_rate.wav: sample rate" in err


def test_edited_model_metadata_names_file_and_field(capsys, model, test_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    from soundwatch.detectors.modelfile import read_model_file

    _, meta = read_model_file(model)
    meta["params"]["n_mels"] = 64
    edited = tmp_path / "edited.safetensors"
    save_file(load_file(str(model)), str(edited), metadata={"soundwatch": json.dumps(meta)})
    code, _, err = run(capsys, "score", edited, test_dir)
    assert one_line_error(code, err, "params.n_mels"), err
    assert "edited.safetensors" in err and "broadcast" not in err


# ------------------------------------------------------------------ 4. the Python API
def test_import_soundwatch_is_light_and_exposes_the_verbs():
    code = (
        "import sys, soundwatch; heavy = {'torch', 'numpy', 'scipy', 'matplotlib'}; "
        "print(sorted(heavy & set(sys.modules))); "
        "print(all(callable(getattr(soundwatch, v)) for v in "
        "('create', 'load', 'discover', 'detectors', 'evaluate')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.split("\n")[:2] == ["[]", "True"]


def test_api_scores_clips_paths_folders_and_waveforms(slider_mini, model, test_dir):
    import soundwatch

    assert "logmel-mahalanobis" in soundwatch.detectors()
    clips = soundwatch.discover(slider_mini, "slider", "test")
    detector = soundwatch.load(model)
    by_clip = detector.score(clips)
    assert np.allclose(detector.score(test_dir), by_clip)
    assert np.allclose(detector.score([c.path for c in clips]), by_clip)
    assert np.allclose(detector.score(str(clips[0].path)), by_clip[:1])
    y = load_audio(clips[0].path, 16000)
    assert detector.score_waveform(y, 16000) == pytest.approx(by_clip[0], rel=1e-4)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "mean AUC" in done.stdout and "white noise scores" in done.stdout


# ------------------------------------------------------------------ 5. small things
def test_out_is_the_one_output_option_and_old_spellings_still_work(capsys, slider_mini, tmp_path):
    from soundwatch.cli.main import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("train", "score", "evaluate", "bench", "report", "inspect", "demo"):
        text = commands[name].format_help()
        assert "--out OUT, -o OUT" in text or "-o OUT, --out OUT" in text, name
        assert "--output" not in text, name
    model = tmp_path / "m.safetensors"
    code, _, err = run(capsys, "train", slider_mini, "-m", "slider", "--output", model)
    assert code == 0 and model.is_file(), err


def test_synth_help_and_errors_speak_in_options(capsys, tmp_path):
    from soundwatch.cli.main import build_parser
    from soundwatch.synth import MACHINES

    text = build_parser()._subparsers._group_actions[0].choices["synth"].format_help()
    assert "number of machine IDs" in text
    assert all(machine in text for machine in MACHINES)
    code, _, err = run(capsys, "synth", tmp_path / "d", "--ids", "0")
    assert one_line_error(code, err, "--ids"), err
    assert "n_ids" not in err


def test_busy_cores_hint(monkeypatch):
    from soundwatch.cli import main as cli

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.6, 3.0, 3.0))
    hint = cli._busy_cores_hint(0)
    assert hint and "--threads 1" in hint and len(hint.splitlines()) == 1
    assert cli._busy_cores_hint(1) is None
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert cli._busy_cores_hint(0) is None


def test_packaging_leaves_the_users_torch_and_ignores_outputs():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch>=2.2"' in pyproject and "torch==" not in pyproject
    ignored = (REPO / ".gitignore").read_text().split()
    assert {"soundwatch-demo*/", "soundwatch-results/", "soundwatch-bench/"} <= set(ignored)
    assert "torch==2.13.0" in (REPO / ".ci" / "run").read_text()


# ------------------------------------------------------------------ the scoring runtime
def test_scoring_runtime_results_and_reload(model, test_dir, tmp_path):
    from soundwatch.errors import ModelFileError
    from soundwatch.runtime import InputMismatchError, ScoringRuntime

    runtime = ScoringRuntime().load({"slider": model})
    results = runtime.score(test_dir, "slider")
    assert len(results) == 6
    detector = runtime.detector("slider")
    for result in results:
        assert result.error is None and result.warnings == []
        assert result.threshold == detector.threshold_for(result.machine_id)
        assert result.decision == int(result.score > result.threshold)
        assert len(result.model_digest) == 16 and result.threshold_source
    assert [r.score for r in results] == pytest.approx(list(detector.score(test_dir)))
    assert runtime.record(results) == 0  # no store: nothing is kept

    # A model that fails to load keeps the one loaded before.
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        runtime.load({"slider": broken})
    assert runtime.detector("slider") is detector

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF")
    skipping = ScoringRuntime(skip_bad=True).load({"slider": model})
    results = skipping.score([bad, *sorted(test_dir.glob("*.wav"))[:1]])
    assert results[0].error and "bad.wav" in results[0].error and results[0].score is None
    assert results[1].error is None and results[1].score is not None

    y = load_audio(next(test_dir.glob("*.wav")), 8000)
    low = write_audio(tmp_path / "low.wav", y, 8000)
    with pytest.raises(InputMismatchError, match=r"low\.wav: sample rate 8000 Hz"):
        ScoringRuntime(strict=True).load({"slider": model}).check(low, "slider")
