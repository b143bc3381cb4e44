"""The one configuration object: layered, validated, frozen, with provenance.

Layers, later wins: built-in defaults < ``--preset NAME`` (``streams/presets/NAME.toml``)
< ``--config FILE`` < environment ``COORDWATCH_<SECTION>__<KEY>`` < ``--set
section.key=value`` (repeatable). Environment and ``--set`` values are read as TOML
literals (``60``, ``0.5``, ``true``, ``["a", "b"]``) and fall back to a plain string.

Validation is pydantic's (unknown keys, types, ranges, cross-key rules); a failure
becomes one :class:`~sketches.errors.ConfigError` listing, per problem, the key, the
value given, where it came from and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

import tomli_w
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo

from detectors.params import (
    BurstParams,
    CoActionParams,
    EventsParams,
    LinkingParams,
    NearDuplicateParams,
    ReplayParams,
    Section,
)
from sketches.errors import ConfigError

ENV_PREFIX = "COORDWATCH_"
DEFAULT_BROKER = "kafka://127.0.0.1:9092"


class KafkaParams(Section):
    broker: str = Field(
        DEFAULT_BROKER,
        pattern=r"^kafka://[^\s,;]+(;[^\s,;]+)*$",
        description="bootstrap servers as kafka://host:port[;host:port...]; the default is the embedded broker",
    )
    app_id: str = Field("coordwatch", pattern=r"^[A-Za-z0-9._-]+$", description="Faust app id = consumer group; ingest reads the input in group APP_ID.ingest")
    session_timeout_s: float = Field(8.0, ge=1, le=300, description="consumer session timeout; a group join waits about half of it")
    commit_interval_s: float = Field(2.0, gt=0, le=60, description="offset commit interval (at-least-once: up to this much is re-processed after a crash)")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never printed or logged)")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL/SASL_SSL")
    ssl_certfile: str | None = Field(None, description="client certificate for SSL")
    ssl_keyfile: str | None = Field(None, description="client key for SSL")
    web_host: str = Field("127.0.0.1", description="address the worker's web/metrics server binds")
    web_port: int = Field(
        0, ge=0, le=65535, description="worker web/metrics port (0 = pick a free port, so workers on one host never collide)"
    )
    data_dir: str = Field("coordwatch-data", description="directory for worker state; each worker uses a sub-directory")
    snapshot_interval_s: float = Field(
        30.0, gt=0, le=3600,
        description="a worker snapshots its pipeline (with input offsets) this often; a crash re-processes at most this span of input",
    )
    batch_messages: int = Field(
        20_000, ge=1, le=100_000,
        description="ingest takes up to this many input messages (and 16 MiB) at a time; frames are cut at 4 MiB",
    )
    batch_within_s: float = Field(
        0.2, gt=0, le=60, description="... or fewer: what arrived within this many seconds"
    )
    max_poll_records: int = Field(
        1000, ge=1, le=100_000, description="consumer fetch size in messages (a 100-event envelope is one message)"
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio", description="the worker's event loop: asyncio, or uvloop (libuv; see coordwatch bench levers)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.security_protocol.startswith("SASL"):
            missing = [
                k for k in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(
                    f"kafka.security_protocol = {self.security_protocol!r} needs "
                    + ", ".join(f"kafka.{k}" for k in missing)
                )
        return self


class TopicsParams(Section):
    events: list[str] = Field(
        default_factory=lambda: ["coordwatch.events"], min_length=1, description="input event topics"
    )
    alerts: str = Field("coordwatch.alerts", min_length=1, description="output alert topic")
    dead_letter: str = Field("dlq.coordwatch.events", min_length=1, description="rejected input, with reasons")
    partitions: int = Field(4, ge=1, le=10_000, description="partitions for topics coordwatch creates")
    replication_factor: int = Field(1, ge=1, le=16, description="replication for topics coordwatch creates")


class WorkParams(Section):
    shards: dict[str, int] = Field(
        default_factory=dict,
        description="work partitions a detector is split into, so that more workers share it: burst by key; "
        "co_action into object parts (by object), near_duplicate into band parts (by LSH band, at most one "
        "part per band), each with one partition merging its parts (a co_action group can join any objects, "
        "a near_duplicate cluster any texts). E.g. {burst = 4, co_action = 3, near_duplicate = 2}",
    )

    idle_s: float = Field(
        5.0, gt=0, le=600,
        description="an input partition read to its end holds the ticks at its own newest event until it has had "
        "no new input for this long, then lets them close past it: a producer writing a backlog in batches can put "
        "one partition minutes of event time ahead of another, and a partition idle this long must not stop the "
        "alerts of the others. Longer for producers that pause between batches; shorter for alerts sooner after "
        "a partition goes quiet",
    )  # fmt: skip

    @model_validator(mode="after")
    def _splits(self) -> Self:
        from detectors.base import KeyedDetector
        from detectors.pipeline import detector_classes, detector_parts

        splits = [name for name, cls in detector_classes().items()
                  if issubclass(cls, KeyedDetector) or name in detector_parts()]  # fmt: skip
        for name, n in self.shards.items():
            if name not in splits:
                raise ValueError(f"work.shards.{name} = {n}: only {', '.join(splits)} split; remove {name}")
            if not 1 <= n <= 64:
                raise ValueError(f"work.shards.{name} = {n}: use 1 to 64 shards")
        return self


class Config(Section):
    """The whole effective configuration (one frozen object, handed to every component)."""

    events: EventsParams = Field(default_factory=EventsParams)
    co_action: CoActionParams = Field(default_factory=CoActionParams)
    near_duplicate: NearDuplicateParams = Field(default_factory=NearDuplicateParams)
    burst: BurstParams = Field(default_factory=BurstParams)
    linking: LinkingParams = Field(default_factory=LinkingParams)
    replay: ReplayParams = Field(default_factory=ReplayParams)
    kafka: KafkaParams = Field(default_factory=KafkaParams)
    topics: TopicsParams = Field(default_factory=TopicsParams)
    work: WorkParams = Field(default_factory=WorkParams)

    @model_validator(mode="after")
    def _parts_apart(self) -> Self:
        n = self.work.shards.get("co_action", 1)
        if n > 1 and self.co_action.one_object_actions:
            raise ValueError(
                f"work.shards.co_action = {n} with co_action.one_object_actions = {self.co_action.one_object_actions}: "
                "that rule needs all of a post's objects in one place; set work.shards.co_action = 1 "
                "or co_action.one_object_actions = []"
            )
        from detectors.nd_bands import lsh_shape

        n, (bands, _) = self.work.shards.get("near_duplicate", 1), lsh_shape(self.near_duplicate)
        if n > bands:
            raise ValueError(
                f"work.shards.near_duplicate = {n}: near_duplicate splits by LSH band and has {bands} "
                f"(near_duplicate.lsh_bands, or max_lsh_bands); use at most {bands} parts"
            )
        return self


SECTIONS: dict[str, type[Section]] = {
    name: field.annotation for name, field in Config.model_fields.items()  # type: ignore[misc]
}


@dataclass(frozen=True)
class Loaded:
    """A validated config and, per ``section.key``, the layer its value came from."""

    config: Config
    sources: Mapping[str, str]


# -- presets -----------------------------------------------------------------------
def presets() -> list[str]:
    """Names of the presets shipped with the package."""
    folder = resources.files("streams") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def _preset_text(name: str) -> str:
    if name not in presets():
        raise ConfigError(
            f"--preset {name!r}: no such preset. Available: {', '.join(presets()) or '(none)'}"
        )
    return (resources.files("streams") / "presets" / f"{name}.toml").read_text("utf-8")


# -- layers --------------------------------------------------------------------------
def _literal(text: str) -> Any:
    """A TOML literal if ``text`` is one, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _split_key(key: str, origin: str) -> tuple[str, str]:
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(
            f"{origin}: key {key!r} is not of the form section.key "
            f"(sections: {', '.join(SECTIONS)})"
        )
    return parts[0], parts[1]


def _toml_layer(text: str, origin: str) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(
                f"{origin}: top-level key {section!r} = {values!r} must be a [section] table "
                f"(sections: {', '.join(SECTIONS)})"
            )
    return data


def _env_layer(environ: Mapping[str, str]) -> list[tuple[str, str, Any, str]]:
    out = []
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :]
        if "__" not in rest:
            raise ConfigError(
                f"environment variable {var}: expected {ENV_PREFIX}<SECTION>__<KEY>, "
                f"e.g. {ENV_PREFIX}CO_ACTION__PAIR_WINDOW_S"
            )
        section, key = rest.lower().split("__", 1)
        out.append((section, key, _literal(raw), f"env {var}"))
    return out


def _set_layer(assignments: Iterable[str]) -> list[tuple[str, str, Any, str]]:
    out = []
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        section, name = _split_key(key.strip(), f"--set {item!r}")
        out.append((section, name, _literal(raw.strip()), f"--set {key.strip()}"))
    return out


def load(
    file: str | os.PathLike[str] | None = None,
    *,
    preset: str | None = None,
    sets: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Loaded:
    """Merge the layers, validate once, and return the frozen config with provenance."""
    environ = os.environ if environ is None else environ
    data: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}

    def put(section: str, key: str, value: Any, origin: str) -> None:
        data.setdefault(section, {})[key] = value
        sources[f"{section}.{key}"] = origin

    if preset:
        for section, values in _toml_layer(_preset_text(preset), f"preset {preset}").items():
            for key, value in values.items():
                put(section, key, value, f"preset {preset}")
    if file is not None:
        path = Path(file)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"--config {str(path)!r}: cannot read: {exc.strerror}") from exc
        for section, values in _toml_layer(text, f"file {path}").items():
            for key, value in values.items():
                put(section, key, value, f"file {path}")
    for section, key, value, origin in _env_layer(environ) + _set_layer(sets):
        put(section, key, value, origin)

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, data, sources)) from None
    return Loaded(config, {k: sources.get(k, "default") for k in _leaf_keys()})


# -- messages ------------------------------------------------------------------------
def _leaf_keys() -> list[str]:
    return [f"{s}.{k}" for s, model in SECTIONS.items() for k in model.model_fields]


def _field(section: str, key: str) -> FieldInfo | None:
    model = SECTIONS.get(section)
    return model.model_fields.get(key) if model else None


def _allowed(info: FieldInfo) -> str:
    """What a key accepts, from its type, constraints, description and default."""
    bounds = []
    for meta in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sym} {getattr(meta, attr)}")
    kind = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
    default = info.get_default(call_default_factory=True)
    parts = [kind + (" " + " and ".join(bounds) if bounds else "")]
    if info.description:
        parts.append(info.description)
    parts.append(f"default {_show(default)}")
    return "; ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "'***'"
    return repr(value)


def _explain(exc: ValidationError, data: dict[str, dict[str, Any]], sources: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        section = loc[0] if loc else ""
        if not loc:  # a rule across sections: its message names the keys
            lines.append(err["msg"].removeprefix("Value error, "))
            continue
        if section not in SECTIONS:
            lines.append(
                f"[{section}]: unknown section. "
                f"Known sections: {', '.join(SECTIONS)}"
                + _suggest(section, list(SECTIONS))
            )
            continue
        if len(loc) == 1:  # a cross-key rule of a section: its message names the keys
            given_here = ", ".join(
                f"{k} from {v}" for k, v in sources.items() if k.startswith(section + ".")
            )
            lines.append(
                f"[{section}]: {err['msg'].removeprefix('Value error, ')}"
                + (f" (set here: {given_here})" if given_here else "")
            )
            continue
        key = loc[1]
        dotted = f"{section}.{key}"
        given = data.get(section, {}).get(key, err.get("input"))
        where = sources.get(dotted, "default")
        info = _field(section, key)
        if info is None:
            known = list(SECTIONS[section].model_fields)
            lines.append(
                f"{dotted} = {_show(given)} (from {where}): unknown key in [{section}]."
                + _suggest(key, known)
                + f" Known keys: {', '.join(known)}"
            )
            continue
        detail = "" if len(loc) == 2 else f" (at {'.'.join(loc[2:])})"
        lines.append(
            f"{dotted} = {_show(given)} (from {where}): {err['msg']}{detail}. "
            f"Allowed: {_allowed(info)}"
        )
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


# -- output --------------------------------------------------------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (keys are bare: detector names)
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return tomli_w.dumps({"v": value}).strip()[4:]


def to_toml(loaded: Loaded, *, with_sources: bool = True) -> str:
    """The effective config as TOML (secrets masked), each key annotated with its source."""
    plain = loaded.config.model_dump(mode="python")
    out = []
    for section, model in SECTIONS.items():
        out.append(f"[{section}]")
        for key in model.model_fields:
            value = getattr(getattr(loaded.config, section), key)
            if isinstance(value, SecretStr):
                shown = '"***"'
            elif value is None:
                shown = None
            else:
                shown = _toml_value(plain[section][key])
            source = loaded.sources[f"{section}.{key}"]
            if shown is None:  # TOML has no null: an unset optional key is shown commented
                line = f"# {key} = (unset)"
            else:
                line = f"{key} = {shown}"
            out.append(f"{line:<48} # {source}" if with_sources else line)
        out.append("")
    return "\n".join(out)
