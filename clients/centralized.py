"""Client of the centralized methods: one epoch of a Trainer per round, from the global weights.

With the ``single`` partitioner this client holds every user and the server's average is the
identity, so a run is the method's plain training loop cut into rounds. What makes the cut
exact: the model arrives as the previous round's weights bit for bit, the optimizer's moments
and the trainer's own arrays (Trainer.private_state) persist in the client's private store
(saved each round, restored on the next, so resume and actor changes do not reset them), and
each round's randomness is seeded by
(seed, partition, round).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from fedsim.methods.centralized import make_trainer
from fedsim.federation import load_federation
from fedsim.messages.common import NUM_EXAMPLES, TRAIN_LOSS
from fedsim.optim import load_adam, save_adam

Arrays = dict[str, np.ndarray]
# Private-store keys of the trainer's own arrays (Trainer.private_state), beside Adam's.
TRAINER_PREFIX = "trainer."


class CentralizedClient:
    """A partition's users and the Trainer of the spec's method."""

    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        federation = load_federation(spec)
        self.trainer = make_trainer(spec, federation.dataset, federation.train_parts[partition_id])
        self.model = self.trainer.build_model()
        self.optimizer = self.trainer.make_optimizer(self.model)
        self.partition_id = partition_id
        self.seed = spec["seed"]

    def _load(self, shared: Arrays) -> None:
        # In place, so the optimizer keeps pointing at the model's parameters.
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in shared.items()})

    def train(self, shared: Arrays, own: Arrays, state, server_round: int
              ) -> tuple[Arrays, dict[str, float]]:
        """One epoch from the global weights; returns the new weights."""
        self._load(shared)
        self.optimizer.state.clear()
        saved = state.load() or {}
        load_adam(self.optimizer, saved)  # reads only its own keys
        self.trainer.begin_epoch(server_round, {k.removeprefix(TRAINER_PREFIX): v
                                                for k, v in saved.items()
                                                if k.startswith(TRAINER_PREFIX)})
        seed = [self.seed, self.partition_id, server_round]
        torch.manual_seed(int(np.random.default_rng(seed).integers(2**63)))
        self.model.train()
        loss = self.trainer.train_epoch(self.model, self.optimizer, np.random.default_rng(seed))
        state.save({**save_adam(self.optimizer), **{
            TRAINER_PREFIX + k: v for k, v in self.trainer.private_state().items()}})
        weights = {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}
        return weights, {NUM_EXAMPLES: self.trainer.num_examples(), TRAIN_LOSS: loss}

    def evaluate(self, shared: Arrays, own: Arrays, state, server_round: int
                 ) -> tuple[Arrays, dict[str, float]]:
        self._load(shared)
        self.model.eval()
        with torch.no_grad():
            return {}, self.trainer.evaluate(self.model)
