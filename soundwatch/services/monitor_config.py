"""What ``soundwatch monitor`` watches, with which models, and how it alerts: read from
a TOML file and the command line, checked before anything starts.

A config file (paths relative to the file's folder)::

    db = "events.db"            # event store (default: soundwatch-monitor.db)
    retention_days = 30         # drop scores older than this (default: keep all)
    stable_seconds = 1.0        # a file is complete once unchanged this long

    [models]
    slider_id00 = "models/slider.safetensors"

    [[watch]]
    path = "incoming"
    glob = "slider/*.wav"       # relative to path; "*" (default) takes every file
    machine = "slider_id00"

    [stream]                    # raw PCM or WAV on stdin
    machine = "slider_id00"
    format = "auto"             # auto, wav, s16le, s32le, f32le
    sample_rate = 16000         # raw samples only
    hop_seconds = 5.0           # default: the window (no overlap)

    [alerts]
    rule = "k-of-n"             # or "median" with window = 5
    k = 3
    n = 5
    close_after = 3
    webhooks = ["http://127.0.0.1:9000/alerts"]
    command = "logger -t soundwatch"
    retries = 5
    backoff_seconds = 1.0

The command line adds models (``--model NAME=PATH``) and watched folders
(``--watch [NAME=]DIR`` or ``--watch NAME=DIR/*.wav``) and overrides the scalars.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soundwatch.errors import ConfigError
from soundwatch.services.alerts import KOfN, MovingMedian, parse_rule, rule_from_table
from soundwatch.services.sources import RAW_FORMATS, Route

DEFAULT_DB = "soundwatch-monitor.db"
GLOB_CHARS = "*?["


@dataclass
class StreamSpec:
    machine: str
    source: str
    format: str = "auto"
    sample_rate: int | None = None
    channels: int = 1
    window_seconds: float | None = None
    hop_seconds: float | None = None
    microphone: bool = False


@dataclass
class MonitorConfig:
    models: dict[str, Path] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    stream: StreamSpec | None = None
    db: str = DEFAULT_DB
    retention_days: float | None = None
    stable_seconds: float = 1.0
    rule: KOfN | MovingMedian = field(default_factory=KOfN)
    webhooks: list[str] = field(default_factory=list)
    command: str | None = None
    retries: int = 5
    backoff_seconds: float = 1.0
    polling: bool = False

    def route(self, path: Path) -> str | None:
        """The machine of a file (the first route that matches), or None."""
        for route in self.routes:
            if route.matches(path):
                return route.machine
        return None

    def check(self) -> None:
        """Refuse a config that cannot run, before anything starts."""
        if not self.models:
            raise ConfigError("monitor: no model; give --model NAME=MODEL.safetensors")
        for name, path in self.models.items():
            if not path.is_file():
                raise ConfigError(f"model of {name}: no such file: {path}")
        if not self.routes and self.stream is None:
            raise ConfigError("monitor: nothing to watch; give --watch DIR or --stdin NAME")
        for route in self.routes:
            if not route.root.is_dir():
                raise ConfigError(f"--watch: not a folder: {route.root}")
            if route.machine not in self.models:
                raise ConfigError(
                    f"--watch {route.root}: no model for machine {route.machine!r} "
                    f"(models: {', '.join(self.models)})"
                )
        if self.stream is not None:
            if self.stream.machine not in self.models:
                raise ConfigError(
                    f"stream: no model for machine {self.stream.machine!r} "
                    f"(models: {', '.join(self.models)})"
                )
            if self.stream.format not in ("auto", "wav", *RAW_FORMATS):
                raise ConfigError(
                    f"stream format {self.stream.format!r}: expected auto, wav, "
                    + ", ".join(RAW_FORMATS)
                )
            if self.stream.microphone:
                try:
                    import sounddevice  # noqa: F401
                except (ImportError, OSError) as exc:
                    raise ConfigError(f"--mic needs sounddevice and PortAudio ({exc})") from exc
            for what in ("window_seconds", "hop_seconds"):
                value = getattr(self.stream, what)
                if value is not None and not value > 0:
                    raise ConfigError(f"stream {what}: must be positive, got {value}")
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"webhook {url!r}: expected an http:// or https:// URL")
        if self.retention_days is not None and not self.retention_days > 0:
            raise ConfigError(f"retention: must be positive days, got {self.retention_days}")
        if not self.stable_seconds >= 0:
            raise ConfigError(f"stable seconds: must be zero or more, got {self.stable_seconds}")


def load_config(path: str | Path | None, cli: dict[str, Any] | None = None) -> MonitorConfig:
    """The monitor config from a TOML file (optional) and command-line values.

    ``cli`` keys: ``models`` (list of ``NAME=PATH``), ``watch`` (list of
    ``[NAME=]DIR[/GLOB]``), ``stdin`` (machine name), ``mic`` (machine name),
    ``format``, ``sample_rate``, ``channels``, ``window``, ``hop``, ``db``,
    ``retention_days``, ``stable_seconds``, ``alert`` (rule spec), ``webhooks``,
    ``command``, ``retries``, ``backoff``, ``polling``; None means not given.
    """
    cli = cli or {}
    config = MonitorConfig()
    if path is not None:
        _apply_file(config, Path(path))
    for item in cli.get("models") or []:
        name, sep, model = item.partition("=")
        if not sep or not name or not model:
            raise ConfigError(f"--model {item!r}: expected NAME=MODEL.safetensors")
        config.models[name] = Path(model)
    for item in cli.get("watch") or []:
        config.routes.append(_cli_route(item, config.models))
    for option in ("stdin", "mic"):
        if cli.get(option):
            if config.stream is not None and config.stream.machine != cli[option]:
                raise ConfigError("monitor: one stream at a time (--stdin, --mic or [stream])")
            config.stream = StreamSpec(
                machine=cli[option],
                source=f"{option}:{cli[option]}",
                microphone=option == "mic",
            )
    if config.stream is not None:
        for key, attr in (
            ("format", "format"),
            ("sample_rate", "sample_rate"),
            ("channels", "channels"),
            ("window", "window_seconds"),
            ("hop", "hop_seconds"),
        ):
            if cli.get(key) is not None:
                setattr(config.stream, attr, cli[key])
    for key, attr in (
        ("db", "db"),
        ("retention_days", "retention_days"),
        ("stable_seconds", "stable_seconds"),
        ("command", "command"),
        ("retries", "retries"),
        ("backoff", "backoff_seconds"),
    ):
        if cli.get(key) is not None:
            setattr(config, attr, cli[key])
    if cli.get("alert"):
        config.rule = parse_rule(cli["alert"])
    config.webhooks += list(cli.get("webhooks") or [])
    config.polling = bool(cli.get("polling")) or config.polling
    config.check()
    return config


def _cli_route(item: str, models: dict[str, Path]) -> Route:
    name, sep, folder = item.partition("=")
    if not sep or name not in models:
        name, folder = "", item
    if not name:
        if not models:
            raise ConfigError(f"--watch {item}: no model; give --model NAME=MODEL.safetensors")
        if len(models) != 1:
            raise ConfigError(
                f"--watch {item}: several models ({', '.join(models)}); name the machine: "
                "--watch NAME=DIR"
            )
        name = next(iter(models))
    root, glob = _split_glob(folder)
    return Route(root.resolve(), glob, name)


def _split_glob(text: str) -> tuple[Path, str]:
    """``incoming/slider/*.wav`` -> (``incoming/slider``, ``*.wav``)."""
    parts = Path(text).parts
    for i, part in enumerate(parts):
        if any(c in part for c in GLOB_CHARS):
            return Path(*parts[:i]) if i else Path("."), "/".join(parts[i:])
    return Path(text), "*"


def _apply_file(config: MonitorConfig, path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not valid TOML ({exc})") from exc
    base = path.resolve().parent
    known = {"db", "retention_days", "stable_seconds", "polling", "models", "watch", "stream"}
    unknown = set(data) - known - {"alerts"}
    if unknown:
        raise ConfigError(f"--config {path}: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        for name, model in (data.get("models") or {}).items():
            config.models[str(name)] = base / str(model)
        for table in data.get("watch") or []:
            root, glob = _split_glob(str(table["path"]))
            machine = table.get("machine")
            if machine is None:
                if len(config.models) != 1:
                    raise ConfigError(f"--config {path}: [[watch]] {root} needs machine = ...")
                machine = next(iter(config.models))
            config.routes.append(
                Route((base / root).resolve(), str(table.get("glob", glob)), str(machine))
            )
        if "stream" in data:
            table = data["stream"]
            config.stream = StreamSpec(
                machine=str(table["machine"]),
                source=str(table.get("source", f"stdin:{table['machine']}")),
                format=str(table.get("format", "auto")),
                sample_rate=table.get("sample_rate"),
                channels=int(table.get("channels", 1)),
                window_seconds=table.get("window_seconds"),
                hop_seconds=table.get("hop_seconds"),
            )
        if "db" in data:
            db = str(data["db"])
            config.db = db if "://" in db or db == ":memory:" else str(base / db)
        for key in ("retention_days", "stable_seconds"):
            if key in data:
                setattr(config, key, float(data[key]))
        config.polling = bool(data.get("polling", False))
        alerts = data.get("alerts") or {}
        if alerts:
            config.rule = rule_from_table(alerts)
            webhooks = alerts.get("webhooks", [])
            config.webhooks = [webhooks] if isinstance(webhooks, str) else list(webhooks)
            config.command = alerts.get("command")
            config.retries = int(alerts.get("retries", config.retries))
            config.backoff_seconds = float(alerts.get("backoff_seconds", config.backoff_seconds))
    except KeyError as exc:
        raise ConfigError(f"--config {path}: missing key {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--config {path}: {exc}") from exc
