"""Client partitioners: pure functions of (data, seed, parameters) that return row indices.

Every partitioner returns ``list[np.ndarray]``: one int64 array of row indices per client,
sorted ascending, such that every row is assigned to exactly one client. The same inputs and
seed always give the same partition, because all randomness comes from
``np.random.default_rng(seed)``. Bad parameters raise ``ValueError`` naming the parameter,
its value and what is allowed, so that a misconfigured experiment fails before training.
"""

from __future__ import annotations

import numpy as np

__all__ = ["single", "iid", "natural_id", "dirichlet", "dirichlet_proportions", "dirichlet_capped",
           "hetero"]


def _check_clients(num_clients: int, num_rows: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients={num_clients} is invalid; it must be >= 1")
    if num_clients > num_rows:
        raise ValueError(
            f"num_clients={num_clients} is invalid; it must be <= the number of rows ({num_rows})"
        )


def _check_1d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    return array


def _group_rows(client_of_row: np.ndarray, num_clients: int) -> list[np.ndarray]:
    """Turn a client id per row into one sorted index array per client.

    A stable argsort keeps the rows of each client in ascending order, so no per-client sort
    is needed.
    """
    order = np.argsort(client_of_row, kind="stable").astype(np.int64)
    sizes = np.bincount(client_of_row, minlength=num_clients)
    return np.split(order, np.cumsum(sizes)[:-1])


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` items into integer counts proportional to ``weights``.

    Floor plus largest remainder: the counts sum exactly to ``total`` and each count is within
    one of its exact share. Ties in the remainder go to the lower client index (stable sort),
    which keeps the result deterministic.
    """
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    leftover = total - int(counts.sum())
    counts[np.argsort(counts - exact, kind="stable")[:leftover]] += 1
    return counts


def _assign_by_counts(rows: np.ndarray, counts: np.ndarray, client_of_row: np.ndarray) -> None:
    """Give consecutive slices of the (already shuffled) ``rows`` to clients 0, 1, ..."""
    client_of_row[rows] = np.repeat(np.arange(counts.size), counts)


def single(num_rows: int) -> list[np.ndarray]:
    """One client holding every row: centralized training expressed as a one-client federation."""
    if num_rows < 1:
        raise ValueError(f"num_rows={num_rows} is invalid; it must be >= 1")
    return [np.arange(num_rows, dtype=np.int64)]


def iid(num_rows: int, num_clients: int, *, seed: int) -> list[np.ndarray]:
    """Uniformly random split into near-equal parts (client sizes differ by at most one)."""
    _check_clients(num_clients, num_rows)
    permutation = np.random.default_rng(seed).permutation(num_rows)
    return [np.sort(part).astype(np.int64) for part in np.array_split(permutation, num_clients)]


def natural_id(ids: np.ndarray, *, ids_per_client: int = 1, seed: int = 0) -> list[np.ndarray]:
    """Group rows by a natural id (e.g. one client per user); an id is never split.

    With ``ids_per_client=1`` client i holds the rows of the i-th smallest distinct id, so that
    client index and id agree and ``seed`` is unused. With ``ids_per_client=k > 1`` the distinct
    ids are shuffled with ``seed`` and cut into consecutive groups of k (the last may be
    smaller), giving ``ceil(#ids / k)`` clients.
    """
    ids = _check_1d("ids", ids)
    if ids_per_client < 1:
        raise ValueError(f"ids_per_client={ids_per_client} is invalid; it must be >= 1")
    distinct, id_of_row = np.unique(ids, return_inverse=True)
    if ids_per_client == 1:
        client_of_id = np.arange(distinct.size)
    else:
        client_of_id = np.empty(distinct.size, dtype=np.int64)
        shuffled = np.random.default_rng(seed).permutation(distinct.size)
        client_of_id[shuffled] = np.arange(distinct.size) // ids_per_client
    num_clients = -(-distinct.size // ids_per_client)
    return _group_rows(client_of_id[id_of_row], num_clients)


def dirichlet_proportions(
    num_values: int, num_clients: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw a [num_values, num_clients] matrix whose row v is value v's share per client.

    Row v ~ Dir(alpha * 1). Nothing here looks at the data, so two calls with generators in the
    same state give the same matrix: this is what lets a train and a test set be partitioned
    with identical per-value client proportions.
    """
    return rng.dirichlet(np.full(num_clients, float(alpha)), size=num_values)


def dirichlet(
    column: np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    seed: int,
    min_size: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Label- or attribute-skewed split: each value's rows are spread over clients by Dir(alpha).

    Small alpha concentrates each value on few clients; large alpha approaches an iid split.
    Each try draws the proportion matrix (``dirichlet_proportions``, values in sorted order)
    from its own stream, before and independently of any row shuffling, so the matrix depends
    only on (seed, number of distinct values, num_clients, alpha, try index). Hence a train and
    a test set with the same distinct values and seed get the same proportions, provided both
    calls succeed on the same try: a try is redrawn whenever some client gets fewer than
    ``min_size`` rows, so a smaller array that needs an extra try no longer mirrors the other.
    The rows of each value are shuffled and cut by floor + largest remainder.
    """
    column = _check_1d("column", column)
    _check_clients(num_clients, column.size)
    if not alpha > 0:
        raise ValueError(f"alpha={alpha} is invalid; it must be > 0")
    if min_size < 0:
        raise ValueError(f"min_size={min_size} is invalid; it must be >= 0")
    if min_size * num_clients > column.size:
        raise ValueError(
            f"min_size={min_size} is invalid; min_size * num_clients must be <= the number of "
            f"rows ({column.size})"
        )
    if max_tries < 1:
        raise ValueError(f"max_tries={max_tries} is invalid; it must be >= 1")
    proportion_rng, shuffle_rng = np.random.default_rng(seed).spawn(2)
    _, value_of_row = np.unique(column, return_inverse=True)
    rows_by_value = _group_rows(value_of_row, int(value_of_row.max()) + 1)
    client_of_row = np.empty(column.size, dtype=np.int64)
    for _ in range(max_tries):
        proportions = dirichlet_proportions(len(rows_by_value), num_clients, alpha, proportion_rng)
        for rows, shares in zip(rows_by_value, proportions):
            counts = _apportion(rows.size, shares)
            _assign_by_counts(shuffle_rng.permutation(rows), counts, client_of_row)
        if np.bincount(client_of_row, minlength=num_clients).min() >= min_size:
            return _group_rows(client_of_row, num_clients)
    raise ValueError(
        f"min_size={min_size} cannot be met with alpha={alpha} and num_clients={num_clients} "
        f"after max_tries={max_tries}; lower min_size or num_clients, or raise alpha"
    )


def dirichlet_capped(
    column: np.ndarray,
    num_clients: int,
    *,
    alpha: float,
    seed: int,
    min_per_value: int = 20,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Dirichlet split with a client-size cap and a minimum of rows of every value per client.

    The sampler of the FedFACT authors' lineage (LoGoFair's public code,
    ``liizhang/LoGofair:fedlearn/utils/sampling.py``, itself from FL-bench), rewritten on a
    seeded generator, same steps in the same order. One try takes the values of ``column`` in
    sorted order; for value v it shuffles v's rows (in place, so a redraw reshuffles the last
    try's order), draws client shares from Dir(``alpha``), sets the share of every client
    that already holds >= n / num_clients rows (n = all rows; rows of earlier values) to zero,
    renormalises, and cuts the shuffled rows at floor(cumulative share x count of v). The try
    is kept when every client holds at least ``min_per_value`` rows of every value; else all
    is redrawn. So the cap is the authors' soft one: a client reaching n / num_clients receives
    no rows of later values (with two values and ``min_per_value`` >= 1, a kept split has every
    client below n / num_clients rows of the first value), not a hard bound on its size. As in
    the authors' code, when the cumulative shares sum to just below 1 in floating point, the
    last client receives one row of a value even if capped.

    ``alpha`` is the concentration itself: the authors' code draws Dir(2 * alpha) for their
    alpha (FedFACT's Dir(0.5) is Dir(1.0) here). One partition over a train and a test set
    together (as :mod:`fedsim.federation` does, and the authors before their per-client split)
    counts both sets' rows in ``min_per_value``.
    """
    column = _check_1d("column", column)
    _check_clients(num_clients, column.size)
    if not alpha > 0:
        raise ValueError(f"alpha={alpha} is invalid; it must be > 0")
    if min_per_value < 0:
        raise ValueError(f"min_per_value={min_per_value} is invalid; it must be >= 0")
    if max_tries < 1:
        raise ValueError(f"max_tries={max_tries} is invalid; it must be >= 1")
    _, value_of_row = np.unique(column, return_inverse=True)
    rows_by_value = _group_rows(value_of_row, int(value_of_row.max()) + 1)
    smallest = min(rows.size for rows in rows_by_value)
    if min_per_value * num_clients > smallest:
        raise ValueError(
            f"min_per_value={min_per_value} is invalid; min_per_value * num_clients must be <= "
            f"the rows of the rarest value ({smallest})"
        )
    cap = column.size / num_clients
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        sizes = np.zeros(num_clients, dtype=np.int64)
        held = np.zeros((len(rows_by_value), num_clients), dtype=np.int64)
        client_of_row = np.empty(column.size, dtype=np.int64)
        for v, rows in enumerate(rows_by_value):
            rng.shuffle(rows)  # in place: a redraw reshuffles the last try's order, as the authors'
            shares = rng.dirichlet(np.full(num_clients, float(alpha))) * (sizes < cap)
            if not shares.sum() > 0:  # tiny alpha: the open clients' shares underflowed to 0
                break
            cuts = (np.cumsum(shares / shares.sum()) * rows.size).astype(np.int64)[:-1]
            held[v] = np.diff(cuts, prepend=0, append=rows.size)
            _assign_by_counts(rows, held[v], client_of_row)
            sizes += held[v]
        else:
            if held.min() >= min_per_value:
                return _group_rows(client_of_row, num_clients)
    raise ValueError(
        f"min_per_value={min_per_value} cannot be met with alpha={alpha} and "
        f"num_clients={num_clients} after max_tries={max_tries}; lower min_per_value or "
        "num_clients, or raise alpha"
    )


def hetero(
    sensitive: np.ndarray,
    labels: np.ndarray,
    num_clients: int,
    *,
    seed: int,
    low: float = 0.2,
    high: float = 0.8,
) -> list[np.ndarray]:
    """FedFACT's "Hetero" split: clients differ in how strongly the attribute A tracks the label Y.

    Client k draws a target correlation gamma_k ~ U[low, high) before anything else, so a train
    and a test call with the same seed give the same gammas. A cell (a, y) is *aligned* when
    a == y (for binary A and Y: cells (0, 0) and (1, 1); for multi-valued codes, group a is
    aligned with class a). The shuffled rows of each cell are split across clients by weights
    gamma_k (aligned cell) or 1 - gamma_k (other cells), normalised over clients, floor +
    largest remainder. The paper's exact allotment formula could not be decoded; this is our
    reading of it. ``sensitive`` and ``labels`` are integer codes compared as given.
    """
    sensitive = _check_1d("sensitive", sensitive)
    labels = _check_1d("labels", labels)
    if sensitive.shape != labels.shape:
        raise ValueError(
            f"labels has shape {labels.shape}; it must match sensitive's shape {sensitive.shape}"
        )
    _check_clients(num_clients, sensitive.size)
    if not 0 <= low < high <= 1:
        raise ValueError(f"low={low}, high={high} are invalid; they need 0 <= low < high <= 1")
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(low, high, size=num_clients)
    cells, cell_of_row = np.unique(np.stack([sensitive, labels]), axis=1, return_inverse=True)
    client_of_row = np.empty(sensitive.size, dtype=np.int64)
    for (a, y), rows in zip(cells.T, _group_rows(cell_of_row.ravel(), cells.shape[1])):
        weights = gamma if a == y else 1.0 - gamma
        _assign_by_counts(rng.permutation(rows), _apportion(rows.size, weights), client_of_row)
    sizes = np.bincount(client_of_row, minlength=num_clients)
    if sizes.min() == 0:
        raise ValueError(
            f"num_clients={num_clients} is too many for {sensitive.size} rows: client "
            f"{int(sizes.argmin())} got no rows; use fewer clients"
        )
    return _group_rows(client_of_row, num_clients)
