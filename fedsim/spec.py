"""Experiment specs: the one place where every run setting is declared, documented and checked.

A spec is a TOML file of scalars: top-level keys name the experiment (method, dataset, ...),
and each table holds the settings of one part, e.g. ``[fedncf] server_lr = 0.001``. Flattened,
the table keys read ``fedncf.server_lr``; that flat form is what ``--set key=value`` takes, what
Flower's ``--run-config`` passes to the ServerApp, and what ``[tool.flwr.app.config]`` in
pyproject.toml declares (a test keeps that table equal to :data:`SCHEMA`'s defaults, because
``flwr run`` refuses overrides of keys it does not declare).

The key table is the core keys below plus each method's own keys, declared in its descriptor
(fedsim/methods/). ``docs/spec.md`` and pyproject.toml's ``[tool.flwr.app.config]`` are generated
from :data:`SCHEMA` (``python -m fedsim.spec --write``; tests/test_spec.py checks both), so the
docs, ``flwr run``'s declared keys and the checks cannot drift apart.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Mapping

from fedsim.data import DATASETS as DATASET_INFO
from fedsim.keys import Key, SpecError
from fedsim.methods import KEYS as METHOD_KEYS
from fedsim.methods import METHODS as METHOD_DESCRIPTORS
from fedsim.partition import PARTITIONERS as PARTITIONER_FUNCTIONS


METHODS = tuple(METHOD_DESCRIPTORS)
DATASETS = tuple(DATASET_INFO)
PARTITIONERS = tuple(PARTITIONER_FUNCTIONS)
MODEL_TASKS = {"neumf": "recommendation", "mf": "recommendation", "logreg": "classification",
               "mlp": "classification", "bprmf": "recommendation", "lightgcn": "recommendation",
               "sasrec": "recommendation"}
MODELS = tuple(MODEL_TASKS)
SCHEMA: dict[str, Key] = {
    # --- what runs ---------------------------------------------------------------------
    "method": Key("fedncf", "Federated method (server strategy + client objective).", METHODS),
    "dataset": Key("synthetic-rec", "Dataset name (see the README's dataset table).", DATASETS),
    "partitioner": Key("natural", "How rows (users for recommendation, samples for tabular "
                       "data) are split into clients.", PARTITIONERS),
    "model": Key("neumf", "Model: neumf or mf for recommendation (fedncf needs neumf, fedmf "
                 "needs mf, fedrecgel takes either; aurl takes bprmf or lightgcn; sasrec and eisam "
                 "take sasrec; raid takes mf, sized by central.dim); logreg or "
                 "mlp for tabular data.",
                 MODELS),
    "rounds": Key(20, "Number of federated rounds.", low=1, high=100_000),
    "seed": Key(0, "Training seed: model init, client sampling, negatives, local batches.",
                low=0, high=2**31 - 1),
    "fraction": Key(0.1, "Fraction of clients sampled for training each round "
                    "(floor(fraction * num_clients), at least 1).", low=0.0, high=1.0,
                    low_open=True),
    "num_clients": Key(0, "Number of clients. 0 = derived from the data (natural: one client per "
                       "partition.ids_per_client users; flwr:natural: one per user; single: "
                       "1). Required (> 0) for iid, dirichlet, dirichlet_capped, hetero, "
                       "flwr:iid and flwr:dirichlet.", low=0, high=1_000_000),
    "nodes": Key("auto", "Simulated Flower nodes hosting the clients (node i hosts the clients p "
                 "with p % nodes == i; capped at the number of clients). Results do not depend on "
                 "it beyond float rounding (README, How clients are simulated); speed does. "
                 "'auto' = twice the Ray actors of this machine (CPUs / ray.client_cpus), what "
                 "benchmarks/README.md found fastest; 0 = one node per client.", low=0,
                 high=1_000_000, words=("auto",), number=int),
    "cohort": Key(True, "Cohort mode: a node computes the FedNCF/FedMF/FedRecGEL clients of one "
                  "message in one vectorised pass (same per-client math, float-tolerance equal "
                  "to one by one). false = one client at a time (bit-reproducible across node "
                  "layouts)."),
    "node_sums": Key(True, "Node-level partial aggregation: where the method aggregates a phase "
                     "as a sum (FedAvg, FedNCF, FedMF, FedRecGEL training; the recommenders' "
                     "evaluation), each node checks its clients' replies and sends one sum of "
                     "the valid ones (fedsim/node_sums.py); equal to per-client replies to float "
                     "tolerance. false = one reply per client."),
    "eval_every": Key(1, "Evaluate every this many rounds (the last round is always evaluated).",
                      low=1, high=100_000),
    "eval_full_every": Key(1, "Recommendation: compute the full-ranking metrics at every this "
                           "many rounds' evaluation (and the last round's); the sampled ones at "
                           "every evaluation. Full ranking ranks the held-out item against "
                           "every item the user has not interacted with.",
                           low=1, high=100_000),
    "data_dir": Key("", "Directory holding the dataset folders, the only place looked at when set "
                    "(no fallback, no download); empty = FEDSIM_DATA_DIR, then the user cache "
                    "(~/.cache/fedsim), then a download into the cache."),
    "out_dir": Key("", "Where results go; empty = runs/<method>-<dataset>-<time> under the current "
                   "directory. Use an absolute path with `flwr run` (its cwd is the SuperLink's)."),
    "tensorboard": Key(False, "Also write each round's metrics as TensorBoard scalars to "
                       "<out_dir>/tensorboard (needs the tensorboard package: pip install "
                       "'fedsim[tensorboard]')."),
    # --- data preparation ----------------------------------------------------------------
    "data.seed": Key(42, "Seed of the data preparation: sampled test/validation negatives "
                     "(recommendation), train/test split (tabular). 42 as the FedRecGEL authors.",
                     low=0, high=2**31 - 1),
    "data.synthetic_users": Key(500, "synthetic-rec: number of users (scaling benchmarks).",
                                low=10, high=10_000_000),
    "data.protocol": Key("clean", "Recommendation: the split's rules (fedsim/data/interactions.py "
                         "PROTOCOLS). 'fedrecgel': the FedRecGEL authors' pipeline exactly "
                         "(duplicates kept, latest row = test with ties to the lowest item id, no "
                         "validation item); 'clean': duplicates merged and a validation item "
                         "(the second-latest row); 'recbole': RecBole's leave-one-out (ties in "
                         "file order, validation item, duplicates kept); 'pfedrec': the PFedRec "
                         "authors' split (ties to the row higher up the file, validation item, "
                         "duplicates kept, 3-row minimum, validation and test negatives from one "
                         "draw).",
                         ("clean", "fedrecgel", "recbole", "pfedrec")),
    "data.test_negatives": Key(99, "Recommendation: sampled negatives per test/validation item.",
                               low=1, high=10_000),
    "data.head_fraction": Key(0.2, "Recommendation: top fraction of items by training count that "
                              "form the head (the rest is the tail).", low=0.0, high=1.0,
                              low_open=True),
    "data.test_fraction": Key(0.4, "Tabular: share of rows in the test split.", low=0.0,
                              high=0.9, low_open=True),
    "data.path": Key("", "interactions-file, tabular-file: your file (relative to the current "
                     "directory; absolute with `flwr run`). Not checksummed."),
    "data.format": Key("csv", "interactions-file, tabular-file: 'csv' = comma-separated, first "
                       "row the column names; 'inter' = a RecBole atomic file (tab-separated, "
                       "header fields name:type such as user_id:token, timestamp:float).",
                       ("csv", "inter")),
    "data.user_column": Key("user_id", "interactions-file: the user id column."),
    "data.item_column": Key("item_id", "interactions-file: the item id column."),
    "data.time_column": Key("timestamp", "interactions-file: the time column (numbers); empty = "
                            "file order (a user's last row is the test item)."),
    "data.rating_column": Key("", "interactions-file: a rating column; rows rated below "
                              "data.min_rating are dropped. Empty = every row is a positive."),
    "data.min_rating": Key(0.0, "interactions-file: the lowest rating kept as a positive (with "
                           "data.rating_column)."),
    "data.label_column": Key("label", "tabular-file: the class column (classes numbered in "
                             "sorted order: the second of two is the positive class)."),
    "data.sensitive_column": Key("sensitive", "tabular-file: the sensitive attribute column "
                                 "(groups in sorted order; not a feature). Every other column "
                                 "is a feature: numerical if it holds numbers, else one-hot."),
    # --- partitioner parameters --------------------------------------------------------------
    "partition.ids_per_client": Key(1, "natural: users per client (flwr:natural: always 1).",
                                    low=1, high=1_000_000),
    "partition.column": Key("sensitive", "dirichlet, dirichlet_capped, flwr:dirichlet: column "
                            "whose values are split by Dirichlet proportions: 'sensitive' or "
                            "'label' (tabular), or a user attribute such as 'gender' "
                            "(recommendation)."),
    "partition.alpha": Key(0.5, "dirichlet, dirichlet_capped, flwr:dirichlet: concentration "
                           "of the Dirichlet (smaller = more skewed). The FedFACT authors' code "
                           "draws Dir(2 x their alpha): their 0.5 is 1.0 here.", low=0.0, high=1e6,
                           low_open=True),
    "partition.min_size": Key(10, "dirichlet, flwr:dirichlet: minimum rows per client "
                              "(redrawn until met; flwr:dirichlet: at most 10 times).",
                              low=0, high=1_000_000),
    "partition.min_per_value": Key(20, "dirichlet_capped: minimum rows of every value of "
                                   "partition.column per client, train and test rows together "
                                   "(redrawn until met; 20 = LoGoFair's sampler).", low=0,
                                   high=1_000_000),
    "partition.low": Key(0.2, "hetero: lowest per-client target A-Y correlation.", low=0.0,
                         high=1.0),
    "partition.high": Key(0.8, "hetero: highest per-client target A-Y correlation.", low=0.0,
                          high=1.0),
    # --- models ----------------------------------------------------------------------------
    "neumf.factor_dim": Key(32, "NeuMF: GMF embedding size; the MLP embedding size is "
                            "factor_dim * 2**(mlp_layers - 1).", low=1, high=4096),
    "neumf.mlp_layers": Key(3, "NeuMF: number of MLP tower layers.", low=1, high=8),
    "mf.factor_dim": Key(32, "MF: user and item embedding size.", low=1, high=4096),
    "mlp.hidden": Key(32, "mlp: hidden units of the one-hidden-layer classifier.", low=1,
                      high=100_000),
    "lightgcn.layers": Key(3, "LightGCN: propagation layers; the output is the mean of layers "
                           "0..layers (size: central.dim).", low=0, high=16),
    "sasrec.blocks": Key(2, "SASRec: self-attention blocks (size: central.dim).", low=1,
                         high=64),
    "sasrec.heads": Key(1, "SASRec: attention heads per block (central.dim must be divisible "
                        "by it).", low=1, high=64),
    "sasrec.max_len": Key(50, "SASRec: input length (the newest items of a sequence); training "
                          "windows hold this many targets.", low=1, high=100_000),
    "sasrec.dropout": Key(0.2, "SASRec: dropout on the embeddings, attention weights and "
                          "feed-forward layers.", low=0.0, high=0.9),
    # --- runtime -----------------------------------------------------------------------------
    "state_dir": Key("", "Node-local directory for the clients' private state (user embeddings, "
                     "personal models, local duals), one file per client and round; empty = "
                     "<out_dir>/client_state."),
    "round_timeout": Key(3600.0, "Seconds the server waits for replies in each phase of a round; "
                         "clients that have not replied by then count as failed.", low=0.0,
                         high=1e7, low_open=True),
    "min_replies": Key(0.0, "Fraction of the clients asked to train whose valid replies a round "
                       "needs to count; below it the model is left unchanged.", low=0.0,
                       high=1.0),
    "max_reply_mb": Key(64.0, "Largest array payload (MiB) accepted from one client in one "
                        "reply; larger replies are rejected.", low=0.0, high=1e6, low_open=True),
    "faults.rate": Key(0.0, "Injected failures: probability that a client fails a training "
                       "round (drawn from seed, client and round).", low=0.0, high=1.0),
    "faults.kind": Key("exception", "Injected failure: raise an exception, or straggle "
                       "(reply after faults.delay seconds).", ("exception", "straggler")),
    "faults.delay": Key(5.0, "Seconds an injected straggler waits before replying.", low=0.0,
                        high=1e6),
    "ray.client_cpus": Key(1, "CPUs reserved per simulated client actor (actors = CPUs / this).",
                           low=1, high=1024),
    "ray.address": Key("", "Address of an existing Ray cluster to attach to (also RAY_ADDRESS); "
                       "empty = start a local Ray instance."),
    # --- methods: their own keys, declared in fedsim/methods/ ---------------------------------
    **METHOD_KEYS,
    # --- differential privacy ------------------------------------------------------------------
    "privacy.clip_norm": Key(0.0, "Client-side differential privacy of the shared uploads: "
                             "each client clips its upload (FedAvg: the model update; FedNCF, "
                             "FedMF, FedRecGEL: the gradient, over every item row) to this L2 "
                             "norm and adds Gaussian noise (docs/privacy.md). 0 = off.",
                             low=0.0, high=1e6),
    "privacy.noise_multiplier": Key(1.0, "DP: noise std over privacy.clip_norm (when "
                                    "privacy.clip_norm > 0). 0 = clipping only, no guarantee "
                                    "(epsilon = inf).", low=0.0, high=1e6),
    "privacy.delta": Key(1e-5, "DP: the delta at which the budget epsilon is reported (per "
                         "client, over the rounds it trained; docs/results.md).", low=0.0,
                         high=0.1, low_open=True),
}

DEFAULTS: dict[str, bool | int | float | str] = {k: key.default for k, key in SCHEMA.items()}


def _check(name: str, value: Any) -> bool | int | float | str:
    """Return `value` converted to the key's type, or raise SpecError naming key and value."""
    if name not in SCHEMA:
        close = [k for k in SCHEMA if k.split(".")[-1] == name.split(".")[-1]]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SpecError(f"unknown spec key {name!r}.{hint} Known keys are listed in docs/spec.md.")
    key = SCHEMA[name]
    if isinstance(value, str) and value in key.words:
        return value
    kind = key.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise SpecError(f"{name} = {value!r}: expected {key.allowed()}, "
                        f"got a {type(value).__name__}")
    if key.choices is not None and value not in key.choices:
        raise SpecError(f"{name} = {value!r}: expected {key.allowed()}")
    if kind in (int, float):
        too_low = key.low is not None and (value <= key.low if key.low_open else value < key.low)
        too_high = key.high is not None and value > key.high
        if too_low or too_high or value != value:  # value != value catches NaN
            raise SpecError(f"{name} = {value!r}: expected {key.allowed()}")
    return value


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, bool | int | float | str]:
    """Defaults merged with flat `overrides`, every key and value checked, cross-key rules too."""
    spec = dict(DEFAULTS)
    for name, value in (overrides or {}).items():
        spec[name] = _check(name, value)
    _check_combination(spec)
    return spec


def _check_combination(spec: Mapping[str, Any]) -> None:
    task = DATASET_INFO[spec["dataset"]].task
    recommendation = task == "recommendation"
    if "path" in DATASET_INFO[spec["dataset"]].spec_keys and not spec["data.path"]:
        raise SpecError(f"dataset = {spec['dataset']!r} reads your own file: set data.path (and "
                        "the data.* keys naming its columns, docs/spec.md)")
    method = METHOD_DESCRIPTORS[spec["method"]]
    method_tasks = {name: m.task for name, m in METHOD_DESCRIPTORS.items()}
    for key, tasks in (("model", MODEL_TASKS), ("method", method_tasks)):
        if tasks[spec[key]] != task:
            allowed = " or ".join(repr(name) for name, t in tasks.items() if t == task)
            raise SpecError(f"{key} = {spec[key]!r} does not fit dataset = {spec['dataset']!r} "
                            f"({task}): expected {allowed}")
    if spec["partitioner"] in ("natural", "flwr:natural") and not recommendation:
        raise SpecError(f"partitioner = {spec['partitioner']!r} needs a recommendation dataset "
                        f"(one client per user); dataset = {spec['dataset']!r} is tabular: use "
                        "iid, dirichlet, hetero or single")
    if spec["partitioner"] == "hetero" and recommendation:
        raise SpecError("partitioner = 'hetero' needs a tabular dataset (label and sensitive "
                        f"attribute); dataset = {spec['dataset']!r} is a recommendation dataset")
    if (spec["partitioner"] in ("iid", "dirichlet", "dirichlet_capped", "hetero", "flwr:iid",
                                "flwr:dirichlet")
            and spec["num_clients"] < 1):
        raise SpecError(f"num_clients = {spec['num_clients']}: partitioner = "
                        f"{spec['partitioner']!r} needs num_clients >= 1")
    if spec["partitioner"] == "single" and spec["num_clients"] not in (0, 1):
        raise SpecError(f"num_clients = {spec['num_clients']}: partitioner = 'single' means "
                        "exactly 1 client (set 0 or 1)")
    if method.models and spec["model"] not in method.models:
        raise SpecError(f"model = {spec['model']!r} does not fit method = {spec['method']!r}: "
                        "expected " + " or ".join(map(repr, method.models)))
    if spec["privacy.clip_norm"] > 0 and method.dp_upload is None:
        supported = [name for name, m in METHOD_DESCRIPTORS.items() if m.dp_upload]
        raise SpecError(f"privacy.clip_norm = {spec['privacy.clip_norm']}: method = "
                        f"{spec['method']!r} does not support differential privacy (it shares "
                        "statistics that are not privatised): expected privacy.clip_norm = 0, "
                        "or method one of " + ", ".join(map(repr, supported)))
    if method.check is not None:
        method.check(spec)
    if spec["partition.low"] > spec["partition.high"]:
        raise SpecError(f"partition.low = {spec['partition.low']} > partition.high = "
                        f"{spec['partition.high']}: expected low <= high")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> dotted keys (the same rule as Flower's run config)."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        full = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, full + "."))
        else:
            flat[full] = value
    return flat


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a spec TOML file into flat overrides (not yet checked)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return flatten(tomllib.load(handle))
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except IsADirectoryError:
        hint = (f"; to continue the run in it: fedsim run --resume {path}"
                if (path / "config.toml").is_file() else "")
        raise SpecError(f"spec file {path} is a directory, not a TOML file{hint}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"spec file {path} is not valid TOML: {err}") from None


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs -> flat overrides; values use TOML syntax, bare words are text."""
    overrides: dict[str, Any] = {}
    for item in assignments:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise SpecError(f"--set {item!r}: expected key=value, e.g. --set fedncf.server_lr=0.01")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        overrides[name.strip()] = value
    return overrides


def _toml_value(value: bool | int | float | str) -> str:
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


def to_toml(spec: Mapping[str, Any]) -> str:
    """Write a resolved spec back as TOML (top-level keys first, then one table per prefix)."""
    top = {k: v for k, v in spec.items() if "." not in k}
    tables: dict[str, dict[str, Any]] = {}
    for name, value in spec.items():
        if "." in name:
            table, _, leaf = name.rpartition(".")
            tables.setdefault(table, {})[leaf] = value
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def tables() -> list[str]:
    """The spec's tables (the part of a key before the dot), in schema order."""
    return list(dict.fromkeys(name.rpartition(".")[0] for name in SCHEMA if "." in name))


def markdown_reference(table: str | None = None) -> str:
    """The key reference written to docs/spec.md; with `table`, only that table's keys (a
    heading and the rows, for ``fedsim keys TABLE``)."""
    if table is not None and table not in tables():
        raise SpecError(f"no spec table {table!r}: expected one of {', '.join(tables())}")
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, key in SCHEMA.items():
        if table is None or name.startswith(table + "."):
            rows.append(f"| `{name}` | `{key.default!r}` | {key.allowed()} | {key.doc} |")
    if table is not None:
        return f"# [{table}] keys\n\n" + "\n".join(rows) + "\n"
    return ("# Experiment spec keys\n\nGenerated from `fedsim/spec.py` and the method descriptors "
            "(`fedsim/methods/`) by `python -m fedsim.spec --write`; "
            "do not edit by hand.\nA spec TOML sets any of these; tables are the part before the "
            "dot (`[fedncf] server_lr = 0.01`).\n\n" + "\n".join(rows) + "\n")


FLWR_CONFIG_HEADER = "[tool.flwr.app.config]"


def with_flwr_config(pyproject: str) -> str:
    """pyproject.toml's text with its ``[tool.flwr.app.config]`` table (the last table of the
    file) replaced by every key at its default: `flwr run` only accepts --run-config overrides
    of keys declared there."""
    head, found, _ = pyproject.partition(FLWR_CONFIG_HEADER)
    if not found:
        raise SpecError(f"pyproject.toml has no {FLWR_CONFIG_HEADER} table")
    return (head + FLWR_CONFIG_HEADER + "\n"
            + "".join(f"{name} = {_toml_value(key.default)}\n" for name, key in SCHEMA.items()))


def write_generated(root: Path) -> None:
    """Regenerate docs/spec.md and pyproject.toml's [tool.flwr.app.config] under `root`."""
    (root / "docs" / "spec.md").write_text(markdown_reference())
    pyproject = root / "pyproject.toml"
    pyproject.write_text(with_flwr_config(pyproject.read_text()))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        write_generated(Path(__file__).resolve().parent.parent)
    else:
        print(markdown_reference(), end="")
