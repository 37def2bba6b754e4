"""The nodes every topology of the suite runs on: an OVS switch and a host made for it.

OpenFlow 1.3-1.5 on one bridge, `fail_mode=secure` (standalone would turn the bridge into a
learning switch after missed probes), out-of-band control on the bridge *and* on each Controller
row, a short reconnect backoff, and the userspace datapath by default (the kernel module is absent
on our machines; PLATFORM.md).
"""
from __future__ import annotations

from functools import partial
from typing import Any

from mininet.link import TCIntf, TCLink
from mininet.node import Host, OVSSwitch

PROTOCOLS = "OpenFlow13,OpenFlow14,OpenFlow15"


class SdnSwitch(OVSSwitch):
    def __init__(self, name: str, datapath: str = "user", protocols: str = PROTOCOLS,
                 failMode: str = "secure", **params: Any) -> None:
        super().__init__(name, datapath=datapath, protocols=protocols, failMode=failMode,
                         inband=False, reconnectms=1000, **params)

    def start(self, controllers: Any) -> None:
        # Switch ports are plain L2 ports: no IPv6 chatter from their root-namespace kernel side.
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd(f"sysctl -qw net.ipv6.conf.{intf.name}.disable_ipv6=1")
        super().start(controllers)
        rows = self.vsctl("get", "bridge", self.name, "controller").strip().strip("[]")
        sets = []
        for row in filter(None, (r.strip() for r in rows.split(","))):
            sets += ["--", "set", "controller", row, "connection_mode=out-of-band"]
        if sets:
            self.vsctl(*sets)


    def ofctl(self, command: str, *args: str) -> str:
        """ovs-ofctl against this bridge in OpenFlow 1.3 (Mininet's dpctl speaks 1.0, refused here)."""
        return self.cmd("ovs-ofctl", "-O", "OpenFlow13", command, self.name, *args)


class SdnHost(Host):
    """A host whose interfaces compute their own checksums.

    The userspace datapath forwards what it reads from a veth as is; a sender that leaves TCP/UDP
    checksums to offload hands it partial checksums, and the receiver drops those segments (ping
    works, TCP does not). So every host interface turns TX checksum offload off.
    """

    def config(self, **params: Any) -> Any:
        result = super().config(**params)
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd(f"ethtool -K {intf.name} tx off >/dev/null 2>&1")
        return result


class ShapedIntf(TCIntf):
    """A rate-capped interface (HTB; no netem here, so no delay). Mininet's HTB class leaves the
    quantum to r2q, which at tens of Mbit/s is over HTB's limit and makes tc warn on every
    interface; one class needs no fair share, so the quantum is one full frame."""

    def bwCmds(self, *args: Any, **kwargs: Any) -> Any:
        cmds, parent = super().bwCmds(*args, **kwargs)
        return [c + " quantum 1514" if " htb rate " in c else c for c in cmds], parent


class ShapedLink(TCLink):
    """A link whose `bw` option caps both directions (see ShapedIntf)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls1", ShapedIntf)
        kwargs.setdefault("cls2", ShapedIntf)
        super().__init__(*args, **kwargs)


def switch_class(datapath: str = "user", protocols: str = PROTOCOLS) -> Any:
    """A switch class for `Mininet(switch=...)` with a chosen datapath type and OpenFlow versions."""
    return partial(SdnSwitch, datapath=datapath, protocols=protocols)
