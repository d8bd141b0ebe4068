"""The ClientApp: one node, one or more logical clients, routed to the method's client class.

Clients are stateless code: the experiment spec arrives in every message ("config" record, key
"spec"), each logical client rebuilds its data view from (spec, partition id) through a
per-process cache, and private state lives in the node's ``context.state`` under the client's
partition id. Any Ray actor can therefore serve any node. Message layout: :mod:`fedsim.protocol`.

A logical client that raises is reported in the reply's "client-errors" record; the node's other
clients still reply.
"""

from __future__ import annotations

import functools
import json
import traceback
from typing import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.protocol import (CLIENT_ARRAYS, CONFIG, PARTITIONS, SHARED, hosted_partitions,
                             reply_content, unpack_arrays)
from fedsim.spec import resolve

app = ClientApp()


class PrivateState:
    """One logical client's private arrays in the node's Context state (never sent)."""

    def __init__(self, context: Context, partition: int):
        self.state = context.state
        self.key = f"private/{partition}"

    def load(self) -> dict[str, np.ndarray] | None:
        if self.key not in self.state:
            return None
        return {k: v.numpy() for k, v in self.state.array_records[self.key].items()}

    def save(self, arrays: dict[str, np.ndarray]) -> None:
        self.state[self.key] = ArrayRecord({k: Array(np.ascontiguousarray(v))
                                            for k, v in arrays.items()})


@functools.lru_cache(maxsize=16384)
def _client(spec_json: str, partition: int):
    spec = resolve(json.loads(spec_json))
    return METHODS[spec["method"]].client(spec, partition)


def _for_each_client(msg: Message, context: Context, call: Callable) -> Message:
    """Run `call(client, shared, own, state, round)` for every addressed client; pack replies."""
    config = msg.content.config_records[CONFIG]
    spec_json, server_round = str(config["spec"]), int(config["server-round"])
    shared = ({k: v.numpy() for k, v in msg.content.array_records[SHARED].items()}
              if SHARED in msg.content.array_records else {})
    own = (unpack_arrays(msg.content.array_records[CLIENT_ARRAYS])
           if CLIENT_ARRAYS in msg.content.array_records else {})
    arrays, metrics, errors = {}, {}, {}
    for partition in config[PARTITIONS]:
        try:
            client = _client(spec_json, int(partition))
            arrays[partition], metrics[partition] = call(
                client, shared, own.get(partition, {}), PrivateState(context, partition),
                server_round)
        except Exception:  # one failing client must not sink the others on its node
            errors[partition] = traceback.format_exc()
    return Message(reply_content(arrays, metrics, errors), reply_to=msg)


@app.query("discover")
def discover(msg: Message, context: Context) -> Message:
    spec = resolve(json.loads(str(msg.content.config_records[CONFIG]["spec"])))
    hosted = hosted_partitions(int(context.node_config["partition-id"]),
                               int(context.node_config["num-partitions"]),
                               load_federation(spec).num_clients)
    return Message(RecordDict({"info": ConfigRecord({PARTITIONS: hosted})}), reply_to=msg)


@app.query("rows")
def rows(msg: Message, context: Context) -> Message:
    return _for_each_client(msg, context, lambda client, shared, own, state, rnd: (
        {"item_ids": client.needed_items(rnd)}, {}))


@app.query("counts")
def counts(msg: Message, context: Context) -> Message:
    return _for_each_client(msg, context, lambda client, shared, own, state, rnd: (
        client.counts(), {}))


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _for_each_client(msg, context, lambda client, shared, own, state, rnd:
                            client.train(shared, own, state, rnd))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _for_each_client(msg, context, lambda client, shared, own, state, rnd:
                            client.evaluate(shared, own, state))
