"""Tabular classification data with a sensitive attribute, for the fairness experiments (FedFACT, FedFB)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from fedsim.data.files import DataError, RemoteFile, locate, read_rows
from fedsim.data.table_file import TableFile, ids, read_table

ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
ADULT_DATA = RemoteFile(
    path="adult/adult.data",
    url=ADULT_URL + "adult.data",
    sha256="5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
)
ADULT_TEST = RemoteFile(
    path="adult/adult.test",
    url=ADULT_URL + "adult.test",
    sha256="a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
)
COMPAS_SCORES = RemoteFile(
    path="compas/compas-scores-two-years.csv",
    url="https://raw.githubusercontent.com/propublica/compas-analysis/master/compas-scores-two-years.csv",
    sha256="c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d",
)
BANK = RemoteFile(
    path="bank-marketing/bank.csv",
    url="https://archive.ics.uci.edu/ml/machine-learning-databases/00222/bank.zip",
    sha256="dc8d576e9bda0f41ee891251bd84bab9a39ce576cba715aac08adc2374a01fde",
    member="bank.csv",
)

ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class Tabular:
    """Train/test split of a tabular task; arrays are read-only because loaded datasets are cached."""

    name: str
    x_train: np.ndarray  # float32 [n_train, d]
    y_train: np.ndarray  # int64 [n_train], class index
    s_train: np.ndarray  # int64 [n_train], sensitive group index (not a feature)
    x_test: np.ndarray
    y_test: np.ndarray
    s_test: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    group_names: tuple[str, ...]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]


def build_tabular(
    name: str,
    columns: dict[str, np.ndarray],
    categorical: Sequence[str],
    numerical: Sequence[str],
    label: tuple[np.ndarray, Sequence[str]],
    sensitive: tuple[np.ndarray, Sequence[str]],
    *,
    seed: int,
    test_fraction: float = 0.4,
) -> Tabular:
    """Split, encode and scale a table.

    label and sensitive are (int codes per row, names of the codes). The sensitive attribute is never a feature
    (attribute-blind model, as in FedFB / FedFACT): callers must not list it in categorical/numerical. The split is
    a seeded random permutation with round(test_fraction * n) test rows (not stratified). Encoders are fitted on the
    train split only: one-hot over the train categories (sorted; a category unseen in train encodes as all zeros)
    and min-max scaling of numericals to [0, 1] on train (test values may fall outside; constant columns become 0).
    Features are the numericals first, then the one-hot blocks, in the order given.
    """
    y, class_names = label
    s, group_names = sensitive
    n = len(y)
    permutation = np.random.default_rng(seed).permutation(n)
    num_test = round(test_fraction * n)
    test, train = permutation[:num_test], permutation[num_test:]
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"{name}: test_fraction={test_fraction} leaves an empty split of {n} rows")

    blocks, feature_names = [], []
    for column in numerical:
        values = columns[column].astype(np.float64)
        low, high = values[train].min(), values[train].max()
        blocks.append(((values - low) / (high - low if high > low else 1.0))[:, None])
        feature_names.append(column)
    for column in categorical:
        values = columns[column]
        categories = np.unique(values[train])
        blocks.append(values[:, None] == categories[None, :])
        feature_names.extend(f"{column}={category}" for category in categories)
    x = np.concatenate(blocks, axis=1).astype(np.float32)

    y, s = np.asarray(y, dtype=np.int64), np.asarray(s, dtype=np.int64)
    return Tabular(
        name=name,
        x_train=x[train],
        y_train=y[train],
        s_train=s[train],
        x_test=x[test],
        y_test=y[test],
        s_test=s[test],
        feature_names=tuple(feature_names),
        class_names=tuple(class_names),
        group_names=tuple(group_names),
    )


def _columns(header: Sequence[str], rows: list[list[str]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """String columns by name; a duplicated header name resolves to its first occurrence."""
    return {name: np.array([row[header.index(name)] for row in rows]) for name in names}


def _codes(values: np.ndarray, mapping: dict[str, int], source: str) -> np.ndarray:
    unknown = set(values.tolist()) - mapping.keys()
    if unknown:
        raise DataError(f"{source}: unexpected values {sorted(unknown)[:5]}, expected {sorted(mapping)}")
    return np.array([mapping[value] for value in values], dtype=np.int64)


def load_adult(data_dir: str | Path | None = None, *, seed: int = 0, test_fraction: float = 0.4) -> Tabular:
    """UCI Adult: label income >50K = 1, sensitive sex (Male = 0, Female = 1).

    adult.data and adult.test (whose banner line "|1x3 Cross validator" is skipped and whose labels lose their
    trailing ".") are pooled and re-split 60/40 by seed, the FedFACT protocol, not the official split. Rows with
    a missing value ("?") are dropped: 48,842 -> 45,222 rows. fnlwgt (a census sampling weight, not a property of
    the person) and education (duplicated by education-num) are dropped.
    """
    numerical = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
    categorical = ["workclass", "marital-status", "occupation", "relationship", "race", "native-country"]
    columns = _adult_columns(data_dir, numerical + categorical + ["sex"])
    return build_tabular(
        "adult",
        columns,
        categorical,
        numerical,
        label=(_codes(columns["income"], {"<=50K": 0, ">50K": 1}, ADULT_DATA.path), ("<=50K", ">50K")),
        sensitive=(_codes(columns["sex"], {"Male": 0, "Female": 1}, ADULT_DATA.path), ("Male", "Female")),
        seed=seed,
        test_fraction=test_fraction,
    )


def _adult_columns(data_dir: str | Path | None, names: Sequence[str]) -> dict[str, np.ndarray]:
    """String columns `names` (and "income", its trailing "." removed) of the pooled Adult rows.

    adult.data and adult.test (banner line skipped) are pooled; rows with a missing value ("?") are dropped.
    """
    rows = read_rows(locate(ADULT_DATA, data_dir), ",", len(ADULT_COLUMNS))
    rows += read_rows(locate(ADULT_TEST, data_dir), ",", len(ADULT_COLUMNS), skip_lines=1)
    rows = [row for row in rows if "?" not in row]
    columns = _columns(ADULT_COLUMNS, rows, [*names, "income"])
    columns["income"] = np.char.rstrip(columns["income"], ".")
    return columns


# Race groups of adult-hours: the three smallest census categories are pooled into one group.
ADULT_RACE_GROUPS = {"White": 0, "Black": 1, "Asian-Pac-Islander": 2, "Amer-Indian-Eskimo": 2, "Other": 2}
ADULT_HOURS_CLASSES = ("<40", "40", ">40")


def load_adult_hours(data_dir: str | Path | None = None, *, seed: int = 0, test_fraction: float = 0.4) -> Tabular:
    """UCI Adult as a 3-class, 3-group task: weekly working hours by race (our variant, for multi-class fairness).

    Label: hours-per-week < 40 (part time, class 0), = 40 (class 1), > 40 (class 2). Sensitive attribute: race,
    White = 0, Black = 1, and the census categories Asian-Pac-Islander, Amer-Indian-Eskimo and Other pooled as
    group 2 (alone they hold 1,303, 435 and 353 rows, too few to split over clients). Rows, pooling and the 60/40
    split are those of :func:`load_adult` (45,222 rows). Group sizes: 38,903 / 4,228 / 2,091 rows; classes:
    10,087 / 21,358 / 13,777 rows. Base rates differ by group: >40 hours for 32.5% of White, 15.5% of Black and
    22.4% of group-2 rows, so a score model inherits a multi-class demographic-parity gap. hours-per-week (the
    label) and race (sensitive) are not features; income (">50K", the usual Adult label) and sex are.
    """
    numerical = ["age", "education-num", "capital-gain", "capital-loss"]
    categorical = ["workclass", "marital-status", "occupation", "relationship", "sex", "native-country", "income"]
    columns = _adult_columns(data_dir, [*numerical, *categorical, "race", "hours-per-week"])
    try:
        hours = columns["hours-per-week"].astype(np.int64)
    except ValueError as err:
        raise DataError(f"{ADULT_DATA.path}: hours-per-week must hold integers ({err})") from None
    return build_tabular(
        "adult-hours",
        columns,
        categorical,
        numerical,
        label=(np.digitize(hours, [40, 41]), ADULT_HOURS_CLASSES),
        sensitive=(_codes(columns["race"], ADULT_RACE_GROUPS, ADULT_DATA.path), ("White", "Black", "Other")),
        seed=seed,
        test_fraction=test_fraction,
    )


def load_compas(data_dir: str | Path | None = None, *, seed: int = 0, test_fraction: float = 0.4) -> Tabular:
    """ProPublica COMPAS two-year recidivism: label two_year_recid, sensitive race (African-American = 1).

    ProPublica's filter (days_b_screening_arrest in [-30, 30], a missing value failing it; is_recid != -1;
    c_charge_degree != "O"; score_text != "N/A") keeps 6,172 of 7,214 rows. Only the columns used are read:
    the file also holds names and dates of birth, which are never touched. Features: age, prior and juvenile
    counts, charge degree, sex, age category; not COMPAS's own risk scores (decile_score, score_text): see
    :func:`load_compas_scores` for the FedFACT authors' feature set, which has them.
    """
    return _load_compas(
        "compas",
        data_dir,
        numerical=["age", "priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count"],
        categorical=["c_charge_degree", "sex", "age_cat"],
        seed=seed,
        test_fraction=test_fraction,
    )


def load_compas_scores(data_dir: str | Path | None = None, *, seed: int = 0, test_fraction: float = 0.4) -> Tabular:
    """COMPAS with the FedFACT authors' columns, COMPAS's risk score among them (the paper protocol).

    Rows, label, sensitive attribute and split are those of :func:`load_compas`. Features are the columns of the
    authors' pipeline (LoGoFair's ``compas_1_data_processing``, which FedFACT's data pipeline shares): age,
    priors_count, decile_score and days_b_screening_arrest (numerical), c_charge_degree, sex and score_text
    (Low / Medium / High; categorical); no juvenile counts, no age category. Encoded as fedsim encodes every table
    (min-max numericals, one-hot categoricals fitted on train), where the authors bucket age, decile_score and
    priors_count at percentiles (decile and priors as cumulative indicators) and leave days_b_screening_arrest
    unscaled. decile_score and score_text are COMPAS's own prediction of recidivism, an input the "compas" set
    leaves out.
    """
    return _load_compas(
        "compas-scores",
        data_dir,
        numerical=["age", "priors_count", "decile_score", "days_b_screening_arrest"],
        categorical=["c_charge_degree", "sex", "score_text"],
        seed=seed,
        test_fraction=test_fraction,
    )


def _load_compas(
    name: str,
    data_dir: str | Path | None,
    *,
    numerical: list[str],
    categorical: list[str],
    seed: int,
    test_fraction: float,
) -> Tabular:
    """The filtered COMPAS rows with the given feature columns (see :func:`load_compas`)."""
    path = locate(COMPAS_SCORES, data_dir)
    header, *rows = read_rows(path, ",", 53)
    filters = ["days_b_screening_arrest", "is_recid", "score_text"]
    names = list(dict.fromkeys(filters + numerical + categorical + ["race", "two_year_recid"]))
    columns = _columns(header, rows, names)
    days = columns["days_b_screening_arrest"]
    days = np.where(days == "", "nan", days).astype(np.float64)  # nan fails the range test below
    keep = (
        (np.abs(days) <= 30)
        & (columns["is_recid"] != "-1")
        & (columns["c_charge_degree"] != "O")
        & (columns["score_text"] != "N/A")
    )
    columns = {name: values[keep] for name, values in columns.items()}
    return build_tabular(
        name,
        columns,
        categorical,
        numerical,
        label=(_codes(columns["two_year_recid"], {"0": 0, "1": 1}, path.name), ("no-recid", "recid")),
        sensitive=((columns["race"] == "African-American").astype(np.int64), ("Other", "African-American")),
        seed=seed,
        test_fraction=test_fraction,
    )


def load_bank(data_dir: str | Path | None = None, *, seed: int = 0, test_fraction: float = 0.4) -> Tabular:
    """UCI Bank Marketing bank.csv (the official 10% sample, 4,521 rows): label y (yes = 1).

    Sensitive attribute: age group, 25 <= age < 60 -> 0 ("25-59"), otherwise 1 ("<25 or >=60"), the FairFed /
    FedFB convention; age itself is removed from the features. duration (call length, only known after the call)
    is kept as in FedFB, although UCI notes it leaks the outcome.
    """
    path = locate(BANK, data_dir)
    header, *rows = read_rows(path, ";", 17)
    numerical = ["balance", "day", "duration", "campaign", "pdays", "previous"]
    categorical = ["job", "marital", "education", "default", "housing", "loan", "contact", "month", "poutcome"]
    columns = _columns(header, rows, numerical + categorical + ["age", "y"])
    age = columns["age"].astype(np.int64)
    return build_tabular(
        "bank",
        columns,
        categorical,
        numerical,
        label=(_codes(columns["y"], {"no": 0, "yes": 1}, path.name), ("no", "yes")),
        sensitive=(((age < 25) | (age >= 60)).astype(np.int64), ("25-59", "<25 or >=60")),
        seed=seed,
        test_fraction=test_fraction,
    )


def load_tabular_file(
    path: str | Path,
    *,
    file_format: str = "csv",
    label_column: str = "label",
    sensitive_column: str = "sensitive",
    seed: int = 0,
    test_fraction: float = 0.4,
) -> Tabular:
    """A researcher's own table in a CSV or RecBole atomic file
    (:func:`~fedsim.data.table_file.read_table`), prepared as every named table
    (:func:`build_tabular`: split by seed, one-hot and min-max fitted on train).

    Every column other than the label and the sensitive one is a feature: numerical when it holds
    numbers (an atomic file's float columns; a CSV column whose every value parses as one), else
    categorical, each kind in file order. Classes and groups are numbered in sorted order of their
    values (as numbers when all are integers): binary "0"/"1", "no"/"yes" or "<=50K"/">50K"
    make the second the positive class 1.
    """
    table = read_table(path, file_format)
    label = _sorted_codes(table, label_column, "data.label_column")
    sensitive = _sorted_codes(table, sensitive_column, "data.sensitive_column")
    features = [name for name in table.names if name not in (label_column, sensitive_column)]
    if not features:
        raise DataError(f"{path}: no feature column besides data.label_column = {label_column!r} "
                        f"and data.sensitive_column = {sensitive_column!r}")
    numerical = [name for name in features if table.is_number(name, "a feature")]
    categorical = [name for name in features if name not in numerical]
    columns = {name: table.column(name, "a feature") for name in features}
    return build_tabular(str(path), columns, categorical, numerical, label=label,
                         sensitive=sensitive, seed=seed, test_fraction=test_fraction)


def _sorted_codes(table: TableFile, name: str, key: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """(code per row, names of the codes) of column `name`: its distinct values in sorted order."""
    names, codes = np.unique(ids(table.column(name, key)), return_inverse=True)
    if len(names) < 2:
        raise DataError(f"{table.path}: {key} = {name!r} holds one value ({str(names[0])!r}); expected "
                        "at least two")
    return codes, tuple(str(value) for value in names)
