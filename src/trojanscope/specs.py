"""One converter from dicts to config dataclasses: model cards, ``--set key=value``, job specs.

:func:`from_dict` builds a (possibly nested) dataclass from a JSON-like dict, recursing into every field
whose type is itself a dataclass, refusing any key the dataclass does not know (naming what is allowed).
With ``coerce=True`` each value is converted to its field's type (:func:`coerce`): strings from a command
line (``--set teacher_lr=3e-5``) become floats, ``"true"`` a bool, ``"none"`` None where the field allows it.

It sits at the bottom of the package (it imports only :mod:`trojanscope.errors`), so every layer reads
configs the same way.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from trojanscope.errors import TrojanScopeError


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved type}`` of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _dataclass_of(kind: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return kind
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def coerce(value: Any, kind: Any, name: str, where: str) -> Any:
    """``value`` as field type ``kind`` (``name`` and ``where`` for the error), e.g. ``"3e-5"`` -> ``3e-05``."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):  # e.g. ``str | None``
        args = typing.get_args(kind)
        says_none = value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))
        if type(None) in args and says_none:
            return None
        inner = [a for a in args if a is not type(None)]
        kind = inner[0] if len(inner) == 1 else str
        origin = typing.get_origin(kind)
    bad = TrojanScopeError(f"{where}: {name} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.strip().lower() in ("1", "true", "yes", "on")
        raise bad
    if kind is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad from None
    if kind is float:
        if isinstance(value, bool):
            raise bad
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise bad from None
        if out != out or out in (float("inf"), float("-inf")):
            raise bad
        return out
    if kind is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    if origin in (list, tuple, dict) or kind in (list, tuple, dict):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise bad from None
        want = origin or kind
        if not isinstance(value, (list, tuple) if want in (list, tuple) else dict):
            raise bad
        return want(value) if want in (list, tuple) else value
    return value


def check_keys(cls: type, d: Any, where: str) -> dict[str, Any]:
    """``d`` if it is a dict whose keys are all fields of ``cls``; else a TrojanScopeError naming what is allowed."""
    if not isinstance(d, dict):
        raise TrojanScopeError(f"the {where} must be a JSON object, got {type(d).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise TrojanScopeError(f"unknown key(s) {', '.join(unknown)} in the {where}; allowed: "
                               f"{', '.join(sorted(known))}")
    return d


def from_dict(cls: type, d: Any, where: str = "spec", *, coerce_values: bool = False) -> Any:
    """Dataclass ``cls`` from dict ``d``; nested dataclass fields from nested dicts; missing keys take the
    defaults; unknown keys are refused (a card from another version, or a typo). ``coerce_values``: convert
    each plain value to its field's type (command-line strings)."""
    check_keys(cls, d, where)
    types_ = field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        inner = _dataclass_of(types_[key])
        if inner is not None and isinstance(value, dict):
            own = getattr(inner, "from_dict", None)  # a recipe with its own reader (old cards' renamed keys)
            kwargs[key] = (own(value) if callable(own) and not coerce_values else
                           from_dict(inner, value, f"{where}.{key}", coerce_values=coerce_values))
        elif inner is not None and value is not None and not isinstance(value, inner):
            raise TrojanScopeError(f"{where}.{key} must be a JSON object, got {type(value).__name__}")
        else:
            kwargs[key] = coerce(value, types_[key], key, where) if coerce_values else value
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict (nested dataclasses as nested dicts, tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1, with a message saying what was wrong."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


# --- declared knobs: a config field's help and bounds, read by validation and by the forms ---------------------

def knob(default: Any, help: str, *, min: float | None = None, max: float | None = None,  # noqa: A002
         choices: tuple | None = None, above: float | None = None) -> Any:
    """A config field with its meaning and allowed values declared beside it: ``help`` (one line a form shows),
    ``min``/``max`` (inclusive), ``above`` (exclusive lower bound), ``choices``. :func:`check_knobs` enforces
    them; a form reads them with :func:`knobs_of` (its help text, its input's bounds, a select for choices)."""
    meta = {"help": help, "min": min, "max": max, "above": above, "choices": tuple(choices) if choices else None}
    return dataclasses.field(default=default, metadata={"knob": meta})


def knobs_of(cls_or_obj: Any) -> dict[str, dict[str, Any]]:
    """``{field: {"help", "min", "max", "above", "choices"}}`` for a config's declared knobs."""
    return {f.name: dict(f.metadata["knob"]) for f in dataclasses.fields(cls_or_obj) if "knob" in f.metadata}


def check_knobs(obj: Any, where: str) -> Any:
    """``obj`` if every declared knob holds an allowed value; else a TrojanScopeError naming the knob, what it
    means, what is allowed and what was given."""
    for name, k in knobs_of(obj).items():
        value = getattr(obj, name)
        if value is None:
            continue
        if k["choices"] is not None:
            if value not in k["choices"]:
                raise TrojanScopeError(f"{where}: unknown {name} {value!r}; allowed: "
                                       f"{', '.join(map(str, k['choices']))} ({name}: {k['help']})")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        lo, hi, above = k["min"], k["max"], k["above"]
        if (above is not None and not value > above) or (lo is not None and value < lo) or \
                (hi is not None and value > hi):
            bounds = ([f"above {above:g}"] if above is not None else []) + \
                     ([f"at least {lo:g}"] if lo is not None else []) + ([f"at most {hi:g}"] if hi is not None else [])
            raise TrojanScopeError(f"{where}: {name} must be {' and '.join(bounds)}, got {value:g} ({name}: "
                                   f"{k['help']})")
    return obj
