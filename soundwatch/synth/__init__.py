"""Synthetic machine sounds from simple physical models, in the DCASE 2020 Task 2 layout.

``generate_dataset`` writes a data set of one machine type (normal training clips,
normal and anomalous test clips, a manifest); ``render_clip`` renders one clip in memory;
``session_conditions`` gives the recording conditions of a session
(``generate_dataset(sessions=N)``); ``generate_domain_shift_dataset`` writes a DCASE
2023-style set with sections, source and target domains and attribute CSVs.
:func:`soundwatch.data.manifest.manifest_kinds` reads which anomaly kind each test clip
has.
The models and their parameters are documented in ``docs/synth.md``.
"""

from soundwatch.synth.dataset import (
    ANOMALY_KINDS,
    MACHINES,
    MANIFEST_NAME,
    generate_dataset,
    render_clip,
    sample_id_params,
    session_conditions,
)
from soundwatch.synth.domain_shift import generate_domain_shift_dataset

__all__ = [
    "ANOMALY_KINDS",
    "MACHINES",
    "MANIFEST_NAME",
    "generate_dataset",
    "generate_domain_shift_dataset",
    "render_clip",
    "sample_id_params",
    "session_conditions",
]
