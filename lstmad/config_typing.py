"""Typed configuration from YAML: a mapping read from a file → a frozen dataclass, every value coerced to its
field's type, an unknown key, a missing one or a value of the wrong type failing with one line that names the
file and the dotted key (lstmad.config holds the pipeline's dataclasses)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from typing import Any, Callable, Optional, Union


class ConfigError(ValueError):
    """A pipeline configuration that cannot be used; the message names the file and the key."""


def build(cls: type, raw: Any, source: str, prefix: str, shorthands: Optional[dict[type, Callable]] = None) -> Any:
    """``cls`` (a dataclass) from the mapping ``raw`` read from ``source``, each value coerced to its field's
    type; ``shorthands`` maps a dataclass to how a plain string stands for it. Raises ConfigError naming
    ``source`` and the dotted key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key '{prefix.rstrip('.') or '<root>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{prefix}{unknown[0]}' (allowed: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        key = f"{prefix}{name}"
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], source, key, shorthands or {})
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{key}'")
    return cls(**values)


def _coerce(hint: Any, value: Any, source: str, key: str, shorthands: dict) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(options[0], value, source, key, shorthands)
    if hint in shorthands and isinstance(value, str):
        return shorthands[hint](value)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, source, key + ".", shorthands)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: key '{key}' must be a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, source, f"{key}[{i}]", shorthands) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}' must be a mapping, got {value!r}")
        key_hint, value_hint = typing.get_args(hint) or (str, str)
        if value_hint is str:
            return {str(k): str(v) for k, v in value.items()}
        for k in value:
            if isinstance(k, bool):  # YAML 1.1 reads yes/no/on/off/true/false keys as booleans
                raise ConfigError(f"{source}: key '{key}' has a key YAML reads as {k} (yes/no, on/off, true/false): "
                                  "quote it")
        return {str(k): _coerce(value_hint, v, source, f"{key}.{k}", shorthands) for k, v in value.items()}
    if hint is dt.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{source}: key '{key}' must be a date YYYY-MM-DD, got {value!r}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: key '{key}' has an unsupported type {hint!r}")  # pragma: no cover
