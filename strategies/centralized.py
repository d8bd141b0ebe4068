"""Server of the centralized methods: FedAvg of full model weights, pooled (sum, count) metrics.

With one client (the ``single`` partitioner) the example-weighted mean is that client's weights
unchanged, so the server adds nothing to the centralized method it runs
(:mod:`fedsim.centralized`). With several clients it is plain FedAvg of the whole model.
"""

from __future__ import annotations

from fedsim.metrics.pooling import add, pooled_means
from fedsim.protocol import ClientReply
from strategies.fedavg import FedAvg


class LocalTrainingFedAvg(FedAvg):
    """FedAvg whose evaluation replies are (sum, count) metric pairs (:mod:`fedsim.metrics.pooling`,
    :meth:`fedsim.centralized.trainer.Trainer.evaluate`)."""

    def evaluation_metrics(self, replies: list[ClientReply]) -> dict[str, float]:
        return pooled_means(add(reply.metrics for reply in replies))
