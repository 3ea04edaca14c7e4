"""soundwatch: unsupervised anomalous sound detection for machines.

Data flows one way: clips (``soundwatch.data``) -> features (``soundwatch.features``)
-> detector (``soundwatch.detectors``) -> scores -> metrics and files
(``soundwatch.evaluation``).

The main verbs are available here and imported on first use, so ``import soundwatch``
stays light:

- ``soundwatch.create(name, **params)``: a new detector (see ``soundwatch.detectors()``);
- ``soundwatch.load(path)``: a trained detector from a model file;
- ``soundwatch.discover(root, machine, split)``: the clips of a data folder;
- ``soundwatch.detectors()``: the registered detectors by name;
- ``soundwatch.evaluate(root, machine, detector, out=None)``: train and evaluate with
  the DCASE 2020 Task 2 protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "create", "detectors", "discover", "evaluate", "load"]

if TYPE_CHECKING:
    from soundwatch.api import create, discover, evaluate, load


def __getattr__(name: str) -> Any:
    if name in {"create", "load", "discover", "evaluate"}:
        from soundwatch import api

        return getattr(api, name)
    if name == "detectors":  # the package, callable: soundwatch.detectors()
        import soundwatch.detectors

        return soundwatch.detectors
    raise AttributeError(f"module 'soundwatch' has no attribute {name!r}")
