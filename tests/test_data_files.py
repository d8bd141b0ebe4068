"""File resolution, downloads (simulated, no network) and input errors."""

from __future__ import annotations

import io
import urllib.error
import zipfile
from pathlib import Path

import pytest

from fedsim.data import DATASETS, DataError, load_dataset, resolve_data_dirs
from fedsim.data import files
from fedsim.data.recommendation import FILMTRUST_RATINGS


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """No FEDSIM_DATA_DIR, an empty user cache under tmp_path, and every download failing."""

    def fail(url):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.delenv(files.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(files, "_fetch", fail)


def test_resolve_order(monkeypatch, tmp_path):
    monkeypatch.setenv(files.ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dirs(None) == [tmp_path / "env", tmp_path / "xdg/fedsim"]
    assert resolve_data_dirs(tmp_path / "explicit") == [tmp_path / "explicit"]  # alone
    monkeypatch.delenv(files.ENV_VAR)
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dirs(None) == [Path.home() / ".cache/fedsim"]


def test_registry_names():
    assert list(DATASETS) == [
        "filmtrust", "amazon-video", "lastfm-2k", "movielens-100k", "synthetic-rec",
        "interactions-file", "adult", "adult-hours", "compas", "compas-scores", "bank",
        "synthetic-tabular", "tabular-file",
    ]  # fmt: skip
    with pytest.raises(DataError, match="known datasets: filmtrust"):
        load_dataset("movielens-1m")


def test_missing_file_without_network(no_network, tmp_path, monkeypatch):
    monkeypatch.setenv(files.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError) as error:
        load_dataset("filmtrust")
    message = str(error.value)
    assert "filmtrust/ratings.txt" in message and files.ENV_VAR in message
    assert str(tmp_path / "env") in message and str(tmp_path / "cache" / "fedsim") in message
    assert FILMTRUST_RATINGS.url in message and "network unreachable" in message


def test_an_explicit_data_dir_is_the_only_place_looked_at(tmp_path, monkeypatch, data_dir):
    """The file is in FEDSIM_DATA_DIR and could be downloaded, but the folder named lacks it."""
    monkeypatch.setenv(files.ENV_VAR, str(data_dir))
    fetched = []
    monkeypatch.setattr(files, "_fetch", fetched.append)
    with pytest.raises(DataError) as error:
        load_dataset("filmtrust", tmp_path / "empty")
    message = str(error.value)
    assert str(tmp_path / "empty" / FILMTRUST_RATINGS.path) in message
    assert "only place searched" in message and FILMTRUST_RATINGS.url in message
    assert not fetched
    assert load_dataset("filmtrust").num_users == 1227  # without one, FEDSIM_DATA_DIR serves


def test_data_files_names_each_file_read_with_its_sha256(data_dir):
    from fedsim.data import data_files

    found = data_files("movielens-100k", data_dir)
    assert [f["file"] for f in found] == ["movielens-100k/u.data", "movielens-100k/u.user"]
    assert all(Path(f["path"]) == (data_dir / f["file"]).resolve() for f in found)
    assert all(len(f["sha256"]) == 64 for f in found) and data_files("synthetic-rec") == []


def test_download_disabled(no_network, tmp_path):
    with pytest.raises(DataError, match="downloading is disabled"):
        files.locate(FILMTRUST_RATINGS, download=False)


def test_corrupted_copy(tmp_path, data_dir):
    corrupted = tmp_path / FILMTRUST_RATINGS.path
    corrupted.parent.mkdir(parents=True)
    corrupted.write_bytes((data_dir / FILMTRUST_RATINGS.path).read_bytes() + b"1 1 1\n")
    with pytest.raises(DataError, match=f"differs from the canonical.*expected sha256 {FILMTRUST_RATINGS.sha256}"):
        files.locate(FILMTRUST_RATINGS, tmp_path)


def zipped(member: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, data)
    return buffer.getvalue()


def test_download_extracts_and_verifies(no_network, monkeypatch, tmp_path, data_dir):
    real = (data_dir / FILMTRUST_RATINGS.path).read_bytes()
    monkeypatch.setattr(files, "_fetch", lambda url: zipped(FILMTRUST_RATINGS.member, real))
    path = files.locate(FILMTRUST_RATINGS)
    assert path == tmp_path / "cache/fedsim" / FILMTRUST_RATINGS.path and path.read_bytes() == real


def test_bad_download_is_not_kept(no_network, monkeypatch, tmp_path):
    monkeypatch.setattr(files, "_fetch", lambda url: zipped(FILMTRUST_RATINGS.member, b"1 1 1\n"))
    with pytest.raises(DataError, match="remote file changed"):
        files.locate(FILMTRUST_RATINGS)
    assert not (tmp_path / "cache/fedsim" / FILMTRUST_RATINGS.path).exists()


def test_malformed_rows(tmp_path):
    path = tmp_path / "ratings.txt"
    path.write_text("1 2 3\n1 2\n")
    with pytest.raises(DataError, match=r"ratings.txt line 2: expected 3 fields"):
        files.read_rows(path, " ", 3)
