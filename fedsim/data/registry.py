"""Named datasets: what each one is, the raw files it needs, and a cached loader."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from fedsim.data import recommendation, synthetic, tabular
from fedsim.data.files import ENV_VAR, DataError, RemoteFile, locate
from fedsim.data.interactions import Interactions
from fedsim.data.tabular import Tabular


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: Literal["recommendation", "classification"]  # what the methods and models must solve
    # Empty for the datasets whose loader takes no data_dir: generated ones, and a researcher's
    # own file (its loader takes the path).
    files: tuple[RemoteFile, ...]
    loader: Callable
    description: str
    # Loader arguments that spec keys set, beyond those every dataset of its task takes (seed,
    # protocol, ...; fedsim/federation.py): argument -> spec key.
    spec_keys: Mapping[str, str] = field(default_factory=dict)


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "filmtrust", "recommendation", (recommendation.FILMTRUST_RATINGS,), recommendation.load_filmtrust,
            "FilmTrust (LibRec): 1,227 users x 2,059 items after the >=5 filter; no timestamps, random hold-out",
        ),
        DatasetInfo(
            "amazon-video", "recommendation", (recommendation.AMAZON_VIDEO_RATINGS,),
            recommendation.load_amazon_video,
            "Amazon-Video as distributed by PFedRec (IJCAI-23), a derived subset of the McAuley Amazon reviews: "
            "8,072 users x 11,830 items, temporal leave-one-out",
        ),
        DatasetInfo(
            "lastfm-2k", "recommendation", (recommendation.LASTFM_USER_ARTISTS,), recommendation.load_lastfm_2k,
            "HetRec 2011 Last.fm-2K user-artist pairs (not the authors' processed file); random hold-out",
        ),
        DatasetInfo(
            "movielens-100k", "recommendation", (recommendation.ML100K_RATINGS, recommendation.ML100K_USERS),
            recommendation.load_movielens_100k,
            "MovieLens-100K: 943 users x 1,682 items, temporal leave-one-out, gender/age/occupation attributes",
        ),
        DatasetInfo(
            "synthetic-rec", "recommendation", (), synthetic.make_synthetic_interactions,
            "latent-factor implicit feedback with Zipf popularity and inferable gender/age attributes",
            {"num_users": "data.synthetic_users"},
        ),
        DatasetInfo(
            "interactions-file", "recommendation", (), recommendation.load_interactions_file,
            "your own interactions: a CSV or RecBole .inter file (data.path, data.format, "
            "data.user_column, ...), not checksummed",
            {"path": "data.path", "file_format": "data.format", "user_column": "data.user_column",
             "item_column": "data.item_column", "time_column": "data.time_column",
             "rating_column": "data.rating_column", "min_rating": "data.min_rating"},
        ),
        DatasetInfo(
            "adult", "classification", (tabular.ADULT_DATA, tabular.ADULT_TEST), tabular.load_adult,
            "UCI Adult, train+test pooled, '?' rows dropped (45,222 rows): income >50K, sensitive sex",
        ),
        DatasetInfo(
            "adult-hours", "classification", (tabular.ADULT_DATA, tabular.ADULT_TEST), tabular.load_adult_hours,
            "UCI Adult as a 3-class task: weekly hours <40 / 40 / >40, sensitive race (White / Black / other)",
        ),
        DatasetInfo(
            "compas", "classification", (tabular.COMPAS_SCORES,), tabular.load_compas,
            "ProPublica COMPAS, filtered to 6,172 rows: two-year recidivism, sensitive race (African-American)",
        ),
        DatasetInfo(
            "compas-scores", "classification", (tabular.COMPAS_SCORES,), tabular.load_compas_scores,
            "COMPAS rows of 'compas' with the FedFACT authors' columns: COMPAS's decile_score and score_text kept",
        ),
        DatasetInfo(
            "bank", "classification", (tabular.BANK,), tabular.load_bank,
            "UCI Bank Marketing bank.csv (4,521 rows): subscription, sensitive age group (<25 or >=60)",
        ),
        DatasetInfo(
            "synthetic-tabular", "classification", (), synthetic.make_synthetic_tabular,
            "Gaussian features with a group mean shift and group base rates 0.45 / 0.2",
        ),
        DatasetInfo(
            "tabular-file", "classification", (), tabular.load_tabular_file,
            "your own table: a CSV or RecBole atomic file with label and sensitive columns "
            "(data.path, data.label_column, data.sensitive_column), not checksummed",
            {"path": "data.path", "file_format": "data.format", "label_column": "data.label_column",
             "sensitive_column": "data.sensitive_column"},
        ),
    )
}  # fmt: skip


def load_dataset(name: str, data_dir: str | Path | None = None, **kwargs) -> Interactions | Tabular:
    """Load a dataset by name; results are cached per process, so callers get the same read-only object."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    # $FEDSIM_DATA_DIR is part of the key: changing it must not return a dataset read from the old directory.
    key_dir = None if data_dir is None else str(data_dir)
    return _load_cached(name, key_dir, os.environ.get(ENV_VAR), tuple(sorted(kwargs.items())))


@lru_cache(maxsize=32)
def _load_cached(
    name: str, data_dir: str | None, env_data_dir: str | None, kwargs: tuple[tuple[str, object], ...]
) -> Interactions | Tabular:
    info = DATASETS[name]
    if info.files:
        return info.loader(data_dir, **dict(kwargs))
    return info.loader(**dict(kwargs))


def data_files(name: str, data_dir: str | Path | None = None,
               path: str | Path = "") -> list[dict[str, str]]:
    """The raw files dataset `name` reads (none for generated ones): for each, its path relative to a
    data dir ("file"), the absolute path found with `data_dir` as :func:`load_dataset` finds it, and its
    sha256 (every file is checked against it when found, so this is the content that was read). A
    dataset read from your own file (spec data.path, `path`) has no checksum to check: its sha256
    is computed here, so the summary still says which content the run read."""
    if not DATASETS[name].files and path:
        own = Path(path).resolve()
        return [{"file": str(path), "path": str(own),
                 "sha256": hashlib.sha256(own.read_bytes()).hexdigest()}]
    return [{"file": file.path, "path": str(locate(file, data_dir, download=False).resolve()),
             "sha256": file.sha256} for file in DATASETS[name].files]
