"""Clients' private state on node-local disk, one version per client and round.

Private state (user embeddings and their optimiser moments, personal models, local duals) never
travels; it must still survive a crash of the simulation, whose in-memory node contexts die with
it. Each client's arrays are written to ``<root>/<run id>/<partition>/r<round>.safetensors``
after it trains in that round, atomically (temporary file, then rename). A client training in
round r reads the newest version from a round before r, so a run resumed from the checkpoint of
round R replays round R + 1 from exactly the state of round R, whatever a crashed attempt had
written. The last two versions are kept.

A version holds numbers only, in the safetensors layout
(https://github.com/huggingface/safetensors): an 8-byte little-endian header length, a JSON
header giving each array's dtype, shape and byte range, then the raw bytes. Reading one cannot
run code. That matters because ``state_dir`` may sit on storage every node shares, where the
pickles this store used to write would have run whatever anyone with write access planted
there, on every node. :func:`read_version` checks every field and raises
:class:`StateFileError`, naming the file, for one that does not parse; the client then fails
(counted and logged like any failing client) rather than starting afresh. Cross-device rounds
read and write thousands of these tiny files, so the format is read with ``json`` and
``np.frombuffer`` (no dependency), each distinct header parsed once per process: as fast as the
pickles were (``benchmarks/store_bench.py``, figures in benchmarks/README.md).

The run id (a fresh one per run, kept by the server's checkpoint) separates runs that share a
directory, so a new run never picks up an old run's embeddings.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

KEEP = 2
SUFFIX = ".safetensors"
# safetensors' dtype codes; its bytes are little-endian (so the arrays of a big-endian machine
# would be refused when written, not stored wrong).
DTYPES = {code: np.dtype(kind) for code, kind in (
    ("BOOL", "?"), ("U8", "u1"), ("I8", "i1"), ("U16", "<u2"), ("I16", "<i2"), ("U32", "<u4"),
    ("I32", "<i4"), ("U64", "<u8"), ("I64", "<i8"), ("F16", "<f2"), ("F32", "<f4"),
    ("F64", "<f8"))}
CODES = {dtype: code for code, dtype in DTYPES.items()}
LENGTH = struct.Struct("<Q")


class StateFileError(ValueError):
    """A file in the store that is not a version fedsim wrote (damaged or planted)."""


def write_version(path: Path | str, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` to `path` in the safetensors layout (numbers only)."""
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    for name, value in arrays.items():
        if value.dtype not in CODES:
            raise TypeError(f"private state {name!r} has dtype {value.dtype}: only numbers "
                            f"({', '.join(map(str, CODES))}) can be stored")
    # Widest items first, so that with the header padded to 8 bytes every array starts
    # aligned; the header keeps the caller's order, which reading gives back.
    placed = sorted(arrays, key=lambda name: -arrays[name].dtype.itemsize)
    begin, offset = {}, 0
    for name in placed:
        begin[name], offset = offset, offset + arrays[name].nbytes
    text = json.dumps({name: {"dtype": CODES[value.dtype], "shape": value.shape,
                              "data_offsets": [begin[name], begin[name] + value.nbytes]}
                       for name, value in arrays.items()}, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(b"".join([LENGTH.pack(len(text)), text,
                            *(arrays[name].tobytes() for name in placed)]))


def read_version(path: Path | str) -> dict[str, np.ndarray]:
    """The arrays of one saved version (a ``r<round>.safetensors`` file of a client's folder);
    StateFileError, naming the file, if it does not parse."""
    with open(path, "rb") as saved:
        data = bytearray(saved.read())  # writable arrays, as the clients' own were
    try:
        (size,) = LENGTH.unpack_from(data)
        start = LENGTH.size + size
        if start > len(data):
            raise ValueError(f"its header length ({size} bytes) exceeds the file "
                             f"({len(data)} bytes)")
        # numpy checks that each array's bytes lie within the file.
        return {name: np.frombuffer(data, dtype, count, start + begin).reshape(shape)
                for name, dtype, count, begin, shape in _layout(bytes(data[LENGTH.size:start]))}
    except (ValueError, TypeError, KeyError, RecursionError, struct.error) as err:
        raise StateFileError(f"{path} is not a private-state file fedsim can read: "
                             f"{err}") from None


@functools.lru_cache(maxsize=64)
def _layout(header: bytes) -> tuple[tuple[str, np.dtype, int, int, tuple[int, ...]], ...]:
    """(name, dtype, count, first byte, shape) of each array a header describes, checked.

    The clients of a run save the same arrays, so their headers are equal byte for byte and a
    process parses each once: a read then costs about what unpickling did."""
    entries = json.loads(header)
    if not isinstance(entries, dict):
        raise ValueError("its header is not a JSON object")
    layout = []
    for name, entry in entries.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"array {name!r} has dtype {entry['dtype']!r}, not a number type")
        shape, (begin, end) = entry["shape"], entry["data_offsets"]
        if not all(type(n) is int and n >= 0 for n in (*shape, begin, end)):
            raise ValueError(f"array {name!r}: shape and offsets must be non-negative integers")
        count = math.prod(shape)
        if end - begin != count * dtype.itemsize:
            raise ValueError(f"array {name!r}: shape {shape} does not fit bytes {begin}-{end}")
        layout.append((name, dtype, count, begin, tuple(shape)))
    return tuple(layout)


class PrivateStore:
    """The private arrays of one client, as seen from one round and phase.

    Parameters
    ----------
    root : Path or str
        Node-local directory (the spec's ``state_dir``).
    run_id : str
        Names the run's subdirectory.
    partition : int
        The client.
    visible_round : int
        Newest round whose state :meth:`load` may return.
    write_round : int or None
        Round :meth:`save` writes as; None where the phase must not change the state.
    """

    def __init__(self, root: Path | str, run_id: str, partition: int, visible_round: int,
                 write_round: int | None):
        # A plain string, joined with os.path: a node builds one store per client of a message
        # (2,018 in a node's Amazon-Video evaluation), and with pathlib's parsing building them
        # and naming their files cost more than listing their folders.
        self._folder = os.path.join(root, run_id, str(partition))
        self.visible_round = visible_round
        self.write_round = write_round

    @property
    def folder(self) -> Path:
        """This client's directory of versions."""
        return Path(self._folder)

    def _versions(self) -> list[tuple[int, str]]:
        """(round, file name) of every saved version, oldest first."""
        try:
            names = os.listdir(self._folder)
        except FileNotFoundError:
            return []
        return sorted((int(name[1:-len(SUFFIX)]), name) for name in names
                      if name.startswith("r") and name.endswith(SUFFIX)
                      and name[1:-len(SUFFIX)].isdigit())

    def load(self) -> dict[str, np.ndarray] | None:
        """The newest saved arrays from round <= visible_round, or None before the first save."""
        visible = [name for version, name in self._versions() if version <= self.visible_round]
        if not visible:
            return None
        return read_version(os.path.join(self._folder, visible[-1]))

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        if self.write_round is None:
            raise RuntimeError("this phase must not change a client's private state")
        versions = self._versions()
        if not versions:
            os.makedirs(self._folder, exist_ok=True)
        target = f"r{self.write_round:06d}{SUFFIX}"
        partial = os.path.join(self._folder, f".r{self.write_round:06d}.part")
        write_version(partial, arrays)
        os.replace(partial, os.path.join(self._folder, target))
        kept = sorted({*versions, (self.write_round, target)})
        for version, name in kept[:-KEEP]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._folder, name))
