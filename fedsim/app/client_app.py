"""The ClientApp: one node, one or more logical clients, routed to the method's client class.

A client class answers train and evaluate (methods ``train`` and ``evaluate``) and, for each
query "query.<name>" of its method's message vocabulary (:mod:`fedsim.messages`), a method
``query_<name>``; all four take (shared arrays, own arrays, private store, round) and return
(arrays, metrics). One handler serves every query; a client whose class has no method for the
query fails with an error naming the query and the class (Flower itself refuses a query no
vocabulary declares).

Clients are stateless code: the experiment spec arrives in every message ("config" record, key
"spec"), each logical client rebuilds its data view from (spec, partition id) through a
per-process cache, and private state lives in a node-local store keyed by run id and partition
(:mod:`fedsim.app.private_store`), which survives a crash. Any Ray actor can therefore serve any
node. Message layout: :mod:`fedsim.protocol`.

A logical client that raises is reported in the reply's "client-errors" record; the node's other
clients still reply. Injected faults (spec table ``faults``) strike training only, drawn from
(seed, client, round) so that every run of a spec fails the same clients.

Deadline: the server waits ``round_timeout`` for a node's one reply, so the deadline applies to
each logical client, not to the node. Every instruction carries "deadline" in its config (Unix
time by the server's clock: the round timeout less a margin for the reply to travel,
:func:`strategies.base.reply_margin`); the node checks the clock before and after each client
(each batched pass), replies by then with the clients that finished, and reports the others
failed with a reason that starts "deadline:". An injected straggler (``faults.kind =
"straggler"``) is a client whose work starts ``faults.delay`` seconds after the node took up the
message, its delay running beside the other clients' work (they are separate devices): the
node computes the other clients first; it then waits until the delay is over and computes the
stragglers, or, where the delay ends past the deadline, reports them failed at once (their
result is known, and waiting would hold the node's Ray actor, and the messages of the nodes
queued behind it, until the deadline; a deployment's round would last until the timeout, the
results are the same).

Where the instruction carries a sum rule (the strategy aggregates the phase as a sum), the node
checks every client's reply, leaves out (and reports) the malformed ones and sends the sum of
the rest instead of one reply per client (:mod:`fedsim.node_sums`).

With client-side DP on (``privacy.clip_norm > 0``) each client's training upload is clipped and
noised before the reply is checked, summed or packed (:mod:`fedsim.privacy.mechanism`, which
also says why Flower's DP mods, built for one client per message, are not used).
"""

from __future__ import annotations

import functools
import gc
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp

from clients import cohort
from fedsim.app.private_store import PrivateStore
from fedsim.federation import load_federation
from fedsim.messages import queries
from fedsim.messages.common import query_name
from fedsim.methods import METHODS
from fedsim.node_sums import SumRule, node_sum, sum_content
from fedsim.privacy import GaussianMechanism
from fedsim.protocol import (CLIENT_ARRAYS, CONFIG, DEADLINE, NODE_INFO, PARTITIONS, RUN_ID,
                             SERVER_ROUND, SHARED, SPEC, hosted_partitions, reply_content,
                             unpack_arrays)
from fedsim.spec import SCHEMA, resolve

app = ClientApp()


class InjectedFault(RuntimeError):
    """A failure the spec asked for (``faults.rate``), not a bug."""


@functools.lru_cache(maxsize=16384)
def _client(spec_json: str, partition: int):
    spec = _spec(spec_json)
    return METHODS[spec["method"]].client_class()(spec, partition)


@functools.lru_cache(maxsize=64)
def _spec(spec_json: str) -> dict:
    return resolve(json.loads(spec_json))


def message_spec_json(config: ConfigRecord) -> str:
    """The spec a message's clients run, as JSON: the "spec" entry with the strategy's own
    settings over it (config entries named by spec keys: the strategy decides them,
    :meth:`strategies.base.PartitionedStrategy.client_settings`)."""
    settings = {name: value for name, value in config.items() if name in SCHEMA}
    return _with_settings(str(config[SPEC]), json.dumps(settings, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _with_settings(spec_json: str, settings_json: str) -> str:
    settings = json.loads(settings_json)
    return json.dumps({**json.loads(spec_json), **settings}) if settings else spec_json


def state_root(spec: dict) -> Path:
    return Path(spec["state_dir"] or Path(spec["out_dir"]) / "client_state")


def inject_fault(spec: dict, partition: int, server_round: int) -> bool:
    """Fail or straggle this client's training round with probability ``faults.rate``: raise
    :class:`InjectedFault`, or return True for a straggler (its node delays it, see the module
    docstring)."""
    rate = spec["faults.rate"]
    if rate == 0 or np.random.default_rng([spec["seed"], partition, server_round,
                                           0xFA17]).random() >= rate:
        return False
    if spec["faults.kind"] == "straggler":
        return True
    raise InjectedFault(f"injected failure of client {partition} in round {server_round}")


def runtime_info() -> dict[str, str]:
    """Where this process runs, for the reply's "runtime" record: the Ray node id when a Ray
    actor runs the ClientApp (simulation, also on a multi-node cluster), else nothing.

    Ray is looked up in ``sys.modules`` rather than imported, so a deployment SuperNode, which
    never loads Ray, does not pay for the import."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return {}
    return {"ray-node": ray.get_runtime_context().get_node_id()}


def _collector_held(handler: Callable) -> Callable:
    """`handler` with Python's cyclic garbage collector held off while it runs.

    A node's message builds a few small containers per client (its store, private-state and
    metric dicts) that live until the reply is built. In a node's Amazon-Video evaluation
    (2,018 clients) they started 52 collections per message and, moved to the oldest
    generation by those, a full collection every few messages, which traverses every object
    of the process (over 200,000 once torch and Flower are loaded: about 0.2 s each on the
    project's machine, more than the message's scoring). Reference counting frees what the
    handler builds when it returns; the cycles it leaves (about 2,000 small objects after a
    training message: closures, no arrays) go at the collector's next run.
    """
    @functools.wraps(handler)
    def held(*args, **kwargs):
        if not gc.isenabled():
            return handler(*args, **kwargs)
        gc.disable()
        try:
            return handler(*args, **kwargs)
        finally:
            gc.enable()
    return held


@_collector_held
def _for_each_client(msg: Message, context: Context, call: Callable,
                     batched: Callable | None = None) -> Message:
    """Run `call(client, shared, own, state, round)` for every addressed client; pack replies.

    `batched(clients, shared, owns, states, round)`, where given, computes all the clients'
    replies at once (cohort mode, :mod:`clients.cohort`) when the spec's ``cohort`` is on and
    the clients' class declares batching. If it raises, the clients run one by one instead, so
    that a failing client fails alone.
    """
    config = msg.content.config_records[CONFIG]
    spec_json, server_round = message_spec_json(config), int(config[SERVER_ROUND])
    spec, run_id = _spec(spec_json), str(config[RUN_ID])
    started = time.time()
    deadline = float(config[DEADLINE]) if DEADLINE in config else math.inf
    training = msg.metadata.message_type == MessageType.TRAIN
    # Training in round r starts from the state of round r - 1 and writes round r's; evaluation
    # of round r reads round r's and writes nothing.
    visible = server_round - 1 if training else server_round
    write = server_round if training else None
    shared = ({k: v.numpy() for k, v in msg.content.array_records[SHARED].items()}
              if SHARED in msg.content.array_records else {})
    own = (unpack_arrays(msg.content.array_records[CLIENT_ARRAYS])
           if CLIENT_ARRAYS in msg.content.array_records else {})
    arrays, metrics, errors = {}, {}, {}
    ready, stragglers = [], []  # (partition, client, store) of the clients past setup
    root = state_root(spec)  # once per message: a message addresses thousands of clients
    for partition in config[PARTITIONS]:
        try:
            straggles = training and inject_fault(spec, int(partition), server_round)
            client = _client(spec_json, int(partition))
            store = PrivateStore(root, run_id, int(partition), visible, write)
            (stragglers if straggles else ready).append((partition, client, store))
        except Exception:  # one failing client must not sink the others on its node
            errors[partition] = traceback.format_exc()

    def late(partition) -> str:
        return f"deadline: client {partition} had not finished by its node's reply deadline"

    def compute(group: list) -> None:
        """The replies of `group` into arrays/metrics; a client not finished by the deadline
        into errors. Cohort mode computes the group in one pass, so the whole pass is late
        or not; if it raises, the clients run one by one, so that a failing client fails
        alone."""
        clients = [client for _, client, _ in group]
        if (batched is not None and spec["cohort"] and len(group) > 1
                and cohort.supports(clients, shared, training) and time.time() < deadline):
            try:
                replies = batched(clients, shared, [own.get(p, {}) for p, _, _ in group],
                                  [store for _, _, store in group], server_round)
                in_time = time.time() <= deadline
                for (partition, _, _), (upload, values) in zip(group, replies):
                    if in_time:
                        arrays[partition], metrics[partition] = upload, values
                    else:
                        errors[partition] = late(partition)
                return
            except Exception:
                print(f"cohort of {len(group)} clients failed, running them one by one:\n"
                      f"{traceback.format_exc()}", file=sys.stderr)
        for partition, client, store in group:
            if time.time() >= deadline:
                errors[partition] = late(partition)
                continue
            try:
                reply = call(client, shared, own.get(partition, {}), store, server_round)
            except Exception:
                errors[partition] = traceback.format_exc()
                continue
            if time.time() > deadline:
                errors[partition] = late(partition)
            else:
                arrays[partition], metrics[partition] = reply

    compute(ready)
    if stragglers:
        ends = started + spec["faults.delay"]
        if ends > deadline:  # known to miss the deadline: reported now, not waited out
            for partition, _, _ in stragglers:
                errors[partition] = (f"deadline: injected straggler {partition} is delayed "
                                     f"{spec['faults.delay']} s, past its node's reply "
                                     f"deadline ({deadline - started:.1f} s away)")
        else:
            # Cohort mode too: the stragglers are a pass of their own once their delay is over
            # (the delay comes before a straggler's contribution), in time or dropped whole.
            time.sleep(max(0.0, ends - time.time()))
            compute(stragglers)
    rule = SumRule.from_config(config)
    if rule is None:
        return Message(reply_content(arrays, metrics, errors, runtime_info()), reply_to=msg)
    total, rejected, uploaded = node_sum(rule, arrays, metrics, shared,
                                         {int(p): a for p, a in own.items()})
    return Message(sum_content(rule, total, errors, rejected, uploaded, runtime_info()),
                   reply_to=msg)


@app.query("discover")
def discover(msg: Message, context: Context) -> Message:
    spec = _spec(message_spec_json(msg.content.config_records[CONFIG]))
    hosted = hosted_partitions(int(context.node_config["partition-id"]),
                               int(context.node_config["num-partitions"]),
                               load_federation(spec).num_clients)
    return Message(RecordDict({NODE_INFO: ConfigRecord({PARTITIONS: hosted})}), reply_to=msg)


def answer_query(msg: Message, context: Context) -> Message:
    """A query "query.<name>": every addressed client answers with its ``query_<name>``."""
    name = query_name(msg.metadata.message_type)

    def call(client, shared, own, state, rnd):
        handler = getattr(client, f"query_{name}", None)
        if handler is None:
            answered = sorted(a.removeprefix("query_") for a in dir(client)
                              if a.startswith("query_"))
            raise LookupError(f"{msg.metadata.message_type}: {type(client).__name__} has no "
                              f"method query_{name} (it answers {answered or 'no queries'})")
        return handler(shared, own, state, rnd)

    return _for_each_client(msg, context, call)


# Flower routes a message only to a function registered under its exact type, so the one
# handler is registered under every query the vocabulary declares.
for _query in queries():
    app.query(query_name(_query))(answer_query)


@app.train()
def train(msg: Message, context: Context) -> Message:
    mechanism = GaussianMechanism.from_spec(
        _spec(message_spec_json(msg.content.config_records[CONFIG])))

    def call(client, shared, own, state, rnd):
        upload, metrics = client.train(shared, own, state, rnd)
        if mechanism is not None:  # the upload leaves this client noised, or not at all
            upload = mechanism(upload, shared, client.partition_id, rnd)
        return upload, metrics

    def batched(clients, shared, owns, states, rnd):
        return type(clients[0]).train_batch(clients, shared, owns, states, rnd)

    # DP noises each upload as it leaves its client: one by one.
    return _for_each_client(msg, context, call, batched=batched if mechanism is None else None)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    def batched(clients, shared, owns, states, rnd):
        return type(clients[0]).evaluate_batch(clients, shared, states, rnd)

    return _for_each_client(
        msg, context, lambda client, shared, own, state, rnd: client.evaluate(shared, own, state, rnd),
        batched=batched)
