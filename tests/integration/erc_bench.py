"""A bench for migration tests: one initial master, candidates, a two-switch network, a ping load.

Every packet is a packet-in (the learning app installs no flows), so the table-miss rule's packet
count on the migrating switch is the number of packet-ins raised, and the `packet_in` counter the
learning app keeps in its (migrating) state is the number answered: equal means each was answered
exactly once.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional

import redis

from sdnmig import instances, ops
from sdnmig.lab import Controllers, controller_roles, poll, roles_now, unique_prefix, wait_roles
from topologies.testbeds import LinearTopo

DPID = 1  # the migrating switch (s1)
STATS = "sw:%016x:l2:stats" % DPID


class Bench:
    def __init__(self, controllers: Controllers, mininet: Any, n: int = 4,
                 conf: Optional[Dict[str, Dict[str, str]]] = None,
                 protocols: Optional[str] = None, discovery: bool = False) -> None:
        conf = conf or {}
        ids = [f"c{i}" for i in range(1, n + 1)]
        common = {"install_flows": "false", "peers": ",".join(ids)}
        self.ctl = controllers
        self.insts = {}
        for i, cid in enumerate(ids):
            (inst,) = controllers.start(1, apps=("learning", "erc"), ids=[cid],
                                        master="first" if i == 0 else "none",
                                        extra_conf=dict(common, **conf.get(cid, {})),
                                        discovery=discovery)
            self.insts[cid] = inst
        self.topo = LinearTopo(k=2, prefix=unique_prefix())
        opts = {"protocols": protocols} if protocols else {}
        self.net = mininet(self.topo, list(self.insts.values()), **opts)
        self.bridge = self.topo.prefix + "s1"
        wait_roles(self.net, list(self.insts.values()), {s: "c1" for s in self.topo.switches()})
        self.bus = controllers.bus.client()
        poll(lambda: self.bus.hget("ctl:master", "%016x" % DPID) == b"c1", 10, "c1 on the bus")
        self.h1 = self.net.get(self.topo.prefix + "h1")
        self.h2 = self.net.get(self.topo.prefix + "h2")
        for h in (self.h1, self.h2):
            h.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        assert self.net.ping([self.h1, self.h2], timeout=2) == 0.0

    # -- state of the world ------------------------------------------------------------------------
    def redis(self, cid: str) -> redis.Redis:
        inst = self.insts[cid]
        return redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)

    def role(self, cid: str) -> Optional[str]:
        return controller_roles(self.insts[cid]).get(DPID)

    def roles(self) -> Dict[str, Optional[str]]:
        return {cid: self.role(cid) for cid in self.insts}

    def switch_keys(self, cid: str) -> List[bytes]:
        return sorted(self.redis(cid).keys("sw:%016x:*" % DPID))

    def macs(self, cid: str) -> Dict[bytes, bytes]:
        return self.redis(cid).hgetall("sw:%016x:l2:macs" % DPID)

    def answered(self, cid: str) -> int:
        return int(self.redis(cid).hget(STATS, "packet_in") or 0)

    def raised(self) -> int:
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13,OpenFlow14,OpenFlow15", "dump-flows",
                              self.bridge, "table=0"], capture_output=True, text=True).stdout
        m = re.search(r"n_packets=(\d+),.* priority=0 actions=CONTROLLER", out)
        assert m, out
        return int(m.group(1))

    def activity(self, cid: str) -> Dict[str, Any]:
        import json
        raw = self.bus.hget("ctl:instances", cid)
        return json.loads(raw) if raw else {}

    def assert_exactly_once(self, master: str) -> None:
        """Every packet-in raised so far was answered once, by the state now at `master`."""
        poll(lambda: self.answered(master) == self.raised(), 10,
             f"{master} to have answered every packet-in")
        # A late double answer would show now. Answered is read before raised, so answered >
        # raised can only mean a packet-in answered twice (hosts may still raise new ones).
        for _ in range(6):
            answered, raised = self.answered(master), self.raised()
            assert answered <= raised, f"{answered} answers for {raised} packet-ins"
            time.sleep(0.05)
        poll(lambda: self.answered(master) == self.raised(), 10, "every packet-in answered")

    def assert_released(self, cid: str) -> None:
        """A candidate that lost or rolled back keeps no role, buffer or state."""
        poll(lambda: self.role(cid) == "SLAVE", 10, f"{cid} back to SLAVE")
        assert self.switch_keys(cid) == [], f"{cid} kept state"
        poll(lambda: not self.activity(cid).get("candidate"), 5, f"{cid} to drop its buffer")

    # -- actions -----------------------------------------------------------------------------------
    def ping_load(self, count: int = 300, interval: float = 0.01) -> None:
        self.h1.sendCmd(f"ping -n -c {count} -i {interval} -W 5 {self.h2.IP()}")

    def ping_result(self) -> Dict[str, Any]:
        """The ping load's counts; a loss shows with the late replies' times in the message."""
        out = self.h1.waitOutput()
        self.last_ping = out
        m = re.search(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?", out)
        assert m, out
        return {"sent": int(m.group(1)), "received": int(m.group(2)),
                "duplicates": int(m.group(3) or 0)}

    def migrate(self, **kw: Any) -> Dict[str, Any]:
        return ops.migrate(self.bus, DPID, **kw)

    def migrate_async(self, **kw: Any) -> "Result":
        res = Result()

        def run() -> None:
            try:
                res.value = self.migrate(**kw)
            except Exception as e:  # noqa: BLE001 -- the test looks at it
                res.error = e
            res.done.set()

        threading.Thread(target=run, daemon=True).start()
        return res

    def wait_log(self, cid: str, text: str, timeout: float = 10) -> None:
        inst = self.insts[cid]
        poll(lambda: text in inst.controller_log.read_text(errors="replace"), timeout,
             f"{cid} to log {text!r}")

    def kill(self, cid: str) -> float:
        """SIGKILL the controller process (its Redis stays); returns the time of death."""
        inst = self.insts[cid]
        os.kill(inst.controller_pid, signal.SIGKILL)
        t = time.monotonic()
        poll(lambda: not instances.alive(inst.controller_pid, str(inst.path / "controller.conf")),
             5, f"{cid} to die")
        return t

    def watch_ovs_masters(self) -> "Watcher":
        return Watcher(self.bridge)


class Result:
    def __init__(self) -> None:
        self.value: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()

    def get(self, timeout: float = 30) -> Dict[str, Any]:
        assert self.done.wait(timeout), "migration request did not return"
        if self.error:
            raise self.error
        assert self.value is not None
        return self.value


class Watcher:
    """Samples Open vSwitch's own view of the bridge's controller roles until stopped."""

    def __init__(self, bridge: str) -> None:
        self.bridge, self.samples = bridge, []
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_ev.is_set():
            self.samples.append(roles_now([self.bridge])[self.bridge])
            self.stop_ev.wait(0.05)

    def stop(self) -> List[Dict[str, str]]:
        self.stop_ev.set()
        self.thread.join()
        return self.samples

    def assert_at_most_one_master(self) -> None:
        for s in self.stop():
            assert list(s.values()).count("master") <= 1, f"two masters: {s}"
