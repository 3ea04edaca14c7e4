"""One scoring runtime behind every way of scoring (CLI, Python API, later services).

See :class:`ScoringRuntime`.
"""

from soundwatch.runtime.scoring import InputMismatchError, Result, ScoringRuntime

__all__ = ["InputMismatchError", "Result", "ScoringRuntime"]
