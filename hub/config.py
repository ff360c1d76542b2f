"""The one configuration model of citizen-hub.

Every key has a default and a help text (the pydantic ``description``). ``config.toml`` at the
repository root mirrors this model section by section; ``tests/test_config.py`` fails when a key
is missing there or undocumented. ``citizen-hub config`` prints the whole reference.

Values are resolved in this order (later wins):

1. the defaults below,
2. the TOML file (``--config FILE``, else ``$CITIZEN_HUB_CONFIG``, else ``./config.toml`` if present),
3. environment variables ``CITIZEN_HUB_<SECTION>__<KEY>`` (e.g. ``CITIZEN_HUB_DATABASE__URL``),
   which is how secrets are given without writing them into a file. A list-typed key takes a JSON
   array (``'["a", "b"]'``) or comma-separated text (``a,b``; blanks around the items are dropped), the
   same for every list key (:func:`env_list`).
"""

from __future__ import annotations

import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, create_model

from hub.console.settings import ConsoleSettings
from hub.http.catalog_settings import CatalogSettings
from hub.http.ratelimit import IntakeLimitSettings
from hub.plugins import settings_sections
from hub.queue.settings import PrivacySettings, QueueSettings
from hub.queue.sla import SlaSettings
from knowledge.learning.settings import LearningSettings
from knowledge.settings import ConfigError, LookupSettings, RegionSettings, Section

ENV_PREFIX = "CITIZEN_HUB_"

__all__ = ["ConfigError", "LookupSettings", "RegionSettings", "Section", "Settings", "load_settings"]

# Sections live next to the code that reads them and subclass knowledge.settings.Section, which no
# section import can cycle through; this module only assembles them (the channels' through hub.plugins).


class DatabaseSettings(Section):
    url: str = Field(
        "sqlite:///var/citizen-hub.sqlite3",
        description="SQLAlchemy URL of the database. SQLite (default, WAL mode) for one machine; "
        "postgresql+psycopg://user@host/db for several hub processes.",
    )
    echo: bool = Field(False, description="Log every SQL statement (debugging only; never in production).")


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8115, ge=1, le=65535, description="TCP port of the HTTP server.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body the HTTP server accepts (bytes); larger gets 413."
    )
    gc_threshold: int = Field(
        20_000,
        ge=0,
        description="Allocations between two collections of Python's youngest garbage generation in a server "
        "process (Python's default: 700, a collection every few requests). 20000 gave 5 % more intake "
        "throughput in bench/bench_intake.py; the cost is a few MB of cycles not yet collected. 0 keeps "
        "Python's default.",
    )
    metrics_token: str = Field(
        "",
        repr=False,
        description="Bearer token a scraper must send to read /metrics (Authorization: Bearer ...); give it as "
        "CITIZEN_HUB_SERVER__METRICS_TOKEN. Empty = /metrics is open to whoever reaches the port: counts only, "
        "but they show an outsider how busy the hub is, so keep it off the public network.",
    )
    metrics_separate: bool = Field(
        False,
        description="Serve /metrics on a listener of its own (metrics_host:metrics_port, e.g. the monitoring "
        "network) instead of the public HTTP port, which then answers 404 for /metrics.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address of the separate /metrics listener.")
    metrics_port: int = Field(
        9115, ge=0, le=65535, description="TCP port of the separate /metrics listener (0 = any free port)."
    )
    health_write_failure_seconds: float = Field(
        60.0,
        ge=0,
        description="/healthz answers 503 for this long after a write or commit to the database failed (disk "
        "full, read-only, gone), so a load balancer stops sending requests the hub cannot store. 0 = never.",
    )
    health_min_free_bytes: int = Field(
        104_857_600,
        ge=0,
        description="/healthz answers 503 while the disk under the SQLite database, the attachment store or the "
        "mail store has less free space than this (bytes). 0 = not checked.",
    )


#: The hub's own sections, in the order of config.toml; the channels' sections come between them.
_HUB_SECTIONS_BEFORE_CHANNELS: tuple[tuple[str, type[Section], str], ...] = (
    ("database", DatabaseSettings, "Storage."),
    ("server", ServerSettings, "HTTP server."),
    ("regions", RegionSettings, "Regions and places."),
    ("lookup", LookupSettings, "Service lookup."),
    ("sla", SlaSettings, "Service-level clock: business hours and public holidays."),
    ("queue", QueueSettings, "Request queue: intake, threading, workers, attachments."),
    ("privacy", PrivacySettings, "Data protection: retention of finished cases."),
    ("limits", IntakeLimitSettings, "Intake limits per sender address, client address and API token (every channel)."),
)
_HUB_SECTIONS_AFTER_CHANNELS: tuple[tuple[str, type[Section], str], ...] = (
    ("catalog", CatalogSettings, "Catalogue sync API and importers."),
    ("console", ConsoleSettings, "Agent console: log-in, sessions, live updates."),
    ("learning", LearningSettings, "Learned routing: models trained on agents' confirmed decisions."),
)


def _settings_model() -> type[Section]:
    """The one settings model: the hub's sections and every registered channel's."""
    sections = [*_HUB_SECTIONS_BEFORE_CHANNELS,
                *((s.key, s.model, s.description) for s in settings_sections()),
                *_HUB_SECTIONS_AFTER_CHANNELS]
    fields: dict[str, Any] = {}
    for key, model, description in sections:
        if key in fields:
            raise ValueError(f"config section [{key}] is declared twice")
        fields[key] = (model, Field(default_factory=model, description=description))
    model = create_model("Settings", __base__=Section, __module__=__name__, **fields)
    model.__doc__ = "All settings of one hub deployment."
    return model


Settings = _settings_model()


_SEQUENCES = (list, tuple, set, frozenset)


def _is_list_type(annotation: Any) -> bool:
    """Whether a field's type is a list (``list[str]``, ``tuple[str, ...]``, ``list[str] | None``)."""
    origin = typing.get_origin(annotation)
    if annotation in _SEQUENCES or origin in _SEQUENCES:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list_type(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def env_list(name: str, value: str) -> Any:
    """The items of a list-typed key given in the environment variable ``name``.

    ``[...]`` is read as JSON (so an item may contain a comma); anything else is split at commas, blanks
    around the items dropped, empty items ignored (``""`` is the empty list). A JSON value that is no
    array is a :class:`ConfigError` naming the variable.
    """
    text = value.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{name}: not a valid JSON array: {exc}") from None
        if not isinstance(items, list):
            raise ConfigError(f"{name}: expected a JSON array")
        return items
    return [part.strip() for part in text.split(",") if part.strip()]


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Collect ``CITIZEN_HUB_SECTION__KEY`` variables into nested dicts; list-typed keys as lists."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        field = Settings.model_fields.get(section)
        if field is None:
            continue
        model = field.annotation
        key_field = model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if key_field is not None and _is_list_type(key_field.annotation):
            out.setdefault(section, {})[key] = env_list(name, value)
        else:
            out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_config_path() -> Path | None:
    env = os.environ.get(ENV_PREFIX + "CONFIG")
    if env:
        return Path(env)
    local = Path("config.toml")
    return local if local.exists() else None


def load_settings(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the TOML file and the environment.

    Raises ``ConfigError`` with a readable message when the file is missing, not TOML, or holds an
    unknown key or a bad value.
    """
    data: dict[str, Any] = {}
    file = Path(path) if path else default_config_path()
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {file}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    _refuse_secrets_in_file(data, file)
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    try:
        return Settings.model_validate(data)
    except Exception as exc:  # pydantic.ValidationError: keep the message, drop the traceback
        raise ConfigError(f"invalid configuration: {exc}") from exc


def _refuse_secrets_in_file(data: Mapping[str, Any], file: Path | None) -> None:
    """A key marked ``environment_only`` (a secret such as ``[twilio] auth_token``) set in the file stops the
    start: a token in a file ends up in backups and version control."""
    for key, field in iter_keys():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if not extra.get("environment_only"):
            continue
        value: Any = data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value:
            env = f"{ENV_PREFIX}{key.replace('.', '__').upper()}"
            raise ConfigError(f"{file}: {key} must not be in the file; give it as the environment variable {env}")


def iter_keys(model: type[BaseModel] = Settings, prefix: str = ""):
    """Yield ``(dotted_key, field_info)`` for every leaf key of the settings model."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_keys(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def reference_toml() -> str:
    """The documented TOML reference for the whole model (what ``config.toml`` should look like)."""
    lines = ["# citizen-hub configuration. Every key is shown with its default.",
             "# Environment variables CITIZEN_HUB_<SECTION>__<KEY> override this file (use them for secrets).", ""]
    for name, field in Settings.model_fields.items():
        section = field.annotation
        lines.append(f"[{name}]")
        lines.append(f"# {field.description}")
        for key, sub in section.model_fields.items():
            default = sub.get_default(call_default_factory=True)
            lines.append(f"# {sub.description}")
            lines.append(f"{key} = {_toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")
