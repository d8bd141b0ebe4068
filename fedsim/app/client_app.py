"""The ClientApp: routes Flower messages to the method's client object.

Clients are stateless code: the experiment spec arrives in every message ("config" record, key
"spec"), the client rebuilds its data view from (spec, partition id) through a per-process
cache, and private state lives in ``context.state``. Any Ray actor can therefore serve any
simulated client.
"""

from __future__ import annotations

import functools
import json

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedsim.methods import METHODS
from fedsim.spec import resolve

app = ClientApp()


@functools.lru_cache(maxsize=8192)
def _client(spec_json: str, partition_id: int):
    spec = resolve(json.loads(spec_json))
    return METHODS[spec["method"]].client(spec, partition_id)


def _context_client(msg: Message, context: Context):
    config = msg.content.config_records["config"]
    return _client(str(config["spec"]), int(context.node_config["partition-id"])), int(
        config["server-round"])


@app.query("discover")
def discover(msg: Message, context: Context) -> Message:
    info = ConfigRecord({"partition-id": int(context.node_config["partition-id"])})
    return Message(RecordDict({"info": info}), reply_to=msg)


@app.query("rows")
def rows(msg: Message, context: Context) -> Message:
    client, server_round = _context_client(msg, context)
    ids = client.needed_items(server_round)
    return Message(RecordDict({"arrays": ArrayRecord({"item_ids": Array(ids)})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    client, server_round = _context_client(msg, context)
    return Message(client.train(msg.content, context.state, server_round), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    client, _ = _context_client(msg, context)
    return Message(client.evaluate(msg.content, context.state), reply_to=msg)
