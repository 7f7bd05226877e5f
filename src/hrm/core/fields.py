"""Typed, range-checked dataclass fields and the one parser that fills them from YAML mappings.

Shared by `hrm.pipeline.config` (params sections) and `hrm.models.registry` (model configs), so neither
imports the other for it. Every error names the dotted key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal

from hrm.core.errors import ConfigError

FLOAT32_MAX = 3.4028234663852886e38


def spec(doc: str, *, gt: float | None = None, ge: float | None = None, le: float | None = None,
         lt: float | None = None, default: Any = dataclasses.MISSING, ablation: bool = False) -> Any:
    """A dataclass field with a range; required unless it has a default. `doc` is shown in error messages.

    An `ablation` switch has the paper's setting as its default, may be left out of params.yaml, and
    is keyword-only (so a base class can gain one without reordering its subclasses' fields).
    """
    if ablation and default is dataclasses.MISSING:
        raise TypeError("an ablation switch needs a default: the paper's setting")
    return field(default=default, kw_only=ablation or dataclasses.MISSING,
                 metadata={"doc": doc, "gt": gt, "ge": ge, "le": le, "lt": lt, "ablation": ablation})


def identity(obj: Any) -> dict[str, Any]:
    """`dataclasses.asdict(obj)` without the ablation switches left at their default: what a params
    hash covers, so adding a switch keeps the runs made before it valid (they used the default)."""
    full = dataclasses.asdict(obj)
    return {f.name: full[f.name] for f in dataclasses.fields(obj)
            if not (f.metadata.get("ablation") and full[f.name] == f.default)}


def closest(key: str, allowed: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; numbers written like 3e-4 (a YAML string) pass as floats."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{where}: got {value!r}; allowed: {allowed}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: got {type_name(value)} {value!r}; expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            if not value:
                raise ConfigError(f"{where}: got an empty list; expected at least one item")
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: got {len(value)} items; expected {len(args)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(args[0], value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: got {type_name(value)} {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: got {type_name(value)} {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: got {type_name(value)} {value!r}; expected a number")
        if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
            raise ConfigError(f"{where}: got {value!r}; expected a finite number that float32 holds "
                              f"(|x| <= {FLOAT32_MAX:.3g}: the tensors it scales are float32)")
        return float(value)
    if tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: got {type_name(value)} {value!r}; expected a non-empty string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {where}")


def _check_range(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        bounds = [("gt", lambda a, b: a > b, ">"), ("ge", lambda a, b: a >= b, ">="),
                  ("lt", lambda a, b: a < b, "<"), ("le", lambda a, b: a <= b, "<=")]
        for name, ok, sym in bounds:
            bound = meta.get(name)
            if bound is not None and not ok(item, bound):
                raise ConfigError(f"{where}: got {value!r}; must be {sym} {bound} ({meta.get('doc', '')})")


def parse_section(cls: type, data: Any, where: str) -> Any:
    """Build the frozen dataclass `cls` from a mapping, rejecting unknown or missing keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: got {type_name(data)}; expected a mapping of {cls.__name__} keys")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key{closest(str(key), names)}; "
                              f"allowed: {', '.join(names)}")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}"
        if f.name not in data and f.default is not dataclasses.MISSING:
            values[f.name] = f.default
            continue
        if f.name not in data:
            raise ConfigError(f"{key}: missing ({f.metadata.get('doc', f.name)})")
        values[f.name] = _coerce(hints[f.name], data[f.name], key)
        _check_range(values[f.name], f.metadata, key)
    try:
        return cls(**values)
    except ConfigError as exc:     # a rule across keys (a class's __post_init__), which names its key
        raise ConfigError(f"{where}.{exc}") from None
