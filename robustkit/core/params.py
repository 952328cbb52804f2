"""One way to declare parameters, for every attack, detector and defense.

A class lists its parameters once as `Param` objects (name, default, accepted types,
range, help text). `Configurable.__init__` validates keyword arguments against that
declaration when the object is built, so a bad value fails at construction with a
message that names the parameter and the fix. The same declaration feeds
``robustkit list``, the CLI's options and the docs' reference tables.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .checks import parse_eps

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One declared parameter.

    ``types`` are the accepted Python types (``bool`` is never taken for a number, nor a
    number for a ``bool``). ``low``/``high`` bound numbers (``low_open``: strictly above
    ``low``). ``choices`` lists the accepted values. ``budget`` parses ``"8/255"``-style
    strings into floats. ``optional`` accepts ``None``. ``cli`` marks a parameter that a
    command line can set (numbers, strings, booleans).
    """

    name: str
    default: Any
    help: str
    types: tuple[type, ...] = (float,)
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    budget: bool = False
    cli: bool = True
    item_type: type | None = None

    def validate(self, owner: str, value: Any) -> Any:
        """The checked (and, for budgets and sequences, normalised) value, or a clear error."""
        where = f"{owner}: {self.name}"
        if value is None:
            if self.optional:
                return None
            kind = "a number or a string like '8/255'" if self.budget else " or ".join(t.__name__ for t in self.types)
            raise ValueError(f"{where}=None is not allowed; it must be {kind} ({self.help}; default {self.default!r})")
        if self.budget:
            return parse_eps(value, name=where, limit=self.high if self.high is not None else 1.0)
        if isinstance(value, str) and tuple in self.types and self.item_type is str:
            value = (value,)  # one name (as --param attacks=apgd-ce gives it) is a sequence of one
        if not self._type_ok(value):
            names = " or ".join(t.__name__ for t in self.types)
            raise TypeError(f"{where} must be {names}, got {type(value).__name__} {value!r}")
        if tuple in self.types and isinstance(value, (list, tuple)):
            value = tuple(value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{where}={value!r} is not one of {', '.join(map(repr, self.choices))}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._check_range(where, value)
            if float in self.types:
                value = float(value)
        return value

    def _type_ok(self, value: Any) -> bool:
        if isinstance(value, bool):
            return bool in self.types
        if isinstance(value, int) and float in self.types:
            return True
        if isinstance(value, (list, tuple)) and tuple in self.types and self.item_type is not None:
            return all(isinstance(v, self.item_type) for v in value)
        return isinstance(value, self.types)

    def _check_range(self, where: str, value: float) -> None:
        if not math.isfinite(value):
            raise ValueError(f"{where}={value!r} must be finite")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            lo = "" if self.low is None else f"{'>' if self.low_open else '≥'} {self.low:g}"
            hi = "" if self.high is None else f"≤ {self.high:g}"
            raise ValueError(f"{where}={value!r} is out of range: it must be {' and '.join(p for p in (lo, hi) if p)}")

    def type_name(self) -> str:
        """A short name for tables: ``float``, ``int``, ``bool``, ``str``, a class name, ..."""
        name = "budget" if self.budget else " | ".join(getattr(t, "__name__", str(t)) for t in self.types)
        return f"{name} | None" if self.optional else name

    def default_text(self) -> str:
        """The default as a user would write it (``8/255`` for such a budget)."""
        if self.budget and isinstance(self.default, float):
            k = self.default * 255
            if abs(k - round(k)) < 1e-9 and 0 < round(k) < 255 and f"{self.default:.4g}" != f"{self.default:.12g}":
                return f"{round(k)}/255"  # 8/255; but 1.0, 0.2 and 0.5 stay as they are
        return repr(self.default)

    def range_text(self) -> str:
        """The accepted values in words (``> 0``, ``[1, 8]``, ``one of ...``), or ``''``."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is None and self.high is None:
            return ""
        if self.high is None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        if self.low is None:
            return f"≤ {self.high:g}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


class Configurable:
    """Base of attacks, detectors and defenses: parameters declared once, checked when built.

    Subclasses set ``name``, ``parameters`` (a tuple of `Param`) and ``paper`` (the
    reference, with a link). The validated values are in ``self.params``; ``describe()``
    gives them as JSON-able values (part of run records and model-cache keys).
    """

    kind: ClassVar[str] = "component"
    name: ClassVar[str]
    parameters: ClassVar[tuple[Param, ...]] = ()
    paper: ClassVar[str] = ""

    def __init__(self, **params: Any):
        declared = {p.name: p for p in self.declared()}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            valid = ", ".join(declared) or "none"
            raise TypeError(f"{self.label()} has no parameter {', '.join(unknown)}; valid parameters: {valid}")
        self.params: dict[str, Any] = {
            n: p.validate(self.label(), params.get(n, p.default)) for n, p in declared.items()
        }
        self._check()

    @classmethod
    def declared(cls) -> tuple[Param, ...]:
        """Every parameter of this class, in declaration order."""
        return cls.parameters

    @classmethod
    def label(cls) -> str:
        """How messages name this component, e.g. ``pgd (torchattacks)``."""
        return cls.name

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def _check(self) -> None:
        """Checks that involve several parameters (none by default)."""

    def with_params(self, **changes: Any) -> Any:
        """A copy with some parameters changed (validated like the original)."""
        return type(self)(**{**self.params, **changes})

    def describe(self) -> dict[str, Any]:
        """Name and parameters as JSON-able values."""
        return {"name": self.name, **{k: jsonable(v) for k, v in self.params.items()}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items() if not callable(v) or isinstance(v, type))
        return f"{type(self).__name__}({args})"


def jsonable(value: Any) -> Any:
    """A JSON-able stand-in for a parameter value (components by their description)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Configurable):
        return value.describe()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "fingerprint"):
        return {"data": value.fingerprint()}
    return f"<{type(value).__name__}>"


def param_table(cls: type[Configurable]) -> list[dict[str, str]]:
    """One row per parameter: name, type, default, accepted range, help (for listings and docs)."""
    return [
        {
            "name": p.name,
            "type": p.type_name(),
            "default": p.default_text(),
            "range": p.range_text(),
            "help": p.help,
        }
        for p in cls.declared()
    ]


def positive_int(name: str, default: int | None, help: str, optional: bool = False) -> Param:
    """An integer parameter ≥ 1."""
    return Param(name, default, help, types=(int,), low=1, optional=optional)


def flag(name: str, default: bool, help: str) -> Param:
    """A boolean parameter."""
    return Param(name, default, help, types=(bool,))


def strings(name: str, default: Sequence[str], help: str) -> Param:
    """A sequence of strings (given as a list or tuple; stored as a tuple)."""
    return Param(name, tuple(default), help, types=(tuple,), item_type=str)


def component(name: str, types: tuple[type, ...] | tuple[Any, ...], help: str, default: Any = None) -> Param:
    """An object-valued parameter (an attack, a model, a training config): library use only."""
    return Param(name, default, help, types=types, optional=True, cli=False)
