"""The privacy budget of the clients' noised uploads: (ε, δ) per client, composed over its rounds.

Each time a client is asked to train it releases one upload through the Gaussian mechanism of
:mod:`fedsim.privacy.mechanism`: L2 sensitivity ``privacy.clip_norm`` (the clipped upload of the
client with its data against none from the client without it: the add-or-remove-one client
relation of DP-FedAvg and of Flower's DP strategies) and noise std
``privacy.noise_multiplier * privacy.clip_norm``. After k releases its budget is the Rényi-DP
composition of k such Gaussian mechanisms, converted to ε at ``privacy.delta``, as computed by
Flower's :class:`flwr.serverapp.RdpAccountant` (a wrapper of Google's dp-accounting). RDP gives
an upper bound on ε; a tighter accountant (privacy loss distributions) would report less.

No amplification by subsampling: the server itself draws each round's clients with a seeded
generator (:meth:`strategies.base.PartitionedStrategy.sample`), so it knows when each client took
part, and the adversary of local DP is the server; amplification needs the participation to be
secret from the adversary. The budget is therefore counted per client over the rounds it was
asked to train (counted when asked: a client that then fails sent nothing, so it is an upper
bound), and the ε reported is that of the client asked most often: the guarantee every client has.

Under the other common relation, replacing a client's data by any other data (the textbook
local-DP neighbourhood), two clipped uploads can differ by 2 * clip_norm: the same run is then
(ε(noise_multiplier / 2), δ)-DP, which the summary reports as ``epsilon_replace``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any, Mapping

import numpy as np
from flwr.serverapp import (GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig,
                            RdpAccountant, SamplingMethod)

ACCOUNTING = ("rdp (flwr RdpAccountant / dp-accounting); per client, add-or-remove-one client, "
              "no subsampling amplification; the client asked to train most often")


@functools.lru_cache(maxsize=4096)
def epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε at `delta` after `releases` Gaussian releases of `noise_multiplier` (sensitivity 1).

    No release spends nothing; a zero noise multiplier (clipping only) gives no guarantee: inf.
    """
    if releases == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RdpAccountant(PrivacyConfig(
        target_delta=delta, population_size=1,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    # A local release involves one client and no sampling: sample and population are 1.
    accountant.compose(GaussianPrivacyEvent(noise_multiplier, sample_size=1, population_size=1),
                       count=releases)
    return accountant.get_epsilon(delta)


def budget(spec: Mapping[str, Any], releases: int) -> dict[str, Any] | None:
    """summary.json's "privacy" object, `releases` those of the most-asked client; None if off."""
    if spec["privacy.clip_norm"] == 0:
        return None
    sigma, delta = spec["privacy.noise_multiplier"], spec["privacy.delta"]
    return {"clip_norm": spec["privacy.clip_norm"], "noise_multiplier": sigma, "delta": delta,
            "releases": releases, "epsilon": epsilon(sigma, releases, delta),
            "epsilon_replace": epsilon(sigma / 2, releases, delta), "accounting": ACCOUNTING}


class ClientAccountant:
    """Releases per client, and the budget of the client with the most.

    Parameters
    ----------
    num_clients : int
        Number of logical clients (partitions).
    noise_multiplier : float
        Noise std over clip norm of every release (0: clipping only, ε = inf).
    delta : float
        The δ at which ε is reported.
    """

    def __init__(self, num_clients: int, noise_multiplier: float, delta: float):
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self.releases = np.zeros(num_clients, dtype=np.int64)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], num_clients: int) -> ClientAccountant | None:
        """The spec's accountant, or None when DP is off (``privacy.clip_norm = 0``)."""
        if spec["privacy.clip_norm"] == 0:
            return None
        return cls(num_clients, spec["privacy.noise_multiplier"], spec["privacy.delta"])

    def record(self, partitions: Iterable[int]) -> None:
        """One release by each of `partitions` (the clients asked to train this round)."""
        np.add.at(self.releases, np.fromiter(partitions, dtype=np.int64), 1)

    def metrics(self) -> dict[str, float]:
        """Budget so far, for the round's record: ε of the most-asked client and its releases."""
        most = int(self.releases.max())
        return {"privacy_epsilon": epsilon(self.noise_multiplier, most, self.delta),
                "privacy_releases": most}

    def state_dict(self) -> dict[str, Any]:
        return {"releases": self.releases.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.releases = np.array(state["releases"], dtype=np.int64)
