"""A researcher's own table: a CSV with a header row, or a RecBole atomic file (``.inter``).

Unlike the named datasets' files, these have no canonical copy, so nothing is checksummed; every
problem is a :class:`DataError` naming the file, the spec key and what the file holds instead.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.data.files import DataError

FORMATS = ("csv", "inter")
# RecBole's field types (the part after ":" in an atomic file's header). Sequence fields hold
# several space-separated values in one field, which no column of fedsim's can use.
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


@dataclass(frozen=True)
class TableFile:
    """The header and the rows (as text) of one file; `types` has each column's RecBole type for
    an atomic file and is empty for a CSV, whose number columns are found by parsing."""

    path: Path
    names: tuple[str, ...]
    types: dict[str, str]
    rows: list[list[str]]

    def column(self, name: str, key: str) -> np.ndarray:
        """The values of column `name` (named by spec key `key`) as text, none of them empty."""
        if name not in self.names:
            raise DataError(f"{self.path}: {key} = {name!r} is not a column of the file; its "
                            f"columns are {', '.join(map(repr, self.names))}")
        if self.types.get(name, "").endswith("_seq"):
            raise DataError(f"{self.path}: {key} = {name!r} is a RecBole {self.types[name]} "
                            "column (several values per row); expected a token or float column")
        index = self.names.index(name)
        values = np.array([row[index] for row in self.rows])
        empty = np.flatnonzero(values == "")
        if empty.size:
            raise DataError(f"{self.path} line {empty[0] + 2}: column {name!r} ({key}) is empty; "
                            "fill in or drop such rows")
        return values

    def is_number(self, name: str, key: str) -> bool:
        """Whether column `name` (what `key` says it is) holds numbers: its RecBole type says
        so, or (CSV) every value parses as one."""
        if self.types:
            return self.types[name] == "float"
        try:
            self.column(name, key).astype(np.float64)
        except ValueError:
            return False
        return True

    def numbers(self, name: str, key: str) -> np.ndarray:
        """Column `name` as int64 when every value is written as an integer (exact past 2**53,
        e.g. nanosecond times, which float64 would merge), else float64; a value that is not a
        number is an error naming it."""
        values = self.column(name, key)
        integers = ids(values)
        if integers.dtype == np.int64:
            return integers
        try:
            return values.astype(np.float64)
        except ValueError:
            for line, value in enumerate(values, start=2):
                try:
                    float(value)
                except ValueError:
                    raise DataError(f"{self.path} line {line}: {key} = {name!r} must hold "
                                    f"numbers, got {str(value)!r}") from None
            raise


def read_table(path: str | Path, file_format: str) -> TableFile:
    """Read `path` as `file_format`: "csv" (comma-separated, quoted fields allowed, first row the
    column names) or "inter" (RecBole atomic file: tab-separated, no quoting, header fields
    ``name:type`` such as ``user_id:token``). Fields are stripped of surrounding spaces."""
    path = Path(path)
    if file_format not in FORMATS:
        raise DataError(f"{path}: data.format = {file_format!r}; expected one of "
                        f"{', '.join(map(repr, FORMATS))}")
    if not path.is_file():
        raise DataError(f"data.path = {str(path)!r}: no such file (relative paths are read from "
                        f"the current directory, {Path.cwd()})")
    dialect = {"delimiter": ","} if file_format == "csv" else {"delimiter": "\t",
                                                              "quoting": csv.QUOTE_NONE}
    with path.open(newline="", encoding="utf-8") as handle:
        lines = [[field.strip() for field in row] for row in csv.reader(handle, **dialect)]
    if len(lines) < 2:
        raise DataError(f"{path} holds no data rows: expected a header row, then one row per "
                        "record")
    header, *rows = lines
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path} line {line}: {len(row)} fields, expected {len(header)} as in "
                            f"the header ({', '.join(header)}); is data.format = "
                            f"{file_format!r} right?")
    if file_format == "csv":
        return TableFile(path, tuple(header), {}, rows)
    names, types = [], {}
    for field in header:
        name, _, kind = field.partition(":")
        if kind not in RECBOLE_TYPES:
            raise DataError(f"{path}: header field {field!r} is not name:type with a RecBole type "
                            f"({', '.join(RECBOLE_TYPES)}); is data.format = 'inter' right?")
        names.append(name)
        types[name] = kind
    return TableFile(path, tuple(names), types, rows)


def ids(values: np.ndarray) -> np.ndarray:
    """Ids as int64 when every one is written as an integer (so they sort as numbers: "9" before
    "10", as the named datasets' integer ids), else as the text. "007" stays text: as a number it
    would merge with "7"."""
    try:
        numbers = values.astype(np.int64)
    except ValueError:
        return values
    return numbers if (numbers.astype(str) == values).all() else values
