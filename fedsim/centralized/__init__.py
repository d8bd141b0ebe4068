"""Centralized recommendation methods as single-client federated runs.

A centralized method is a :class:`~fedsim.centralized.trainer.Trainer` (model, optimizer, one
epoch of training, evaluation). It runs through the ordinary pipeline: the client
:class:`clients.centralized.CentralizedClient` trains one epoch per round from the global
weights, the server :class:`strategies.centralized.LocalTrainingFedAvg` averages the returned
weights (the identity with the ``single`` partitioner), and the optimizer state persists in the
client's private store, so the run equals a plain training loop.

Adding a method = a Trainer subclass and its descriptor (one more entry of
fedsim/methods/centralized.py, or a module of its own in fedsim/methods/ naming the Trainer).
"""
