"""A spec key's declaration (default, meaning, allowed values) and the error a bad value raises.

Light on purpose (standard library only): fedsim/spec.py builds its table from these, and the
method descriptors (fedsim/methods/) declare their keys with them without importing torch or
Flower.
"""

from __future__ import annotations

from dataclasses import dataclass


class SpecError(ValueError):
    """A spec key is unknown, or its value has the wrong type or is out of range."""


@dataclass(frozen=True)
class Key:
    """One spec key: its default (which also fixes its type), meaning and allowed values."""

    default: bool | int | float | str
    doc: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the value must be strictly greater than `low`
    # Words accepted beside numbers (nodes = "auto"); `number` is then the numbers' type.
    words: tuple[str, ...] = ()
    number: type | None = None

    @property
    def kind(self) -> type:
        return self.number or type(self.default)

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = {"bool": "a bool", "int": "an int", "float": "a float", "str": "a string"}[
            self.kind.__name__]
        kind = "".join(f"{w!r} or " for w in self.words) + kind
        if self.low is None and self.high is None:
            return kind
        lo = "" if self.low is None else ("(" if self.low_open else "[") + f"{self.low:g}"
        hi = "" if self.high is None else f"{self.high:g}]"
        if self.low is not None and self.high is not None:
            return f"{kind} in {lo}, {hi}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return f"{kind} <= {self.high:g}"
