"""The command line end to end, including every bad-input path."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from soundwatch.cli.main import build_parser, main
from soundwatch.data.audio import write_audio


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, fragment):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert fragment in lines[0]


def test_every_command_and_option_is_documented():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"synth", "train", "score", "evaluate", "demo", "detectors"} <= set(commands)
    listed = {a.dest: a.help for a in parser._subparsers._group_actions[0]._choices_actions}
    for name, sub in commands.items():
        assert listed.get(name), f"{name} has no one-line help in `soundwatch --help`"
        undocumented = [a.dest for a in sub._actions if not a.help]
        assert not undocumented, f"soundwatch {name}: options without help: {undocumented}"


def test_console_script_help_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "soundwatch", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "evaluate" in out and "demo" in out
    out = subprocess.run(
        [sys.executable, "-m", "soundwatch", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("soundwatch ")


def test_detectors_listing(capsys):
    code, out, _ = run(capsys, "detectors")
    assert code == 0
    assert "dcase2020-ae" in out and "logmel-mahalanobis" in out
    code, out, _ = run(capsys, "detectors", "--verbose")
    assert "640-128-128-128-128-8-128-128-128-128-640" in out and "epochs = 100" in out


def test_evaluate_on_real_slider_mini(capsys, slider_mini, tmp_path):
    out_dir = tmp_path / "eval"
    code, out, err = run(
        capsys,
        "evaluate",
        slider_mini,
        "--machine",
        "slider",
        "--detector",
        "logmel-mahalanobis",
        "--out",
        out_dir,
    )
    assert code == 0, err
    assert "Average" in out
    result = json.loads((out_dir / "result.json").read_text())
    assert result["machine_type"] == "slider" and result["detector"] == "logmel-mahalanobis"
    assert result["per_id"][0]["id"] == "00"
    assert result["per_id"][0]["n_normal"] == 3 and result["per_id"][0]["n_anomaly"] == 3
    for key in ("mean_auc", "mean_pauc", "fit_seconds", "score_seconds"):
        assert isinstance(result[key], float)
    rows = list(csv.reader((out_dir / "anomaly_score_slider_id_00.csv").open()))
    assert len(rows) == 6 and all(len(r) == 2 for r in rows)
    decisions = list(csv.reader((out_dir / "decision_result_slider_id_00.csv").open()))
    assert len(decisions) == 6 and {r[1] for r in decisions} <= {"0", "1"}
    assert (out_dir / "result.csv").read_text().startswith("slider\nid,AUC,pAUC\n00,")
    assert (out_dir / "model.safetensors").is_file()

    # Results are never silently overwritten.
    before = (out_dir / "result.json").read_bytes()
    code, _, err = run(capsys, "evaluate", slider_mini, "--machine", "slider", "--out", out_dir)
    assert_one_line_error(code, err, "already holds results")
    assert (out_dir / "result.json").read_bytes() == before


@pytest.fixture(scope="module")
def model(slider_mini, tmp_path_factory):
    """A logmel-mahalanobis model trained by ``soundwatch train`` on the slider mini set."""
    path = tmp_path_factory.mktemp("cli-model") / "model.safetensors"
    code = main(["train", str(slider_mini), "--machine", "slider", "-o", str(path)])
    assert code == 0 and path.is_file()
    return path


def test_train_then_score(capsys, slider_mini, model, tmp_path):
    scores = tmp_path / "scores.csv"
    test_dir = slider_mini / "slider" / "test"
    code, out, err = run(capsys, "score", model, test_dir, "-o", scores)
    assert code == 0, err
    rows = list(csv.DictReader(scores.open()))
    assert len(rows) == 6
    assert {r["decision"] for r in rows} <= {"0", "1"}
    by_name = {r["path"].rsplit("/", 1)[-1]: float(r["score"]) for r in rows}
    normal = [v for k, v in by_name.items() if k.startswith("normal")]
    anomaly = [v for k, v in by_name.items() if k.startswith("anomaly")]
    assert min(anomaly) > max(normal)

    code, out, _ = run(capsys, "score", model, test_dir / "normal_id_00_00000013.wav")
    assert code == 0 and out.startswith(
        "path,machine_id,score,threshold,threshold_source,decision\n"
    )

    code, _, err = run(capsys, "score", model, test_dir, "-o", scores)
    assert_one_line_error(code, err, "already exists")
    before = model.read_bytes()
    code, _, err = run(capsys, "train", slider_mini, "--machine", "slider", "-o", model)
    assert_one_line_error(code, err, "already exists")
    assert model.read_bytes() == before


def _write_bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    write_audio(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    write_audio(folder / "silent.wav", np.zeros(16000, np.float32), 16000)
    write_audio(folder / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("corrupt.wav", "corrupt.wav"),
        ("empty.wav", "empty.wav"),
        ("silent.wav", "silent.wav"),
        ("nan.wav", "nan.wav"),
    ],
)
def test_score_bad_audio_gives_one_line_error(capsys, model, tmp_path, name, fragment):
    _write_bad_files(tmp_path / "bad")
    code, _, err = run(capsys, "score", model, tmp_path / "bad" / name)
    assert_one_line_error(code, err, fragment)


def test_bad_inputs_give_one_line_errors(capsys, slider_mini, tmp_path):
    cases = [
        (["evaluate", tmp_path / "missing", "--machine", "slider"], "missing"),
        (["evaluate", slider_mini, "--machine", "pump"], "pump"),
        (["evaluate", slider_mini, "--machine", "slider", "--detector", "nope"], "nope"),
        (["evaluate", slider_mini, "--machine", "slider", "--param", "epochs"], "KEY=VALUE"),
        (
            [
                "train",
                slider_mini,
                "--machine",
                "slider",
                "--param",
                "bogus=1",
                "-o",
                tmp_path / "m.safetensors",
            ],
            "bogus",
        ),
        (["score", tmp_path / "missing.safetensors", slider_mini], "not found"),
        (
            ["score", slider_mini / "slider" / "test" / "normal_id_00_00000013.wav", slider_mini],
            "not a soundwatch model",
        ),
    ]
    for argv, fragment in cases:
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, fragment)


def test_empty_training_folder_and_wrong_sample_rate(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "train", tmp_path / "empty", "-o", tmp_path / "m.safetensors")
    assert_one_line_error(code, err, "empty")
    # A plain folder of normal clips trains; a rate below the model's is upsampled.
    rng = np.random.default_rng(0)
    for i in range(6):
        write_audio(tmp_path / "plain" / f"clip{i}.wav", rng.uniform(-0.3, 0.3, 8000), 8000)
    code, _, err = run(
        capsys,
        "train",
        tmp_path / "plain",
        "-o",
        tmp_path / "m.safetensors",
        "--param",
        "sample_rate=0",
    )
    assert_one_line_error(code, err, "sample_rate")
    code, _, err = run(capsys, "train", tmp_path / "plain", "-o", tmp_path / "m.safetensors")
    assert code == 0, err


def test_model_file_of_other_version_is_refused_by_cli(capsys, slider_mini, model, tmp_path):
    from safetensors.numpy import save_file

    from soundwatch.detectors.modelfile import read_model_file

    tensors, meta = read_model_file(model)
    meta["format_version"] = 0
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"soundwatch": json.dumps(meta)})
    code, _, err = run(capsys, "score", old, slider_mini / "slider" / "test")
    assert_one_line_error(code, err, "retrain")


@pytest.mark.slow
def test_demo_runs_end_to_end(capsys, tmp_path):
    code, out, err = run(capsys, "demo", "--out", tmp_path / "demo", "--n-train", "12")
    assert code == 0, err
    assert "Average" in out
    result = json.loads((tmp_path / "demo" / "results" / "result.json").read_text())
    assert len(result["per_id"]) == 3
    aucs = [r["auc"] for r in result["per_id"]]
    assert result["mean_auc"] == pytest.approx(np.mean(aucs))
    assert min(aucs) > 0.6  # the default detector finds the synthetic anomalies of every ID


def test_demo_refuses_non_empty_folder(capsys, tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("keep me")
    code, _, err = run(capsys, "demo", "--out", tmp_path / "demo")
    assert_one_line_error(code, err, "not empty")
    assert (tmp_path / "demo" / "mine.txt").read_text() == "keep me"


def test_synth_refuses_to_overwrite(capsys, tmp_path):
    args = [
        "synth",
        tmp_path / "d",
        "--ids",
        "1",
        "--n-train",
        "1",
        "--n-test-normal",
        "1",
        "--n-test-anomaly",
        "1",
    ]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, "not empty")
    shutil.rmtree(tmp_path / "d")
    code, _, err = run(capsys, *args, "--id-spread", "2")
    assert_one_line_error(code, err, "--id-spread must be at most 1")
    code, _, err = run(capsys, *args, "--id-spread", "0.3")
    assert code == 0, err
    manifest = json.loads((tmp_path / "d" / "slider" / "synth_manifest.json").read_text())
    assert manifest["settings"]["id_spread"] == 0.3
