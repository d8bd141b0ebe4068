"""Finding, downloading and verifying raw dataset files.

A raw file is described by a :class:`RemoteFile` (its path relative to a data directory, the canonical URL and
its sha256). :func:`locate` looks for it in the data directories and, when it is nowhere, downloads it into the user cache.
An explicit ``data_dir`` (``--data-dir``, the spec's ``data_dir``) is the only place looked at: a run never
reads other data than the folder it names. Without one: ``$FEDSIM_DATA_DIR``, then the user cache.
Every problem with the input is reported as a :class:`DataError` that says what is missing and how to fix it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "FEDSIM_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 30.0


class DataError(Exception):
    """Bad or missing input data; the message names the file and says how to fix it."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to a data dir, e.g. "filmtrust/ratings.txt"
    url: str  # canonical public URL of the file, or of the zip archive holding it
    sha256: str  # of the file itself (not of the archive)
    member: str | None = None  # path inside the zip at `url`, when `url` is an archive


def cache_dir() -> Path:
    """The per-user download cache: $XDG_CACHE_HOME/fedsim or ~/.cache/fedsim."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fedsim"


def resolve_data_dirs(data_dir: str | Path | None) -> list[Path]:
    """Directories searched for raw files: an explicit data_dir alone; else $FEDSIM_DATA_DIR,
    then the user cache."""
    if data_dir is not None:
        return [Path(data_dir)]
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs.append(cache_dir())
    return dirs


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Files already checked in this process, as (resolved path, expected sha256): loaders run once per Flower
# client call, and re-hashing the same file every time would be wasted work.
_verified: set[tuple[str, str]] = set()


def _verify_local(path: Path, file: RemoteFile) -> None:
    key = (str(path.resolve()), file.sha256)
    if key in _verified:
        return
    actual = _sha256(path.read_bytes())
    if actual != file.sha256:
        raise DataError(
            f"{path} differs from the canonical {file.path}: expected sha256 {file.sha256}, got {actual}. "
            f"Replace it with the file from {file.url}"
            + (f" (member {file.member})" if file.member else "")
        )
    _verified.add(key)


def _fetch(url: str) -> bytes:
    """Download url; tests monkeypatch this to simulate having (or not having) a network."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def _download(file: RemoteFile, dest: Path) -> None:
    """Fetch file (extracting its zip member if any), check its sha256, then write it to dest atomically."""
    data = _fetch(file.url)
    if file.member is not None:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                data = archive.read(file.member)
        except (zipfile.BadZipFile, KeyError) as err:
            raise DataError(f"{file.url} is not a zip archive holding {file.member}: {err}") from err
    actual = _sha256(data)
    if actual != file.sha256:
        # Nothing is written, so a bad download never lands in the cache.
        raise DataError(
            f"downloaded {file.path} from {file.url} has sha256 {actual}, expected {file.sha256}; "
            f"the remote file changed: put the canonical {file.path} under a data dir yourself"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    partial.write_bytes(data)
    partial.replace(dest)


def locate(file: RemoteFile, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Path of a verified local copy of `file`, downloading it into the user cache when it is nowhere
    (never when `data_dir` is given: that folder is the only place looked at)."""
    dirs = resolve_data_dirs(data_dir)
    for directory in dirs:
        candidate = directory / file.path
        if candidate.is_file():
            _verify_local(candidate, file)
            return candidate
    searched = ", ".join(str(d) for d in dirs)
    fix = (
        f"put {Path(file.path).name} under <dir>/{Path(file.path).parent}/ for one of those directories "
        f"(set {ENV_VAR} or pass --data-dir / data_dir=<dir>); canonical URL: {file.url}"
        + (f" (member {file.member})" if file.member else "")
    )
    if data_dir is not None:
        raise DataError(
            f"{Path(data_dir) / file.path} does not exist: an explicit data dir is the only place searched "
            f"(not {ENV_VAR}, not the cache, no download). Fix: put {Path(file.path).name} there, or leave "
            f"--data-dir / data_dir empty to search {ENV_VAR} and the cache; canonical URL: {file.url}"
            + (f" (member {file.member})" if file.member else "")
        )
    if not download:
        raise DataError(f"{file.path} not found in: {searched}; downloading is disabled. Fix: {fix}")
    dest = cache_dir() / file.path
    try:
        _download(file, dest)
    except OSError as err:  # URLError, HTTPError and timeouts are OSErrors
        raise DataError(f"{file.path} not found in: {searched}, and downloading it failed ({err}). Fix: {fix}") from err
    _verified.add((str(dest.resolve()), file.sha256))
    return dest


def read_rows(
    path: Path, delimiter: str, num_columns: int, *, skip_lines: int = 0, encoding: str = "utf-8"
) -> list[list[str]]:
    """All non-empty rows of a delimited text file, each checked to have num_columns fields.

    Fields are stripped of surrounding spaces (Adult separates them by ", "); CRLF endings and quoted fields
    are handled by the csv module.
    """
    with path.open(newline="", encoding=encoding) as handle:
        lines = handle.readlines()[skip_lines:]
    rows = []
    for line_number, row in enumerate(csv.reader(lines, delimiter=delimiter), start=skip_lines + 1):
        if not row:
            continue
        if len(row) != num_columns:
            raise DataError(
                f"{path} line {line_number}: expected {num_columns} fields separated by {delimiter!r}, "
                f"got {len(row)}; is this the canonical file?"
            )
        rows.append([field.strip() for field in row])
    if not rows:
        raise DataError(f"{path} holds no data rows; is this the canonical file?")
    return rows
