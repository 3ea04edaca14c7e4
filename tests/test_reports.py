"""``soundwatch report`` and ``soundwatch inspect`` end to end on real DCASE clips, and the
anomaly maps behind them."""

import base64
import io
import json
import os
import shutil
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from soundwatch.cli.main import main
from soundwatch.detectors import create
from soundwatch.detectors.windows import overlap_average
from soundwatch.reports.build import (
    DATA,
    EXAMPLES,
    LEADERBOARD,
    ORACLE_LABEL,
    RUN_SECTIONS,
    TRAINING,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URI = "data:image/png;base64,"


class Page(HTMLParser):
    """Headings by level, image sources, links, audio sources and all text of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headings: dict[str, list[str]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.audio: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self._heading: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = tag
            self.headings.setdefault(tag, []).append("")
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])
        elif tag == "audio":
            self.audio.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == self._heading:
            self._heading = None

    def handle_data(self, data):
        self.text.append(data)
        if self._heading:
            self.headings[self._heading][-1] += data

    @property
    def all_text(self) -> str:
        return " ".join(self.text)


def read_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def assert_pngs(page: Page, at_least: int) -> None:
    assert len(page.images) >= at_least
    for src in page.images:
        assert src.startswith(DATA_URI), src[:40]
        png = base64.b64decode(src[len(DATA_URI) :], validate=True)
        assert png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(png)) as image:
            image.verify()


def assert_self_contained(page: Page, html_path: Path) -> None:
    assert "script" not in page.tags and "link" not in page.tags
    for url in page.links + page.audio:
        assert not url.startswith(("http:", "https:", "//", "/", "file:")), url
        if not url.startswith("#"):  # relative links to the audio resolve to real files
            target = html_path.parent / urllib.parse.unquote(url)
            assert target.is_file(), url


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- fixtures
class Runs(dict):
    """Result folders, each made on first use (the neural ones take a while):
    ``"maha"`` and ``"ae"`` are evaluate folders of logmel-mahalanobis and of a one-epoch
    dcase2020-ae; ``"bench"`` holds both, the autoencoder's results reused as a resumed
    bench does."""

    def __init__(self, root: Path, data: Path) -> None:
        super().__init__()
        self.root, self.data = root, data

    def __missing__(self, key: str) -> Path:
        out = self.root / key
        common = [str(self.data), "-m", "slider", "--out", str(out)]
        if key == "maha":
            argv = ["evaluate", *common, "-d", "logmel-mahalanobis", "--threshold", "percentile:95"]
        elif key == "ae":
            argv = ["evaluate", *common, "-d", "dcase2020-ae"]
            argv += ["--param", "epochs=1", "--param", "threads=1"]
        else:
            shutil.copytree(self["ae"], out / "dcase2020-ae")
            argv = ["bench", *common, "--detectors", "logmel-mahalanobis,dcase2020-ae"]
            # The same settings as "ae", so that bench reuses its results.
            argv += ["--param", "dcase2020-ae.epochs=1", "--param", "dcase2020-ae.threads=1"]
        assert main(argv) == 0
        self[key] = out
        return out


@pytest.fixture(scope="module")
def results(tmp_path_factory, slider_mini) -> Runs:
    return Runs(tmp_path_factory.mktemp("results"), slider_mini)


# ----------------------------------------------------------------------------- report
@pytest.mark.slow
def test_report_of_a_neural_detector(capsys, results):
    code, out, err = run_cli(capsys, "report", results["ae"])
    assert code == 0, err
    html_path = results["ae"] / "report" / "report.html"
    assert f"wrote {html_path}" in out
    page = read_page(html_path)
    assert page.headings["h1"] == ["soundwatch report: dcase2020-ae on slider"]
    assert page.headings["h2"] == [*RUN_SECTIONS, DATA]
    # ROC, histograms, training curves and 3 + 3 clips (6 test clips in all).
    assert_pngs(page, 9)
    assert len(page.audio) == 6
    assert all(not os.path.isabs(url) and url.endswith(".wav") for url in page.audio)
    assert_self_contained(page, html_path)
    text = page.all_text
    for fragment in (
        "gamma:0.9 (used)",
        "percentile:95",
        "meanstd:3",
        ORACLE_LABEL,
        "best F1",
        "Youden",
        "precision",
        "recall",
        "accuracy",
        "(best validation loss) were kept",
        "16000 Hz (81 clips)",
        "67 clips trained on, 8 held out",
    ):
        assert fragment in text, fragment
    assert "anomaly map" in text and "not a neural detector" not in text
    figures = sorted(p.name for p in (html_path.parent / "report_figures").iterdir())
    assert {
        "roc.png",
        "histograms.png",
        "training.png",
        "clip_top1.png",
        "clip_bottom3.png",
    } <= set(figures)
    assert len(figures) == len(page.images)


def test_report_shows_results_per_anomaly_kind(capsys, results, tmp_path):
    # Real data has no synth manifest, hence no kinds; a synthetic run's result has them.
    run = tmp_path / "maha"
    shutil.copytree(results["maha"], run, ignore=shutil.ignore_patterns("report*"))
    result = json.loads((run / "result.json").read_text())
    assert result["per_kind"] == {}
    result["per_kind"] = {"rail_damage": {"auc": 0.8125, "pauc": 0.61, "n_anomaly": 3}}
    (run / "result.json").write_text(json.dumps(result))
    code, _, err = run_cli(capsys, "report", run, "--examples", "1")
    assert code == 0, err
    text = read_page(run / "report" / "report.html").all_text
    assert "anomaly kind" in text and "rail_damage" in text and "0.8125" in text


def test_report_of_a_non_neural_detector_and_overwrite_rules(capsys, results, tmp_path):
    out_file = tmp_path / "pages" / "maha.html"
    code, _, err = run_cli(capsys, "report", results["maha"], "--out", out_file, "--examples", "1")
    assert code == 0, err
    page = read_page(out_file)
    assert page.headings["h2"] == [*RUN_SECTIONS, DATA]
    assert "logmel-mahalanobis is not a neural detector" in page.all_text
    assert "no anomaly map for this detector" in page.all_text
    assert "percentile:95 (used)" in page.all_text
    assert len(page.audio) == 2  # one most and one least anomalous clip
    assert_pngs(page, 4)
    assert_self_contained(page, out_file)
    assert (tmp_path / "pages" / "maha_figures" / "roc.png").is_file()

    # Never overwrite silently; --overwrite replaces the page and its PNGs only.
    before = out_file.read_bytes()
    code, _, err = run_cli(capsys, "report", results["maha"], "--out", out_file)
    assert code == 1 and err.startswith("error: ") and "already exists" in err
    assert len(err.strip().splitlines()) == 1
    assert out_file.read_bytes() == before
    keep = tmp_path / "pages" / "maha_figures" / "notes.txt"
    keep.write_text("mine")
    code, _, err = run_cli(
        capsys, "report", results["maha"], "--out", out_file, "--overwrite", "--examples", "1"
    )
    assert code == 0, err
    assert keep.read_text() == "mine"

    for argv, fragment in [
        (["report", tmp_path / "nowhere"], "not found"),
        (["report", tmp_path / "pages"], "neither an evaluate folder"),
        (["report", results["maha"], "--out", tmp_path / "x.txt"], "must end in .html"),
    ]:
        code, _, err = run_cli(capsys, *argv)
        assert code == 1 and fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_report_of_a_bench(capsys, results):
    code, _, err = run_cli(capsys, "report", results["bench"], "--examples", "1")
    assert code == 0, err
    html_path = results["bench"] / "report" / "report.html"
    page = read_page(html_path)
    assert page.headings["h1"] == ["soundwatch bench report: slider"]
    assert page.headings["h2"][:2] == [LEADERBOARD, DATA]
    assert sorted(page.headings["h2"][2:]) == [
        "Detector: dcase2020-ae",
        "Detector: logmel-mahalanobis",
    ]
    assert page.headings["h3"] == list(RUN_SECTIONS) * 2
    # leaderboard + (ROC, histograms, 1 + 1 clips) x 2 + training curves of the autoencoder
    assert_pngs(page, 1 + 4 * 2 + 1)
    assert_self_contained(page, html_path)
    assert "#det-logmel-mahalanobis" in page.links and "#det-dcase2020-ae" in page.links
    assert page.all_text.count(ORACLE_LABEL) == 4
    assert (html_path.parent / "report_figures" / "leaderboard.png").is_file()
    assert (html_path.parent / "report_figures" / "dcase2020-ae_training.png").is_file()


def test_report_without_the_audio_still_works(capsys, results, tmp_path):
    # A results folder copied to another machine: no data, so no clip figures.
    moved = tmp_path / "moved"
    shutil.copytree(results["maha"], moved, ignore=shutil.ignore_patterns("report"))
    result = (moved / "result.json").read_text()
    (moved / "result.json").write_text(result.replace('"data_root": "', '"data_root": "/gone'))
    code, _, err = run_cli(capsys, "report", moved)
    assert code == 0, err
    page = read_page(moved / "report" / "report.html")
    assert "audio file not found" in page.all_text
    assert "data folder unavailable" in page.all_text
    assert page.headings["h2"][-2:] == [EXAMPLES, DATA]
    assert_pngs(page, 2)
    assert TRAINING in page.headings["h2"]


# ----------------------------------------------------------------------------- inspect
@pytest.mark.slow
def test_inspect_prints_score_threshold_decision_and_writes_png(
    capsys, results, slider_mini, tmp_path
):
    wav = slider_mini / "slider" / "test" / "anomaly_id_00_00000000.wav"
    png = tmp_path / "clip.png"
    code, out, err = run_cli(
        capsys, "inspect", wav, "--model", results["ae"] / "model.safetensors", "--out", png
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("score ") and float(lines[0].split()[1]) > 0
    assert lines[1].startswith("threshold ") and "(gamma:0.9, machine ID 00)" in lines[1]
    assert lines[2] in ("decision anomalous (1)", "decision normal (0)")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(png) as image:
        assert image.size[0] >= 800 and image.size[1] >= 700  # three panels stacked

    code, _, err = run_cli(
        capsys, "inspect", wav, "--model", results["ae"] / "model.safetensors", "--out", png
    )
    assert code == 1 and "already exists" in err
    code, out, err = run_cli(
        capsys,
        "inspect",
        wav,
        "--model",
        results["maha"] / "model.safetensors",
        "--out",
        png,
        "--overwrite",
        "--threshold",
        "meanstd:3",
    )
    assert code == 0, err
    assert "(meanstd:3, machine ID 00)" in out and "no anomaly map" in out
    code, _, err = run_cli(
        capsys, "inspect", tmp_path / "none.wav", "--model", results["ae"] / "model.safetensors"
    )
    assert code == 1 and "not an audio file" in err


# ----------------------------------------------------------------------------- maps
def test_overlap_average_spreads_and_averages():
    # Two windows of 2 frames over 4 frames: frame 1 is covered twice, frame 3 never.
    errors = np.array([[[1.0, 10.0], [3.0, 30.0]], [[5.0, 50.0], [np.nan, 70.0]]])
    result = overlap_average(errors, np.array([0, 1]), 4)
    assert result.shape == (2, 4)
    np.testing.assert_allclose(result[0], [1.0, 4.0, np.nan, np.nan])
    np.testing.assert_allclose(result[1], [10.0, 40.0, 70.0, np.nan])


@pytest.fixture(scope="module")
def few_clips(tiny_slider):
    train, test = tiny_slider
    return train, test[0]


@pytest.mark.parametrize(
    "name,params,has_map",
    [
        ("dcase2020-ae", {"epochs": 1}, True),
        ("lstm-predictor", {"epochs": 1, "hidden": 8, "layers": 1, "history": 4}, True),
        ("mlp-ae", {"epochs": 1, "hidden": "32", "latent": 4, "frames": 4}, True),
        ("conv-ae", {"epochs": 1, "train_patches": 1}, True),
        ("mlp-encoder-distance", {"epochs": 1, "hidden": "32", "latent": 4, "frames": 4}, False),
        ("logmel-mahalanobis", {}, False),
    ],
)
def test_anomaly_maps_decompose_the_score(few_clips, name, params, has_map):
    train, clip = few_clips
    detector = create(name, **params, **({"threads": 1} if "epochs" in params else {}))
    detector.fit(train)
    amap = detector.anomaly_map(clip)
    if not has_map:
        assert amap is None
        return
    logmel = detector.logmels([clip])[0]
    assert amap.shape == logmel.shape
    finite = amap[np.isfinite(amap)]
    assert finite.size and (finite >= 0).all()
    # The map's cells average to about the clip score (edge frames weigh a bit less).
    score = float(detector.score([clip])[0])
    assert np.nanmean(amap) == pytest.approx(score, rel=0.1)
    if name == "lstm-predictor":  # the first `history` frames are never predicted
        assert np.isnan(amap[:, :4]).all() and np.isfinite(amap[:, 4:]).all()


def test_per_id_models_route_maps_to_their_id(few_clips):
    from soundwatch.data.clips import Clip

    train, clip = few_clips
    relabelled = [
        Clip(c.path, c.machine_type, "02" if i % 2 else "00", c.split, c.label)
        for i, c in enumerate(train)
    ]
    detector = create("dcase2020-ae", epochs=1, per_id=True, threads=1).fit(relabelled)
    own = detector._members["00"]._anomaly_map(clip)
    np.testing.assert_array_equal(detector.anomaly_map(clip), own)
    unseen = Clip(clip.path, clip.machine_type, "09", clip.split, clip.label)
    assert detector.anomaly_map(unseen).shape == own.shape
