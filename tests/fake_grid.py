"""An in-process Flower Grid for unit tests: strategies meet real ClientApps without Ray.

Each node gets a partition id and its own Context, exactly what a simulated SuperNode provides;
``send_and_receive`` calls the ClientApp directly, one message at a time. A reply whose own call
took longer than ``timeout`` is dropped, as a late reply is on a real grid where nodes run in
parallel. A whole ``strategy.start()`` then runs in well under a second of framework time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


class FakeGrid(Grid):
    def __init__(self, client_app: ClientApp, num_partitions: int, first_node_id: int = 1000):
        TaskIdentity.run_id = 1
        TaskIdentity.node_id = 0
        TaskIdentity.task_id = 1
        self.client_app = client_app
        self.contexts = {
            first_node_id + 7 * p: Context(run_id=1, node_id=first_node_id + 7 * p,
                                           node_config={"partition-id": p,
                                                        "num-partitions": num_partitions},
                                           state=RecordDict(), run_config={})
            for p in range(num_partitions)
        }
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self._run = None

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return set(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("FakeGrid only supports send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("FakeGrid only supports send_and_receive")

    def send_and_receive(self, messages: Iterable[Message], *, timeout=None) -> list[Message]:
        replies = []
        for message in messages:
            self.sent.append(message)
            context = self.contexts[message.metadata.dst_node_id]
            started = time.perf_counter()
            reply = self.client_app(message, context)
            if timeout is None or time.perf_counter() - started <= timeout:
                replies.append(reply)
        self.replies += replies
        return replies
