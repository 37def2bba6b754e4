"""Messages with a payload travel on `ercdata:<id>`, the rest on `erc:<id>`, without reordering.

The order claim is Redis's (one connection, one output buffer, publishes handled one at a time);
this checks it on a real redis-server, with payloads big enough to need several socket writes.
"""
from __future__ import annotations

from typing import List

import redis

from fakebus import PrivateRedis, server, wait_for  # noqa: F401 -- `server` is a fixture
from ryu_apps.erc import wire


def test_payload_messages_go_to_the_data_channel_only() -> None:
    assert wire.channel_for("c2", b"") == wire.channel("c2") == "erc:c2"
    assert wire.channel_for("c2", b"x") == wire.data_channel("c2") == "ercdata:c2"
    # a monitor's pattern on the control channels does not match the data channel
    assert not wire.data_channel("c2").startswith(wire.CHANNEL_PREFIX)


def test_one_subscriber_gets_both_channels_in_publish_order(server: PrivateRedis) -> None:  # noqa: F811
    sub = server.connect().pubsub(ignore_subscribe_messages=True)
    sub.subscribe(wire.channel("c2"), wire.data_channel("c2"))
    wait_for(lambda: server.client.pubsub_numsub(wire.data_channel("c2"))[0][1] == 1, 5,
             "the subscription")
    tap = server.connect().pubsub(ignore_subscribe_messages=True)
    tap.psubscribe(wire.CHANNEL_PREFIX + "*")
    wait_for(lambda: server.client.execute_command("PUBSUB", "NUMPAT") == 1, 5, "the tap")
    sent: List[bytes] = []
    for i in range(40):
        payload = bytes([i]) * (300_000 if i % 3 == 0 else 0)
        data = wire.encode(wire.Msg(wire.STATE if payload else wire.STATUS, "m", 1, "c1",
                                    {"i": i}, payload))
        server.client.publish(wire.channel_for("c2", payload), data)
        sent.append(data)
    got: List[bytes] = []
    wait_for(lambda: _drain(sub, got) and len(got) == len(sent), 10, "every message")
    assert got == sent
    seen: List[bytes] = []
    wait_for(lambda: _drain(tap, seen) and len(seen) == len([s for s in sent if len(s) < 1000]),
             5, "the control messages at the tap")
    assert all(wire.decode(m).type == wire.STATUS for m in seen)
    sub.close()
    tap.close()


def _drain(ps: "redis.client.PubSub", into: List[bytes]) -> bool:
    while True:
        m = ps.get_message(timeout=0.01)
        if m is None:
            return True
        if m["type"] in ("message", "pmessage"):
            into.append(m["data"])
