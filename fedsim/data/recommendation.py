"""Loaders of the real recommendation datasets and of a researcher's own interactions file (see
build_interactions for the shared preprocessing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsim.data.files import DataError, RemoteFile, locate, read_rows
from fedsim.data.interactions import Interactions, build_interactions
from fedsim.data.table_file import ids, read_table

FILMTRUST_RATINGS = RemoteFile(
    path="filmtrust/ratings.txt",
    url="https://guoguibing.github.io/librec/datasets/filmtrust.zip",
    sha256="241167424e24d588e8871d68641e94ead98d5b3a4f0db01ef3181a74ad35e7a1",
    member="ratings.txt",
)
AMAZON_VIDEO_RATINGS = RemoteFile(
    path="amazon-video/ratings.dat",
    url="https://raw.githubusercontent.com/Zhangcx19/IJCAI-23-PFedRec/abc2380/data/amazon/ratings.dat",
    sha256="a1292e4a4dba6c37be6ae5dc83d4404af96bf3eace4c8954e2f4e8360a3cdd76",
)
LASTFM_USER_ARTISTS = RemoteFile(
    path="lastfm-2k/user_artists.dat",
    url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
    sha256="001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b",
    member="user_artists.dat",
)
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_RATINGS = RemoteFile(
    path="movielens-100k/u.data",
    url=ML100K_URL,
    sha256="06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    member="ml-100k/u.data",
)
ML100K_USERS = RemoteFile(
    path="movielens-100k/u.user",
    url=ML100K_URL,
    sha256="f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    member="ml-100k/u.user",
)

# Upper bounds (exclusive) of the MovieLens age groups 0..2; group 3 is 45 and over.
ML100K_AGE_BOUNDS = (25, 35, 45)


def _random_timestamps(num_rows: int, seed: int) -> np.ndarray:
    """A random order of the rows, for datasets without time: leave-one-out becomes a random hold-out."""
    return np.random.default_rng(seed).permutation(num_rows)


def load_filmtrust(
    data_dir: str | Path | None = None, *, protocol: str = "clean", num_negatives: int = 99, seed: int = 42
) -> Interactions:
    """FilmTrust ("uid iid rating", no timestamps).

    Like the FedRecGEL authors, rows get random timestamps (seeded by `seed`), so the held-out items are a
    random hold-out, not the latest ones, and they change with the seed. The file has 3 duplicated pairs: the
    "clean" protocol merges them, the authors' ("fedrecgel") keeps them.
    """
    rows = read_rows(locate(FILMTRUST_RATINGS, data_dir), " ", 3)
    users, items, _ = zip(*rows)
    return build_interactions(
        "filmtrust",
        np.array(users, dtype=np.int64),
        np.array(items, dtype=np.int64),
        _random_timestamps(len(rows), seed),
        protocol=protocol,
        num_negatives=num_negatives,
        seed=seed,
    )


def load_amazon_video(
    data_dir: str | Path | None = None, *, protocol: str = "clean", num_negatives: int = 99, seed: int = 42
) -> Interactions:
    """Amazon-Video, the PFedRec (IJCAI-23) subset: "reviewerID,asin,rating,unix_time"; real timestamps."""
    rows = read_rows(locate(AMAZON_VIDEO_RATINGS, data_dir), ",", 4)
    users, items, _, times = zip(*rows)
    return build_interactions(
        "amazon-video",
        np.array(users),
        np.array(items),
        np.array(times, dtype=np.int64),
        protocol=protocol,
        num_negatives=num_negatives,
        seed=seed,
    )


def load_lastfm_2k(
    data_dir: str | Path | None = None, *, protocol: str = "clean", num_negatives: int = 99, seed: int = 42
) -> Interactions:
    """HetRec Last.fm-2K user_artists.dat ("userID artistID weight", tab-separated, header).

    Every listened (user, artist) pair is a positive; the listening count is ignored. The file has no time, so,
    as for FilmTrust, rows get random timestamps seeded by `seed` and the hold-out is random. Holding out the
    most-listened artist instead would make the test item the easiest one to predict. This is not the
    authors' Lastfm-2K (PFedRec's processed file, 1,600 users / 12,454 items, is not public): numbers are not
    comparable with theirs.
    """
    rows = read_rows(locate(LASTFM_USER_ARTISTS, data_dir), "\t", 3)
    if rows[0] != ["userID", "artistID", "weight"]:
        raise DataError(f"{LASTFM_USER_ARTISTS.path}: expected the header 'userID artistID weight', got {rows[0]}")
    users, items, _ = zip(*rows[1:])
    return build_interactions(
        "lastfm-2k",
        np.array(users, dtype=np.int64),
        np.array(items, dtype=np.int64),
        _random_timestamps(len(users), seed),
        protocol=protocol,
        num_negatives=num_negatives,
        seed=seed,
    )


def load_movielens_100k(
    data_dir: str | Path | None = None, *, protocol: str = "clean", num_negatives: int = 99, seed: int = 42
) -> Interactions:
    """MovieLens-100K u.data ("user item rating timestamp", tab-separated) with u.user demographics.

    user_attributes: "gender" (0 = M, 1 = F), "age_group" (0: <25, 1: 25-34, 2: 35-44, 3: >=45),
    "age_30" (0: <30, 1: >=30; the binary age target of the attribute-inference attack) and
    "occupation" (index in the sorted occupation names found in u.user).
    """
    rows = read_rows(locate(ML100K_RATINGS, data_dir), "\t", 4)
    users, items, _, times = zip(*rows)
    profiles = read_rows(locate(ML100K_USERS, data_dir), "|", 5, encoding="latin-1")
    occupations = sorted({profile[3] for profile in profiles})
    genders = {"M": 0, "F": 1}
    attributes: dict[str, dict[int, int]] = {"gender": {}, "age_group": {}, "age_30": {},
                                             "occupation": {}}
    for user_id, age, gender, occupation, _zip in profiles:
        if gender not in genders:
            raise DataError(f"{ML100K_USERS.path}: user {user_id} has gender {gender!r}, expected M or F")
        attributes["gender"][int(user_id)] = genders[gender]
        attributes["age_group"][int(user_id)] = int(np.searchsorted(ML100K_AGE_BOUNDS, int(age), side="right"))
        attributes["age_30"][int(user_id)] = int(int(age) >= 30)
        attributes["occupation"][int(user_id)] = occupations.index(occupation)
    return build_interactions(
        "movielens-100k",
        np.array(users, dtype=np.int64),
        np.array(items, dtype=np.int64),
        np.array(times, dtype=np.int64),
        protocol=protocol,
        num_negatives=num_negatives,
        seed=seed,
        user_attributes=attributes,
    )


def load_interactions_file(
    path: str | Path,
    *,
    file_format: str = "csv",
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str = "timestamp",
    rating_column: str = "",
    min_rating: float = 0.0,
    protocol: str = "clean",
    num_negatives: int = 99,
    seed: int = 42,
) -> Interactions:
    """A researcher's own interactions, one row per (user, item) event, in a CSV or RecBole
    ``.inter`` file (:func:`~fedsim.data.table_file.read_table`), through the preprocessing and
    protocol of every named dataset (:func:`build_interactions`).

    Ids written as integers sort as numbers, others as text. Without a time column
    (``time_column=""``) a user's rows count in file order: the last is the test item. With a
    rating column, rows rated below ``min_rating`` are dropped first; the others are positives.
    """
    table = read_table(path, file_format)
    users = ids(table.column(user_column, "data.user_column"))
    items = ids(table.column(item_column, "data.item_column"))
    times = (table.numbers(time_column, "data.time_column") if time_column
             else np.arange(len(table.rows)))
    if rating_column:
        kept = table.numbers(rating_column, "data.rating_column") >= min_rating
        if not kept.any():
            raise DataError(f"{path}: no row has {rating_column} >= data.min_rating = {min_rating}")
        users, items, times = users[kept], items[kept], times[kept]
    return build_interactions(str(path), users, items, times, protocol=protocol,
                              num_negatives=num_negatives, seed=seed)
