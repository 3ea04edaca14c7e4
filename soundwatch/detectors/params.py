"""Declared, validated detector hyperparameters.

Every detector lists its parameters as :class:`Param` objects, so the command line, the
model file and ``soundwatch detectors --verbose`` all read the same declaration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from soundwatch.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One hyperparameter.

    Parameters
    ----------
    default : Any
        Default value; its type (bool, int, float, str) is the parameter's type unless
        ``kind`` says otherwise.
    help : str
        One line shown by ``soundwatch detectors --verbose``.
    kind : type, optional
        Value type when ``default`` is None.
    choices : tuple, optional
        Allowed values.
    low, high : float, optional
        Inclusive bounds for numbers.
    optional : bool
        Whether None is allowed (spelled ``none`` on the command line).
    """

    default: Any
    help: str
    kind: type | None = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    optional: bool = False

    @property
    def type(self) -> type:
        return self.kind or type(self.default)

    def coerce(self, name: str, value: Any) -> Any:
        """Convert a Python or command-line string value and validate it."""
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            if self.optional or self.default is None:
                return None
            raise ConfigError(f"parameter {name} cannot be none")
        kind = self.type
        try:
            if kind is bool:
                if isinstance(value, str):
                    text = value.strip().lower()
                    if text not in _TRUE | _FALSE:
                        raise ValueError(value)
                    value = text in _TRUE
                value = bool(value)
            elif kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                value = int(value)
            elif kind is float:
                value = float(value)
            else:
                value = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"parameter {name} expects {kind.__name__}, got {value!r}") from None
        if self.choices is not None and value not in self.choices:
            choices = ", ".join(map(str, self.choices))
            raise ConfigError(f"parameter {name} must be one of {choices}, got {value!r}")
        if self.low is not None and value < self.low:
            raise ConfigError(f"parameter {name} must be >= {self.low}, got {value}")
        if self.high is not None and value > self.high:
            raise ConfigError(f"parameter {name} must be <= {self.high}, got {value}")
        return value


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings from the command line."""
    params: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param expects KEY=VALUE, got {item!r}")
        params[key.strip()] = value.strip()
    return params


def override(params: dict[str, Param], **defaults: Any) -> dict[str, Param]:
    """``params`` with some default values changed: the one way a detector adapts a
    shared parameter table.

    Raises
    ------
    TypeError
        A name in ``defaults`` is not in ``params`` (a typo would otherwise add nothing).

    Examples
    --------
    >>> table = {"epochs": Param(100, "maximum training epochs", low=1)}
    >>> override(table, epochs=30)["epochs"].default
    30
    """
    unknown = sorted(set(defaults) - set(params))
    if unknown:
        raise TypeError(f"unknown parameter(s) {', '.join(unknown)}")
    return {
        key: dataclasses.replace(param, default=defaults[key]) if key in defaults else param
        for key, param in params.items()
    }


def parse_list(name: str, text: str, kind: type = int, low: float = 1) -> tuple:
    """Parse a comma-separated parameter such as ``"1024,512,256"`` into a tuple of
    ``kind`` values, each at least ``low``.

    Raises
    ------
    ConfigError
        The text is empty, an entry is empty or does not parse, or a value is below
        ``low``.
    """
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise ConfigError(f"parameter {name} is empty")
    try:
        values = tuple(kind(part) for part in parts)
    except ValueError:
        raise ConfigError(
            f"parameter {name} expects comma-separated {kind.__name__}s, got {text!r}"
        ) from None
    if any(v < low for v in values):
        raise ConfigError(f"parameter {name} values must be >= {low}, got {text!r}")
    return values


def parse_channel(value: str) -> int | str:
    """The ``channel`` parameter as :func:`soundwatch.data.audio.load_audio` takes it: a
    channel index, or ``"mean"`` for the mean of all channels."""
    return value if value == "mean" else int(value)
