"""Settings from environment variables: ``setting()`` declares a key, ``load()`` reads the environment.

A settings class is a frozen dataclass whose fields are declared with ``setting(default, ENV, description)``.
Constructing it gives the defaults (or the values passed) and never reads the environment; ``load(cls, env)``
is the one reader. Each variable has one default, one type (the field's annotation, or ``parse``) and one
description, from which ``ollama_optimizer.config_docs`` writes the README tables and the plugin's
``config.json``. A value that does not parse or is out of range raises ``ConfigError`` naming the variable.
An empty variable counts as unset.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
KEY = "ollama_optimizer.setting"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A configured value is unusable; the message names the variable (or file key) and what it accepts."""


@dataclass(frozen=True)
class Setting:
    """What one variable means: its name(s), default, description, parser and range."""

    env: str
    description: str
    default: object
    shown_default: str
    parse: Callable[[str], Any] | None = None
    aliases: tuple[str, ...] = ()  # other names, tried after ``env`` in order
    secret: bool = False  # when empty, read from the file named by ``<NAME>_FILE``; never echoed
    low: float | None = None
    high: float | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.env, *self.aliases)


def parse_bool(raw: str) -> bool:
    """The one boolean spelling: 1/true/yes/on and 0/false/no/off, any case."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be a boolean (true/false)")


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple | frozenset):
        return ",".join(str(v) for v in sorted(value)) if value else ""
    return str(value)


def setting(
    default: object,
    env: str,
    description: str,
    *,
    parse: Callable[[str], Any] | None = None,
    aliases: tuple[str, ...] = (),
    secret: bool = False,
    low: float | None = None,
    high: float | None = None,
    shown_default: str | None = None,
) -> Any:
    """A dataclass field read from ``env``. With ``parse``, a string default is parsed once, here, and shown as
    written; ``low``/``high`` bound the value (checked by ``check`` and ``load``)."""
    if parse is not None and isinstance(default, str):
        shown = default if shown_default is None else shown_default
        default = parse(default)
    else:
        shown = _show(default) if shown_default is None else shown_default
    spec = Setting(env, description, default, shown, parse, aliases, secret, low, high)
    return _field(spec)


def _field(spec: Setting) -> Any:
    value = spec.default
    if isinstance(value, dict | list | set):
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={KEY: spec})
    return dataclasses.field(default=value, metadata={KEY: spec})


def same_as(cls: type, name: str, *, first: str | None = None) -> Any:
    """The setting of ``cls.name`` again (one default, one description); ``first`` is tried before its names."""
    spec = spec_of(cls, name)
    if first is not None:
        spec = dataclasses.replace(spec, env=first, aliases=spec.names)
    return _field(spec)


def spec_of(cls: type, name: str) -> Setting:
    spec = {f.name: f for f in dataclasses.fields(cls)}[name].metadata.get(KEY)
    if not isinstance(spec, Setting):
        raise TypeError(f"{cls.__name__}.{name} is not a setting")
    return spec


def specs(cls: type) -> list[tuple[str, Setting]]:
    """(field name, setting) of ``cls`` in declaration order, nested settings classes included."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Setting]] = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(KEY)
        if isinstance(spec, Setting):
            out.append((f.name, spec))
        elif dataclasses.is_dataclass(hints[f.name]):
            out.extend(specs(hints[f.name]))
    return out


def _parser(spec: Setting, kind: Any) -> Callable[[str], Any]:
    if spec.parse is not None:
        return spec.parse
    if kind is bool:
        return parse_bool
    if kind is int:
        return _whole
    if kind is float:
        return _number
    if kind in (str, Path):
        return typing.cast(Callable[[str], Any], kind)
    raise TypeError(f"{spec.env}: no parser for {kind}")


def _whole(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be an integer") from None


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("must be a number") from None


def _raw(spec: Setting, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(name it was found under, value) of the first of the setting's names that is set."""
    for name in spec.names:
        value = env.get(name, "")
        if not value and spec.secret and env.get(f"{name}_FILE"):
            path = env[f"{name}_FILE"]
            try:
                value = Path(path).read_text()
            except OSError as exc:
                raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
            name = f"{name}_FILE"
        if spec.secret:
            value = value.strip()
        if value:
            return name, value
    return None


def _in_range(name: str, spec: Setting, value: Any) -> None:
    if spec.low is not None and spec.high is not None and not spec.low <= value <= spec.high:
        raise ConfigError(f"{name} must be in {spec.low:g}..{spec.high:g}, got {value}")


def _from_file(where: str, raw: object, kind: Any, spec: Setting) -> Any:
    """A JSON value for a setting: a string parses as the variable would, other values must have its type."""
    if isinstance(raw, str):
        return _parse(where, spec, kind, raw)
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind in (int, float) and isinstance(raw, int | float) and not isinstance(raw, bool):
        if kind is int and raw != int(raw):
            raise ConfigError(f"{where} must be an integer, got {raw!r}")
        return kind(raw)
    raise ConfigError(f"{where} must be {getattr(kind, '__name__', kind)}, got {raw!r}")


def _parse(name: str, spec: Setting, kind: Any, raw: str) -> Any:
    try:
        return _parser(spec, kind)(raw)
    except ValueError as exc:
        shown = "" if spec.secret else f", got {raw!r}"
        raise ConfigError(f"{name}: {exc}{shown}") from None


def load(
    cls: type[T],
    env: Mapping[str, str],
    file_values: Mapping[str, object] | None = None,
    file_name: str = "",
    **given: Any,
) -> T:
    """``cls`` from ``env`` (highest), then ``file_values`` (by field name, read from ``file_name``), then the
    defaults; ``given`` fields (required fields without a variable) are passed as they are."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(typing.cast(Any, cls)):
        if f.name in given:
            continue
        spec = f.metadata.get(KEY)
        kind = hints[f.name]
        if not isinstance(spec, Setting):
            if dataclasses.is_dataclass(kind):
                values[f.name] = load(typing.cast(type, kind), env)
            continue
        found = _raw(spec, env)
        if found is not None:
            values[f.name] = _parse(found[0], spec, kind, found[1])
        elif file_values is not None and f.name in file_values:
            where = f"{file_name}: {f.name}" if file_name else f.name
            values[f.name] = _from_file(where, file_values[f.name], kind, spec)
        else:
            continue
        _in_range(found[0] if found else where, spec, values[f.name])
    return cls(**values, **given)


def check(instance: object) -> None:
    """Range checks of a constructed settings value (``__post_init__``); errors name the variable."""
    for f in dataclasses.fields(typing.cast(Any, instance)):
        spec = f.metadata.get(KEY)
        if isinstance(spec, Setting):
            _in_range(spec.env, spec, getattr(instance, f.name))


def configured(cls: type, name: str, env: Mapping[str, str]) -> bool:
    """Whether any of the names of ``cls.name`` is set in ``env``."""
    return _raw(spec_of(cls, name), env) is not None
