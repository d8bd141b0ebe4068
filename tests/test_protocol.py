"""The per-client layouts of fedsim messages (fedsim.protocol.pack_arrays, pack_metrics)."""

import os

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord

from fedsim.protocol import pack_arrays, pack_metrics, unpack_arrays, unpack_metrics


def test_packing_round_trips_every_clients_arrays_exactly():
    rng = np.random.default_rng(0)
    per_client = {
        7: {"item_ids": np.array([3, 9, 11]), "rows": rng.normal(size=(3, 4)).astype(np.float32),
            "bias": rng.normal(size=4).astype(np.float32), "step": np.array(2.0)},
        2: {"item_ids": np.array([], dtype=np.int64), "rows": np.zeros((0, 4), np.float32),
            "bias": rng.normal(size=4).astype(np.float32), "step": np.array(5.0)},
        # A name whose dtype differs between clients keeps each client's dtype.
        5: {"rows": rng.normal(size=(2, 4)), "counts": np.arange(6).reshape(2, 3)},
    }
    record = pack_arrays(per_client)
    # Two Arrays per (name, dtype, ndim), not one per client and name.
    assert len(record) == 2 * 6
    unpacked = unpack_arrays(record)
    assert unpacked.keys() == per_client.keys()
    for partition, arrays in per_client.items():
        assert unpacked[partition].keys() == arrays.keys()
        for name, value in arrays.items():
            got = unpacked[partition][name]
            assert got.dtype == value.dtype and got.shape == value.shape, (partition, name)
            np.testing.assert_array_equal(got, value)


def test_a_record_not_in_the_layout_is_named_in_the_error():
    good = pack_arrays({1: {"w": np.ones((2, 3), np.float32)}})
    with pytest.raises(ValueError, match=r"'1/w'"):
        unpack_arrays(ArrayRecord({"1/w": Array(np.ones(3))}))
    short = ArrayRecord({"w|<f4|2": good["w|<f4|2"],
                         "w|<f4|2|index": Array(np.array([[1, 2, 4]], dtype=np.int64))})
    with pytest.raises(ValueError, match=r"does not describe the 6 values under 'w\|<f4\|2'"):
        unpack_arrays(short)


def test_metrics_round_trip_per_client_with_their_types():
    per_client = {4: {"num-examples": 12, "train-loss": 0.5}, 1: {"train-loss": 2.0},
                  9: {"num-examples": 3, "train-loss": 1}}
    record = pack_metrics(per_client)
    assert len(record) == 2 * 2  # one list and its partitions per name
    assert unpack_metrics(record) == per_client
    assert isinstance(unpack_metrics(record)[4]["num-examples"], int)
    assert isinstance(unpack_metrics(record)[9]["train-loss"], float)  # a float column
    with pytest.raises(ValueError, match=r"'train-loss'"):
        unpack_metrics(MetricRecord({"train-loss": [1.0, 2.0], "train-loss|partitions": [3]}))


def test_auto_nodes_are_twice_the_actors_and_capped_at_the_clients():
    from fedsim.protocol import node_count, nodes_for
    from fedsim.spec import SpecError, resolve

    assert resolve({})["nodes"] == "auto"
    assert node_count("auto", 1000, actors=3) == 6 and node_count("auto", 4, actors=3) == 4
    assert node_count(0, 50) == 50 and node_count(7, 50) == 7 and node_count(70, 50) == 50
    spec = resolve({"ray.client_cpus": 2})
    assert nodes_for(spec, 10_000) == 2 * max(1, os.cpu_count() // 2)
    assert nodes_for(resolve({}), 10_000) == 2 * os.cpu_count()
    assert nodes_for(resolve({"nodes": 3}), 10_000) == 3
    with pytest.raises(SpecError, match=r"nodes = 'many': expected 'auto' or an int"):
        resolve({"nodes": "many"})


def test_a_query_is_answered_by_the_clients_query_method_or_fails_naming_it(tmp_path):
    """fedsim's ClientApp routes "query.<name>" to each addressed client's ``query_<name>``; a
    client class without one fails, named with the query in the reply's client errors."""
    import json

    from flwr.app import ConfigRecord, Message, RecordDict

    from clients.fedncf import FedNCFClient
    from fedsim.app import client_app
    from fedsim.messages.fedfb import GROUP_LOSSES
    from fedsim.messages.fedncf import ITEM_IDS, ROWS
    from fedsim.protocol import CONFIG, PARTITIONS, RUN_ID, SERVER_ROUND, SPEC, read_reply
    from fedsim.spec import resolve
    from tests.fake_grid import FakeGrid

    spec = resolve({"dataset": "synthetic-rec", "data.synthetic_users": 20, "method": "fedncf",
                    "out_dir": str(tmp_path)})
    grid = FakeGrid(client_app.app, num_partitions=1)
    config = ConfigRecord({SERVER_ROUND: 1, PARTITIONS: [0, 3], SPEC: json.dumps(spec),
                           RUN_ID: "query-test"})
    replies = grid.send_and_receive([
        Message(RecordDict({CONFIG: config}), dst_node_id=node, message_type=kind)
        for node in grid.get_node_ids() for kind in (ROWS, GROUP_LOSSES)])
    answered, errors = read_reply(replies[0].content)
    assert not errors and [c.partition for c in answered] == [0, 3]
    for client in answered:
        np.testing.assert_array_equal(client.arrays[ITEM_IDS],
                                      FedNCFClient(spec, client.partition).needed_items(1))
    answered, errors = read_reply(replies[1].content)
    assert not answered and sorted(errors) == [0, 3]
    assert ("query.group_losses: FedNCFClient has no method query_group_losses "
            "(it answers ['rows'])") in errors[0]
