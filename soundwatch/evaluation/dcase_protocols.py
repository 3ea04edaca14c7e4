"""The DCASE Task 2 protocols (challenge years) and how to tell them from file names.

Kept free of heavy imports so that the command line can list the protocols quickly;
the metrics and files of each year are in :mod:`soundwatch.evaluation.dcase`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from soundwatch.data.clips import Clip
from soundwatch.errors import ConfigError

PROTOCOLS = ("dcase2020", "dcase2021", "dcase2022", "dcase2023", "dcase2024", "dcase2025")
DOMAINS = ("source", "target")
_DCASE2020_NAME = re.compile(r"^(?:(?:normal|anomaly)_)?id_\d+_\d+$", re.IGNORECASE)


def check_protocol(name: str) -> str:
    """Return ``name`` if it is a known protocol, else raise :class:`ConfigError`."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return name


def infer_protocol(clips: Sequence[Clip]) -> tuple[str, str]:
    """Tell the challenge year from the test clips' names and folders.

    Returns
    -------
    protocol : str
        ``dcase2020`` for ``[normal_|anomaly_]id_XX_NNNN`` names or names with no
        section; ``dcase2021`` when clips lie in ``source_test``/``target_test``
        folders; ``dcase2022`` when sections other than ``00`` occur; otherwise
        ``dcase2023`` (2023, 2024 and 2025 score identically and use the same names).
    reason : str
        One line saying why, for the console.
    """
    if not clips:
        raise ConfigError("no clips to infer the protocol from")
    names = [Path(c.path).stem for c in clips]
    if all(_DCASE2020_NAME.match(n) for n in names):
        return "dcase2020", "file names in the DCASE 2020 style (id_XX)"
    if not any(n.lower().startswith("section_") for n in names):
        return "dcase2020", "file names carry no section: per-machine-ID scoring"
    if any(Path(c.path).parent.name.lower() in ("source_test", "target_test") for c in clips):
        return "dcase2021", "test clips in source_test/target_test folders"
    sections = {c.machine_id for c in clips}
    if sections - {"00"}:
        return (
            "dcase2022",
            f"sections {', '.join(sorted(s for s in sections if s))} in one test folder",
        )
    return "dcase2023", "only section 00 in one test folder (2023-2025 score alike)"
