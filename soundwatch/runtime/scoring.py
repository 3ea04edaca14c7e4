"""The scoring runtime: machine name -> loaded model; check a clip against the model;
score; decide.

Every way of scoring (``soundwatch score``, the Python API, later the monitor, the HTTP
server and Ray workers) goes through :class:`ScoringRuntime`, so that one clip and one
model give one score, one threshold and one decision everywhere, and a fix to input
checking or thresholding lands everywhere at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soundwatch.data.audio import audio_info
from soundwatch.data.clips import Clip
from soundwatch.data.inputs import as_clips, audio_mismatches
from soundwatch.detectors.base import Detector
from soundwatch.errors import AudioError, ConfigError, SoundwatchError
from soundwatch.features.cache import file_digest
from soundwatch.store import ClipRef, EventStore

# Default key of a runtime that holds one model.
DEFAULT_MACHINE = "default"
# The "format" of a fleet index (``fleet.json``, written by ``soundwatch train-fleet``).
FLEET_FORMAT = "soundwatch-fleet"


class InputMismatchError(SoundwatchError):
    """A clip differs from the model's training data (raised in strict mode)."""


@dataclass
class Result:
    """What scoring one clip gave.

    Attributes
    ----------
    path : Path
    machine : str
        Key of the model in the runtime.
    machine_id : str or None
        From the file name; picks the per-ID threshold.
    score, threshold : float or None
        None when the clip was skipped (``error`` says why).
    threshold_source : str or None
        ``machine ID 00``, ``pooled`` or ``pooled (no threshold for ID 06)``.
    decision : int or None
        1 (anomalous) when ``score > threshold``, else 0.
    model_digest : str
        First 16 hex digits of the model file's SHA-256 (``in-memory`` for a detector
        given as an object).
    warnings : list of str
        One-line warnings, each naming the file.
    error : str or None
        Why the clip was skipped.
    """

    path: Path
    machine: str
    machine_id: str | None = None
    score: float | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    decision: int | None = None
    model_digest: str = ""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Model:
    detector: Detector
    digest: str
    path: Path | None


class ScoringRuntime:
    """Load models, check clips against them, score and decide.

    Parameters
    ----------
    strict : bool
        Raise :class:`InputMismatchError` for a clip whose machine type, sample rate,
        channel count or duration differs from the training data, instead of warning.
    skip_bad : bool
        Turn a clip that cannot be read or scored into ``Result(error=...)`` instead of
        raising, so one file never sinks a batch.
    threshold : str, optional
        Refit every loaded model's threshold with this method (``gamma:Q``,
        ``percentile:P``, ``meanstd:K``) from its stored calibration scores.
    store : EventStore, optional
        Where :meth:`record` keeps results; loaded models are registered in it.

    Examples
    --------
    >>> runtime = ScoringRuntime()                             # doctest: +SKIP
    >>> runtime.load({"slider": "slider.safetensors"})          # doctest: +SKIP
    >>> results = runtime.score(["new_recordings/"], "slider")  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        strict: bool = False,
        skip_bad: bool = False,
        threshold: str | None = None,
        store: EventStore | None = None,
    ) -> None:
        self.strict = strict
        self.skip_bad = skip_bad
        self.threshold = threshold
        self.store = store
        self._models: dict[str, _Model] = {}

    # ----------------------------------------------------------------- models
    @property
    def machines(self) -> list[str]:
        """Keys of the loaded models."""
        return list(self._models)

    def load(
        self, model_map: Mapping[str, str | os.PathLike | Detector] | str | os.PathLike
    ) -> ScoringRuntime:
        """Load (or reload) models by machine name, or every model of a fleet index
        (``fleet.json``, see :func:`read_fleet_index`).

        Each model is read and checked before any is replaced; when one fails, the
        error is raised and every model loaded before stays in place.
        """
        expected: dict[str, str] = {}
        if isinstance(model_map, (str, os.PathLike)):
            model_map, expected = read_fleet_index(model_map)
        loaded = {}
        for machine, model in model_map.items():
            if isinstance(model, Detector):
                detector, digest, path = model, "in-memory", None
            else:
                path = Path(model)
                detector = Detector.load(path)
                digest = file_digest(path)[:16]
                if machine in expected and expected[machine] != digest:
                    raise ConfigError(
                        f"{path} has changed since the fleet index was written (digest "
                        f"{digest}, index says {expected[machine]}); retrain the fleet"
                    )
            if self.threshold is not None:
                detector.refit_threshold(self.threshold)
            loaded[str(machine)] = _Model(detector, digest, path)
        self._models.update(loaded)
        if self.store is not None:
            for machine, model in loaded.items():
                info = model.detector.fit_info_ or {}
                self.store.register_machine(
                    machine,
                    machine_type=info.get("machine_type"),
                    model_path=model.path,
                    model_digest=model.digest,
                )
        return self

    def model_digest(self, machine: str | None = None) -> str:
        """First 16 hex digits of the SHA-256 of ``machine``'s model file."""
        return self._model(machine).digest

    def detector(self, machine: str | None = None) -> Detector:
        """The loaded detector of ``machine`` (the only one when None)."""
        return self._model(machine).detector

    def _model(self, machine: str | None) -> _Model:
        if not self._models:
            raise ConfigError("no model loaded; call load() first")
        if machine is None:
            if len(self._models) > 1:
                raise ConfigError(
                    f"several models loaded ({', '.join(self._models)}); name the machine"
                )
            return next(iter(self._models.values()))
        if machine not in self._models:
            raise ConfigError(
                f"no model for machine {machine!r}; loaded: {', '.join(self._models)}"
            )
        return self._models[machine]

    # ----------------------------------------------------------------- checks
    def check(self, clip: Clip | str | os.PathLike, machine: str | None = None) -> list[str]:
        """How a clip differs from the model's training data, as one-line warnings.

        Compares the machine type (from the folders) and the file's sample rate,
        channel count and duration with what the model recorded at training.

        Raises
        ------
        InputMismatchError
            Under ``strict``, for the first difference found.
        AudioError
            The file cannot be read.
        """
        clip = clip if isinstance(clip, Clip) else as_clips(clip)[0]
        info = self._model(machine).detector.fit_info_ or {}
        found = []
        trained_type = info.get("machine_type")
        if trained_type and clip.machine_type and clip.machine_type.lower() != trained_type:
            found.append(
                f"{clip.path}: machine type {clip.machine_type}, but the model was trained "
                f"on {trained_type}"
            )
        found += [
            f"{clip.path}: {what}; its score may mean nothing"
            for what in audio_mismatches(audio_info(clip.path), info.get("audio"))
        ]
        if found and self.strict:
            raise InputMismatchError(found[0] + " (strict)")
        return found

    # ----------------------------------------------------------------- scoring
    def score(
        self,
        batch: Sequence[Clip | str | os.PathLike] | str | os.PathLike,
        machine: str | None = None,
    ) -> list[Result]:
        """Score a batch of clips, files or folders with one machine's model.

        Returns
        -------
        list of Result
            One per clip, in order. A clip that cannot be read or scored raises
            (naming the file) unless ``skip_bad``, which makes it ``Result(error=...)``.
        """
        model = self._model(machine)
        key = machine or next(k for k, v in self._models.items() if v is model)
        clips = as_clips(batch)
        results = [Result(path=c.path, machine=key, machine_id=c.machine_id) for c in clips]
        good: list[int] = []
        for i, clip in enumerate(clips):
            try:
                results[i].warnings = self.check(clip, key)
            except AudioError as exc:
                if not self.skip_bad:
                    raise
                results[i].error = str(exc)
                continue
            good.append(i)
        scores = self._score_all(
            model.detector, [clips[i] for i in good], [results[i] for i in good]
        )
        detector = model.detector
        for i, value in zip(good, scores, strict=True):
            result = results[i]
            result.model_digest = model.digest
            if value is None:
                continue
            result.score = float(value)
            domain = clips[i].domain
            result.threshold = float(detector.threshold_for(result.machine_id, domain))
            result.threshold_source = detector.threshold_source(result.machine_id, domain)
            result.decision = int(result.score > result.threshold)
        return results

    def _score_all(
        self, detector: Detector, clips: list[Clip], results: list[Result]
    ) -> list[float | None]:
        """Scores of all clips in one batch; when that fails and ``skip_bad`` is set,
        clip by clip, so that only the bad ones are lost."""
        if not clips:
            return []
        try:
            return list(detector.score(clips))
        except AudioError:
            if not self.skip_bad:
                raise
        scores: list[float | None] = []
        for clip, result in zip(clips, results, strict=True):
            try:
                scores.append(float(np.asarray(detector.score([clip]))[0]))
            except AudioError as exc:
                result.error = str(exc)
                scores.append(None)
        return scores

    def record(
        self, results: Sequence[Result], clips: Sequence[ClipRef | str] | None = None
    ) -> int:
        """Keep results in the event store, once each (does nothing without a store).

        Parameters
        ----------
        results : sequence of Result
        clips : sequence of ClipRef or str, optional
            The clip reference or key of each result; by default each result's file,
            keyed by its content digest (a result without a readable file is keyed by
            the digest alone).

        Returns
        -------
        int
            How many results were new to the store.
        """
        if self.store is None:
            return 0
        if clips is None:
            clips = [_file_ref(r.path) for r in results]
        return self.store.record(results, clips)


def _file_ref(path: Path) -> ClipRef | str:
    """The file's reference; its digest alone when it is not readable audio, its path
    when it cannot be read at all."""
    try:
        return ClipRef.for_file(path)
    except AudioError:
        pass
    try:
        return f"sha256:{file_digest(path)}"
    except OSError:
        return f"path:{Path(path).resolve()}"


def read_fleet_index(path: str | os.PathLike) -> tuple[dict[str, Path], dict[str, str]]:
    """Model map and expected digests of a fleet index (``fleet.json``).

    Returns
    -------
    models : dict
        Model name -> model file (relative paths are relative to the index).
    digests : dict
        Model name -> first 16 hex digits of the file's SHA-256 at training.
    """
    import json

    path = Path(path)
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"fleet index not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read fleet index {path}: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != FLEET_FORMAT:
        raise ConfigError(f"{path} is not a fleet index (written by soundwatch train-fleet)")
    models, digests = {}, {}
    for name, entry in index.get("models", {}).items():
        models[name] = path.parent / entry["path"]
        digests[name] = entry["digest"]
    return models, digests
