"""The clip record that flows through the whole pipeline."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

NORMAL = "normal"
ANOMALY = "anomaly"


@dataclass(frozen=True)
class Clip:
    """One audio recording and what its path tells about it.

    Attributes
    ----------
    path : Path
        The audio file.
    machine_type : str or None
        For example ``"slider"``; None when the layout does not say.
    machine_id : str or None
        Machine ID (DCASE 2020, MIMII) or section (DCASE 2021+), as a two-digit
        string such as ``"00"``; None when unknown.
    split : str or None
        ``"train"``, ``"test"`` or None when the layout has no split.
    label : str or None
        ``"normal"``, ``"anomaly"`` or None when unknown (evaluation data).
    domain : str or None
        ``"source"`` or ``"target"`` for DCASE 2021+ names, else None.
    attributes : tuple of (str, str)
        ``(name, value)`` pairs of a DCASE 2021+ clip, from its file name or its
        ``attributes_XX.csv`` (see :mod:`soundwatch.data.attributes`); empty if none.
    """

    path: Path
    machine_type: str | None = None
    machine_id: str | None = None
    split: str | None = None
    label: str | None = None
    domain: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def is_anomaly(self) -> bool | None:
        """True for an anomalous clip, False for a normal one, None if unknown."""
        if self.label is None:
            return None
        return self.label == ANOMALY


def summarize(clips: list[Clip]) -> dict:
    """Count clips per machine ID, split and label, for model metadata and reports."""
    counts = Counter(
        (c.machine_type or "-", c.machine_id or "-", c.split or "-", c.label or "unknown")
        for c in clips
    )
    return {
        "n_clips": len(clips),
        "groups": [
            {"machine_type": t, "machine_id": i, "split": s, "label": lab, "n": n}
            for (t, i, s, lab), n in sorted(counts.items())
        ],
    }
