"""Recording groups and cross-fitting folds for calibrating decision thresholds.

A threshold fitted on scores of clips that share a recording (or a session) with the
clips the model was fitted on is too low for recordings from another day. Cross-fitting
gives every training normal an out-of-fold score from a model that did not see its
recording group; :func:`recording_groups` tells the groups from the clips' paths and
:func:`group_folds` splits them into folds, per machine ID.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from soundwatch.data.clips import Clip
from soundwatch.errors import ConfigError

#: A recording tag in a file name: a session, optionally with its take (recording), e.g.
#: ``normal_id_00_00000003_session02_take1`` (``soundwatch synth --sessions``).
SESSION_PATTERN = re.compile(
    r"(?:^|[_\-.])(session\d+(?:[_\-]take\d+)?)(?=[_\-.]|$)", re.IGNORECASE
)
GROUP_BY_CHOICES = ("auto", "session", "folder", "clip")


def _session(clip: Clip) -> str | None:
    match = SESSION_PATTERN.search(Path(clip.path).stem)
    return match.group(1).lower() if match else None


def recording_groups(clips: Sequence[Clip], group_by: str = "auto") -> tuple[list[str], str]:
    """The recording group of each clip and how the groups were told.

    Parameters
    ----------
    clips : sequence of Clip, length n_clips
    group_by : str
        ``auto`` (a ``sessionNN[_takeT]`` tag in every file name, else the parent folder when the
        clips lie in several folders, else clip), ``session``, ``folder``, ``clip`` (every
        clip its own group) or a regular expression searched in each file name whose
        first group (or whole match) names the group.

    Returns
    -------
    groups : list of str, length n_clips
    how : str
        ``"session"``, ``"folder"``, ``"clip"`` or ``"regex REGEX"``.

    Raises
    ------
    ConfigError
        An invalid regular expression, or a file name without the requested tag.
    """
    clips = list(clips)
    mode = str(group_by).strip()
    if mode.lower() in GROUP_BY_CHOICES:
        mode = mode.lower()
    if mode == "auto":
        sessions = [_session(c) for c in clips]
        if clips and all(sessions) and len(set(sessions)) > 1:
            return [str(s) for s in sessions], "session"
        folders = {str(Path(c.path).parent) for c in clips}
        return recording_groups(clips, "folder" if len(folders) > 1 else "clip")
    if mode == "clip":
        return [str(c.path) for c in clips], "clip"
    if mode == "folder":
        return [str(Path(c.path).parent) for c in clips], "folder"
    if mode == "session":
        pattern = SESSION_PATTERN
    else:
        try:
            pattern = re.compile(mode)
        except re.error as exc:
            raise ConfigError(
                f"--group-by {mode!r} is not auto, session, folder, clip or a valid regular "
                f"expression ({exc})"
            ) from None
    groups = []
    for clip in clips:
        match = pattern.search(Path(clip.path).name)
        if match is None:
            raise ConfigError(
                f"--group-by {mode}: file name {Path(clip.path).name} has no recording "
                "group; use --group-by folder, clip or another pattern"
            )
        groups.append((match.group(1) if pattern.groups else match.group(0)).lower())
    return groups, "session" if mode == "session" else f"regex {mode}"


def group_folds(
    clips: Sequence[Clip], groups: Sequence[str], n_folds: int, seed: int
) -> tuple[np.ndarray, int]:
    """Fold index of every clip: whole recording groups per fold, within each machine ID.

    Each machine ID's groups are shuffled and dealt to ``min(n_folds, n_groups)``
    folds; an ID whose clips form a single group is split by clip instead.

    Returns
    -------
    folds : ndarray of int, shape (n_clips,)
        Values in ``range(n_used)``.
    n_used : int
        Number of folds used (at most ``n_folds``, at least 2).
    """
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(clips), dtype=int)
    n_used = 2
    for machine_id in sorted({c.machine_id or "" for c in clips}):
        indices = [i for i, c in enumerate(clips) if (c.machine_id or "") == machine_id]
        names = sorted({groups[i] for i in indices})
        if len(names) >= 2:
            k = min(n_folds, len(names))
            order = rng.permutation(len(names))
            fold_of = {names[j]: rank % k for rank, j in enumerate(order)}
            for i in indices:
                folds[i] = fold_of[groups[i]]
        else:
            k = max(min(n_folds, len(indices)), 1)
            for rank, j in enumerate(rng.permutation(len(indices))):
                folds[indices[j]] = rank % k
        n_used = max(n_used, k)
    return folds, n_used
