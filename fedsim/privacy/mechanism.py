"""The Gaussian mechanism on one logical client's shared upload (local, client-level DP).

Before its training reply is packed, each client clips its shared upload to L2 norm
``privacy.clip_norm`` and adds Gaussian noise of std ``privacy.noise_multiplier *
privacy.clip_norm`` to every coordinate, so the server only ever sees noised uploads. What is
clipped depends on what the method uploads (its descriptor's ``dp_upload``, fedsim/methods/):

- "update" (FedAvg): the client's new weights. The clipped vector is the *update*, new weights
  minus the global weights the client received; the client sends global + clipped update +
  noise (DP-FedAvg, McMahan et al., ICLR 2018; what Flower's ``compute_clip_model_update``
  does);
- "gradient" (FedNCF, FedMF, FedRecGEL): the gradient of the shared parameters, clipped as one
  vector over every item row and dense layer.

Only float arrays are parameters; integer arrays (FedNCF's "item_ids") pass unchanged: in DP mode
every client is sent and uploads every item row (:mod:`strategies.fedncf`), so they are the same
for all clients and reveal nothing.

Why not Flower's mods: ``LocalDpMod`` and ``fixedclipping_mod`` (``flwr.clientapp.mod``) wrap a
whole ClientApp call and require the instruction and the reply to hold exactly one ArrayRecord
each, with the same keys, whose difference they clip as one model update. A fedsim message
addresses several logical clients (:mod:`fedsim.protocol`): a reply's "client-arrays" holds every
addressed client's upload (packed per array name, :func:`fedsim.protocol.pack_arrays`), FedNCF's
instructions hold two ArrayRecords ("arrays" and "client-arrays"), and its uploads are
gradients, not weights. The
mods refuse such messages (or, forced, would clip a node's clients jointly as one vector). Their
noise also comes from numpy's global RNG, which no (seed, client, round) reproduces, and
``LocalDpMod`` calibrates it with the one-shot bound sqrt(2 ln(1.25/δ))/ε, valid for ε < 1 and
blind to composition over rounds. So the same operations run here, per logical client, reusing
Flower's norm and clipping helpers (``flwr.supercore.differential_privacy``) and drawing the
noise from ``default_rng([seed, partition, round, NOISE_TAG])``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from flwr.supercore.differential_privacy import clip_inputs_inplace, get_norm

from fedsim.methods import METHODS

NOISE_TAG = 0xD1FF  # keeps the noise apart from the client's other (seed, client, round) draws

Arrays = dict[str, np.ndarray]


def _parameters(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """Names of the float arrays (parameters or their gradients), in a fixed order."""
    return sorted(name for name, value in arrays.items() if value.dtype.kind == "f")


def clip(upload: Mapping[str, np.ndarray], clip_norm: float,
         reference: Mapping[str, np.ndarray] | None = None) -> Arrays:
    """`upload` with ``||upload - reference||_2 <= clip_norm``, jointly over its float arrays.

    Without `reference` the upload itself is clipped (a gradient); with it, the change from
    `reference` (an update from the weights received) is, and the result is ``reference +
    clipped change``. An upload within the bound comes back unchanged, bit for bit (``reference +
    (upload - reference)`` would not be exact in floating point).
    """
    names = _parameters(upload)
    change = [upload[n] - reference[n] if reference is not None else upload[n].copy()
              for n in names]
    if get_norm(change) <= clip_norm:
        return dict(upload)
    clip_inputs_inplace(change, clip_norm)  # Flower's FlatClip: scale by clip_norm / norm
    clipped = {n: c if reference is None else reference[n] + c for n, c in zip(names, change)}
    return {**upload, **{n: v.astype(upload[n].dtype, copy=False) for n, v in clipped.items()}}


def add_noise(upload: Mapping[str, np.ndarray], std: float, rng: np.random.Generator) -> Arrays:
    """Every float array of `upload` plus i.i.d. N(0, std²) noise, drawn from `rng` by name."""
    noised = dict(upload)
    for name in _parameters(upload):
        value = upload[name]
        noised[name] = (value + rng.normal(0.0, std, value.shape)).astype(value.dtype)
    return noised


@dataclass(frozen=True)
class GaussianMechanism:
    """Clip a client's upload to `clip_norm`, then add N(0, (noise_multiplier * clip_norm)²).

    `upload` says what the method uploads: "update" (weights, clipped as the change from the
    weights received) or "gradient" (clipped as it is). ``noise_multiplier = 0`` clips only.
    """

    clip_norm: float
    noise_multiplier: float
    upload: str
    seed: int

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> GaussianMechanism | None:
        """The spec's mechanism, or None when DP is off (``privacy.clip_norm = 0``)."""
        if spec["privacy.clip_norm"] == 0:
            return None
        return cls(spec["privacy.clip_norm"], spec["privacy.noise_multiplier"],
                   METHODS[spec["method"]].dp_upload, spec["seed"])

    def __call__(self, upload: Mapping[str, np.ndarray], received: Mapping[str, np.ndarray],
                 partition: int, server_round: int) -> Arrays:
        """Client `partition`'s upload of `server_round` as it may leave the client; `received`
        holds the shared arrays it was sent (the reference of an update)."""
        clipped = clip(upload, self.clip_norm, received if self.upload == "update" else None)
        if self.noise_multiplier == 0:
            return clipped
        rng = np.random.default_rng([self.seed, partition, server_round, NOISE_TAG])
        return add_noise(clipped, self.noise_multiplier * self.clip_norm, rng)
