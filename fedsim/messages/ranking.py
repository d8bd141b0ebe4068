"""Vocabulary of the recommendation methods' evaluation reply (FedNCF, FedMF, FedRecGEL and the
centralized methods): per split, protocol and group, metric *sums* over the client's users and
the user counts they are divided by, so that the server's pooled mean is exact whatever the
client sizes (computed by :mod:`clients.ranking_eval`).

Names: "<split><metric>@<K><protocol><group>" (e.g. "val_ndcg@10_full_tail") with split "" (test)
or "val_", protocol "" (sampled negatives) or "_full", group "", "_head" or "_tail"; the count
of a split and group is "<split>n<group>" (e.g. "val_n_tail").
"""

K = 10
VALIDATION = "val_"
GROUPS = ("", "_head", "_tail")


def count_name(split: str, group: str) -> str:
    """The users of a split and group, the divisor of its metric sums ("val_n_tail")."""
    return f"{split}n{group}"


def count_key(name: str) -> str:
    """The count a metric sum is divided by: the users of its split and group."""
    split = VALIDATION if name.startswith(VALIDATION) else ""
    return count_name(split, next((g for g in GROUPS[1:] if name.endswith(g)), ""))


def means_from_sums(sums: dict[str, float]) -> dict[str, float]:
    """Pooled means from summed client replies: metric sum / the count of its split and group."""
    means = {}
    for name, total in sums.items():
        if "@" not in name:
            continue
        count = sums.get(count_key(name), 0.0)
        means[name] = total / count if count else float("nan")
    return means
