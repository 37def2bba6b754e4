#!/usr/bin/env python3
"""ofbench: how many packet-ins per second a controller answers (a cbench-style load generator).

Design
------
* **Emulated switches.** N asyncio protocols, one TCP connection each, play OpenFlow 1.3 switches:
  they answer the controller's handshake (HELLO, FEATURES, the port-description multipart, SET_CONFIG,
  ROLE_REQUEST, BARRIER, ECHO) and then keep W packet-ins outstanding. Every answer frees one slot and
  is refilled at once, so the controller is never idle and never sees more than N*W packets queued:
  the measured rate is the controller's throughput, not a queue growing without bound.
* **Traffic.** Switch s has M hosts with distinct locally administered MACs; host h sits on port
  h+1. The k-th packet-in of a switch is a frame from host k mod M to another host, walking through
  every (src, dst) pair, so the learning app learns every source within the first M packet-ins
  and, after the warm-up, knows every destination (each answer is then a FLOW_MOD + PACKET_OUT).
* **Answers.** Every packet-in carries a fresh buffer_id (not OFP_NO_BUFFER). The PACKET_OUT that
  answers it carries the same buffer_id (a FLOW_MOD carrying a buffer_id, the other way a
  controller may release a buffered packet, counts too), so answers are matched exactly; unmatched
  ones are counted as stray, and a packet-in unanswered for `lost_after_s` is written off as lost
  and replaced (so one dropped packet cannot shrink the window for good).
* **No-buffer mode** (`--no-buffer`). For a controller (or a shim such as LIME's) that wants
  whole packets: packet-ins carry OFP_NO_BUFFER and the frame carries a per-packet id (4 bytes
  right after the EtherType, `FRAME_ID_AT`); a PACKET_OUT answers the packet-in whose id its data
  carries (a VLAN tag in front of the EtherType is skipped). FLOW_MODs then answer nothing (they
  hold no buffer); the PACKET_OUT that follows them does. Both modes accept both kinds of answer.
* **Ports and spares.** With `ports`, a switch describes its host ports and one link port
  (`link_port`, hosts+1) in the port-description reply (a shim maps logical ports from it).
  With `spares`, each switch d has an idle spare, dpid `spare_dpid(d)`: it does the handshake,
  answers barriers and takes flow mods and packet-outs (counted apart), but sends no packet-ins.
  A `setup` coroutine given to `drive` runs after every handshake and before any packet-in (e.g.
  asking a LIME shim to clone every switch onto its spare); then the windows open, the warm-up
  begins, and the setup's result goes into the record.
* **Clock.** Answers are counted per switch and per second of the measured window (after the
  warm-up). The raw per-second samples go to the JSON file; the headline is the median second.
* **Fence.** A platform drops packet-ins that arrive before it has finished its own handshake
  (os-ken dispatches by the state at receive time). The platform handles our ECHO_REQUEST on the
  same queue, after the port-description reply, so the switch starts its window only when that
  echo comes back.
* **CPUs.** The generator runs on core 0; the controller and its Redis (or the null responder) on
  core 1, so they do not compete for a core and the two sides stay comparable between runs.
* **Null responder.** A minimal OpenFlow 1.3 controller in its own process (core 1) answers each
  packet-in with a PACKET_OUT at once. The rate it reaches is the generator's ceiling: a
  controller measured near that ceiling is limited by ofbench, not by itself.

Wire format. Everything is built and decoded with the platform's parser via `sdnmig.compat`.
os-ken is a controller, so it cannot *encode* switch-to-controller messages (PACKET_IN,
FEATURES_REPLY, ROLE_REPLY, ...) nor *decode* controller-to-switch ones (ROLE_REQUEST, PACKET_OUT,
...): for those ofbench reuses the platform's message class for the header and packs or unpacks the
body with the platform's own struct formats (`ofproto.OFP_*_PACK_STR`). For speed, packet-ins (and
the null responder's PACKET_OUTs) are built once per host as templates and copies get their xid,
buffer_id and destination MAC patched with struct; the patch offsets are found by building the
message twice with different values, never hard-coded.

Usage:  .venv/bin/python experiments/ofbench.py [--quick] [--out DIR] [--target T ...]
Targets: null, osken (learning app on os-ken), ryu (learning app on Ryu 4.34), tcp:HOST:PORT.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import common  # noqa: E402
from sdnmig import compat, instances  # noqa: E402
from sdnmig.errors import SdnmigError  # noqa: E402

NAME = "ofbench"
OFP = compat.ofproto_v1_3
PARSER = compat.ofproto_v1_3_parser
VERSION: int = OFP.OFP_VERSION
PROTO = compat.protocol(VERSION)
NO_BUFFER: int = OFP.OFP_NO_BUFFER
MAX_BUFFER_ID = NO_BUFFER - 1

HEADER = struct.Struct(OFP.OFP_HEADER_PACK_STR)  # version, type, length, xid
HEADER_SIZE: int = OFP.OFP_HEADER_SIZE
PACKET_OUT_BODY = struct.Struct(OFP.OFP_PACKET_OUT_PACK_STR)  # buffer_id, in_port, actions_len
FLOW_MOD_BODY = struct.Struct(OFP.OFP_FLOW_MOD_PACK_STR0)  # ..., buffer_id is field 7
FLOW_MOD_BUFFER_ID_FIELD = 7
PACKET_IN_BODY = struct.Struct(OFP.OFP_PACKET_IN_PACK_STR)  # buffer_id, total_len, reason, ...
ROLE_BODY = struct.Struct(OFP.OFP_ROLE_REQUEST_PACK_STR)  # role, generation_id
MULTIPART_REQUEST_BODY = struct.Struct(OFP.OFP_MULTIPART_REQUEST_PACK_STR)  # type, flags

T_HELLO, T_ERROR = OFP.OFPT_HELLO, OFP.OFPT_ERROR
T_ECHO_REQUEST, T_ECHO_REPLY = OFP.OFPT_ECHO_REQUEST, OFP.OFPT_ECHO_REPLY
T_FEATURES_REQUEST, T_FEATURES_REPLY = OFP.OFPT_FEATURES_REQUEST, OFP.OFPT_FEATURES_REPLY
T_GET_CONFIG_REQUEST = OFP.OFPT_GET_CONFIG_REQUEST
T_PACKET_IN, T_PACKET_OUT, T_FLOW_MOD = OFP.OFPT_PACKET_IN, OFP.OFPT_PACKET_OUT, OFP.OFPT_FLOW_MOD
T_MULTIPART_REQUEST = OFP.OFPT_MULTIPART_REQUEST
T_BARRIER_REQUEST = OFP.OFPT_BARRIER_REQUEST
T_ROLE_REQUEST = OFP.OFPT_ROLE_REQUEST
#: controller-to-switch messages a switch obeys without answering
SILENT_TYPES = frozenset(getattr(OFP, n) for n in (
    "OFPT_SET_CONFIG", "OFPT_GROUP_MOD", "OFPT_PORT_MOD", "OFPT_TABLE_MOD", "OFPT_METER_MOD",
    "OFPT_SET_ASYNC", "OFPT_EXPERIMENTER", "OFPT_ECHO_REPLY", "OFPT_HELLO"))

ROLE_NOCHANGE, ROLE_EQUAL = OFP.OFPCR_ROLE_NOCHANGE, OFP.OFPCR_ROLE_EQUAL
ROLE_MASTER, ROLE_SLAVE = OFP.OFPCR_ROLE_MASTER, OFP.OFPCR_ROLE_SLAVE

#: xid of the echo request that tells a switch the platform finished its handshake
FENCE_XID = 0x0FBE0001
ETHERTYPE = 0x88B5  # IEEE "local experimental": nobody parses beyond the MACs
FRAME_LEN = 60  # minimum Ethernet frame without FCS
FRAME_ID_AT = 14  # no-buffer mode: the packet's id, right after the EtherType (our own payload)
FRAME_ID = struct.Struct("!I")
VLAN_TPIDS = (b"\x81\x00", b"\x88\xa8")  # a tag in front of the EtherType: skip its 4 bytes
PORT_BODY = struct.Struct(OFP.OFP_PORT_PACK_STR)
SPARE_DPID_BASE = 0x100  # as topologies.testbeds.spare_dpid: spare of d is 0x100 + d
HANDSHAKE_TIMEOUT_S = 20.0
PORT_DESC_GRACE_S = 2.0  # start anyway if a controller never asks for port descriptions
GENERATOR_CPU, CONTROLLER_CPU = 0, 1
LIME_BASELINE_PER_S = 9700.0  # the LIME paper's baseline controller, for the plot
BAD_LOG = re.compile(r"Traceback|SDNMIG-HANDLER-EXCEPTION|Exception occurred during handler")


class BenchError(Exception):
    """A run could not be measured; the message says what was seen."""


@dataclass(frozen=True)
class Params:
    """One load configuration (recorded verbatim in the JSON for every run)."""

    switches: int = 10
    hosts: int = 100
    window: int = 64
    warmup_s: float = 2.0
    duration_s: int = 10
    lost_after_s: float = 2.0
    no_buffer: bool = False  # packet-ins carry OFP_NO_BUFFER and an id inside the frame
    ports: bool = False      # describe host ports and the link port (not an empty list)
    spares: bool = False     # one idle spare switch per switch (implies ports)

    def check(self) -> None:
        if self.switches < 1 or self.window < 1 or self.duration_s < 1 or self.warmup_s < 0:
            raise ValueError("switches, window and duration must be at least 1, warm-up >= 0")
        if not 2 <= self.hosts <= 0xFFFE or self.switches > 0xFFFF:
            raise ValueError("hosts must be 2..65534 and switches at most 65535")
        if self.spares and self.switches >= SPARE_DPID_BASE:
            raise ValueError(f"with spares, at most {SPARE_DPID_BASE - 1} switches")


# -- message building (platform classes and formats only) ---------------------------------------

def serialise(msg: Any, xid: int = 0) -> bytes:
    """Wire bytes of a message the platform can encode."""
    msg.xid = xid
    msg.serialize()
    return bytes(msg.buf)


@functools.lru_cache(maxsize=None)
def _encoder(cls: type) -> type:
    """A subclass that appends a ready-made body: the platform's class supplies the header."""

    def _serialize_body(self: Any) -> None:
        self.buf += self.ofbench_body

    return type(cls.__name__ + "Encoder", (cls,), {"_serialize_body": _serialize_body})


def switch_message(cls: type, body: bytes = b"", xid: int = 0) -> bytes:
    """Encode a switch-to-controller message the platform only knows how to decode."""
    msg = _encoder(cls)(PROTO)
    msg.ofbench_body = body
    return serialise(msg, xid)


def host_mac(switch: int, host: int) -> bytes:
    """Locally administered unicast MAC, unique per (switch, host): 02:ss:ss:00:hh:hh."""
    return bytes((0x02, switch >> 8 & 0xFF, switch & 0xFF, 0, host >> 8 & 0xFF, host & 0xFF))


def host_port(host: int) -> int:
    return host + 1


def link_port(hosts: int) -> int:
    """The one port that is not a host's (a shim's tunnels to the spare go through it)."""
    return hosts + 1


def spare_dpid(dpid: int) -> int:
    return SPARE_DPID_BASE + dpid


def ethernet_frame(dst: bytes, src: bytes, frame_id: Optional[int] = None) -> bytes:
    """A minimum frame; `frame_id` (no-buffer mode) goes at FRAME_ID_AT, else the payload is 0."""
    head = dst + src + ETHERTYPE.to_bytes(2, "big")
    if frame_id is not None:
        head += FRAME_ID.pack(frame_id)
    return head + bytes(FRAME_LEN - len(head))


def frame_id_of(buf: Any, start: int, end: int) -> Optional[int]:
    """The id in a frame at buf[start:end] (None if too short); a VLAN tag is skipped."""
    at = start + FRAME_ID_AT
    if bytes(buf[start + 12:start + 14]) in VLAN_TPIDS:
        at += 4
    if at + FRAME_ID.size > end:
        return None
    return FRAME_ID.unpack_from(buf, at)[0]


def packet_in(xid: int, buffer_id: int, in_port: int, frame: bytes) -> bytes:
    """PACKET_IN (table miss): fixed part in the platform's format, match by its OFPMatch."""
    match = bytearray()
    match_len = PARSER.OFPMatch(in_port=in_port).serialize(match, 0)
    body = (PACKET_IN_BODY.pack(buffer_id, len(frame), OFP.OFPR_NO_MATCH, 0, 0)
            + bytes(match[:match_len]) + bytes(2) + frame)  # 2 pad bytes follow the match
    return switch_message(PARSER.OFPPacketIn, body, xid)


def hello(xid: int = 0) -> bytes:
    return serialise(PARSER.OFPHello(PROTO), xid)


def features_reply(xid: int, dpid: int, n_buffers: int = 256, n_tables: int = 254) -> bytes:
    caps = OFP.OFPC_FLOW_STATS | OFP.OFPC_TABLE_STATS | OFP.OFPC_PORT_STATS
    body = struct.pack(OFP.OFP_SWITCH_FEATURES_PACK_STR, dpid, n_buffers, n_tables, 0, caps, 0)
    return switch_message(PARSER.OFPSwitchFeatures, body, xid)


def port_desc_reply(xid: int, ports: Sequence[int] = (), dpid: int = 0) -> bytes:
    """The ports, up, 10 Gb/s copper (default: none; the learning app never asks which exist)."""
    body = struct.pack(OFP.OFP_MULTIPART_REPLY_PACK_STR, OFP.OFPMP_PORT_DESC, 0)
    speed = OFP.OFPPF_10GB_FD | OFP.OFPPF_COPPER
    for no in ports:
        mac = bytes((0x02, 0xFE, dpid >> 8 & 0xFF, dpid & 0xFF, no >> 8 & 0xFF, no & 0xFF))
        body += PORT_BODY.pack(no, mac, f"ofb{dpid:x}-{no}".encode()[:15], 0, OFP.OFPPS_LIVE,
                               speed, speed, speed, 0, 10_000_000, 10_000_000)
    return switch_message(PARSER.OFPPortDescStatsReply, body, xid)


def flow_stats_reply(xid: int) -> bytes:
    """No rules: an emulated switch keeps no flow table (what it forwards is scripted), so a
    controller that reads a bridge's rules (the LIME shim adopting a switch) reads none."""
    body = struct.pack(OFP.OFP_MULTIPART_REPLY_PACK_STR, OFP.OFPMP_FLOW, 0)
    return switch_message(PARSER.OFPFlowStatsReply, body, xid)


def role_reply(xid: int, role: int, generation_id: int) -> bytes:
    return switch_message(PARSER.OFPRoleReply, ROLE_BODY.pack(role, generation_id), xid)


def barrier_reply(xid: int) -> bytes:
    return switch_message(PARSER.OFPBarrierReply, b"", xid)


def get_config_reply(xid: int) -> bytes:
    body = struct.pack(OFP.OFP_SWITCH_CONFIG_PACK_STR, OFP.OFPC_FRAG_NORMAL, OFP.OFPCML_NO_BUFFER)
    return switch_message(PARSER.OFPGetConfigReply, body, xid)


def echo_request(xid: int, data: bytes = b"ofbench") -> bytes:
    return serialise(PARSER.OFPEchoRequest(PROTO, data=data), xid)


def echo_reply(xid: int, data: bytes = b"") -> bytes:
    return serialise(PARSER.OFPEchoReply(PROTO, data=data), xid)


def error_msg(xid: int, type_: int, code: int, data: bytes = b"") -> bytes:
    return serialise(PARSER.OFPErrorMsg(PROTO, type_=type_, code=code, data=data[:64]), xid)


def packet_out(xid: int, buffer_id: int, in_port: int, data: Optional[bytes] = None) -> bytes:
    """PACKET_OUT flooding the packet (the null responder's answer)."""
    actions = [PARSER.OFPActionOutput(OFP.OFPP_FLOOD, 0)]
    return serialise(PARSER.OFPPacketOut(PROTO, buffer_id=buffer_id, in_port=in_port,
                                         actions=actions, data=data), xid)


def field_offset(build: Callable[[bytes], bytes], width: int) -> int:
    """Where a `width`-byte field sits in a serialised message: build it with two values that
    differ in every byte and see which bytes change (so no wire offset is hard-coded)."""
    a, b = build(bytes(range(1, width + 1))), build(bytes(range(0x81, 0x81 + width)))
    if len(a) != len(b):
        raise ValueError("the field changes the message length")
    changed = [i for i in range(len(a)) if a[i] != b[i]]
    if not changed or changed != list(range(changed[0], changed[0] + width)):
        raise ValueError(f"field is not {width} contiguous bytes (changed: {changed})")
    return changed[0]


def _u32(b: bytes) -> int:
    return int.from_bytes(b, "big")


@dataclass(frozen=True)
class PacketInLayout:
    """Byte offsets of the fields ofbench patches in a packet-in template."""

    xid: int
    buffer_id: int
    eth_dst: int
    length: int
    frame_id: int  # no-buffer mode's packet id inside the frame

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def find() -> "PacketInLayout":
        src, dst = host_mac(0, 0), host_mac(0, 1)
        frame = ethernet_frame(dst, src)
        return PacketInLayout(
            xid=field_offset(lambda v: packet_in(_u32(v), 7, 1, frame), 4),
            buffer_id=field_offset(lambda v: packet_in(0, _u32(v), 1, frame), 4),
            eth_dst=field_offset(lambda v: packet_in(0, 7, 1, ethernet_frame(v, src)), 6),
            length=len(packet_in(0, 7, 1, frame)),
            frame_id=field_offset(lambda v: packet_in(0, 7, 1, ethernet_frame(dst, src, _u32(v))),
                                  4))


def traffic_pair(seq: int, hosts: int) -> Tuple[int, int]:
    """(src, dst) host of a switch's seq-th packet-in: sources round-robin, and over
    hosts*(hosts-1) packet-ins every ordered pair of distinct hosts occurs exactly once."""
    src = seq % hosts
    return src, (src + 1 + (seq // hosts) % (hosts - 1)) % hosts


class PacketInFactory:
    """Packet-ins of one emulated switch, built fast.

    Speed: the platform's encoder costs tens of microseconds a message, so one template per
    source host is serialised with it once (in_port, source MAC fixed); each packet-in is then a
    copy with xid, buffer_id and destination MAC patched in with struct. With `no_buffer` the
    templates carry OFP_NO_BUFFER and the id goes into the frame instead (`FRAME_ID_AT`).
    """

    def __init__(self, switch: int, hosts: int, no_buffer: bool = False) -> None:
        if hosts < 2:
            raise ValueError("need at least two hosts per switch")
        self.hosts = hosts
        self.no_buffer = no_buffer
        self.macs = [host_mac(switch, h) for h in range(hosts)]
        self.layout = lay = PacketInLayout.find()
        if lay.buffer_id != lay.xid + 4:
            raise ValueError("xid and buffer_id are not adjacent in this platform's PACKET_IN")
        bid = NO_BUFFER if no_buffer else 0
        self.templates = [packet_in(0, bid, host_port(h),
                                    ethernet_frame(bytes(6), self.macs[h], 0 if no_buffer else None))
                          for h in range(hosts)]
        self.seq = 0
        self._ids = struct.Struct("!II")

    def batch(self, ids: Sequence[int]) -> bytearray:
        """Consecutive packet-ins, one per id (xid = id = the buffer id, or in no-buffer mode
        the frame's id), in one buffer."""
        lay, n, macs, tmpl = self.layout, self.hosts, self.macs, self.templates
        size, xid_at, dst_at, fid_at = lay.length, lay.xid, lay.eth_dst, lay.frame_id
        pack_ids, pack_one = self._ids.pack_into, FRAME_ID.pack_into
        no_buffer = self.no_buffer
        out = bytearray(size * len(ids))
        pos, seq = 0, self.seq
        for pid in ids:
            src = seq % n
            dst = (src + 1 + (seq // n) % (n - 1)) % n  # = traffic_pair(seq, n), inlined
            seq += 1
            out[pos:pos + size] = tmpl[src]
            if no_buffer:
                pack_one(out, pos + xid_at, pid)
                pack_one(out, pos + fid_at, pid)
            else:
                pack_ids(out, pos + xid_at, pid, pid)
            out[pos + dst_at:pos + dst_at + 6] = macs[dst]
            pos += size
        self.seq = seq
        return out


class Outstanding:
    """Packet-ins sent and not yet answered: buffer_id -> send time, oldest first."""

    def __init__(self, first_id: int = 1) -> None:
        if not 1 <= first_id <= MAX_BUFFER_ID:
            raise ValueError("buffer ids are 1..0xfffffffe")
        self.sent: Dict[int, float] = {}
        self._next = first_id

    def issue(self, count: int, now: float) -> List[int]:
        """Fresh buffer ids (never OFP_NO_BUFFER, never one still outstanding)."""
        ids, sent, nxt = [], self.sent, self._next
        while len(ids) < count:
            if nxt not in sent:
                ids.append(nxt)
                sent[nxt] = now
            nxt = nxt + 1 if nxt < MAX_BUFFER_ID else 1
        self._next = nxt
        return ids

    def answer(self, buffer_id: int) -> bool:
        """True if this answers an outstanding packet-in (then it is no longer outstanding)."""
        return self.sent.pop(buffer_id, None) is not None

    def expire(self, now: float, age: float) -> int:
        """Write off packet-ins older than `age` seconds; returns how many."""
        cutoff, old = now - age, []
        for bid, t in self.sent.items():
            if t > cutoff:
                break
            old.append(bid)
        for bid in old:
            del self.sent[bid]
        return len(old)

    def __len__(self) -> int:
        return len(self.sent)


class Buckets:
    """Answers per second of the measured window; before/after it they are only totalled."""

    def __init__(self, seconds: int) -> None:
        self.counts = [0] * seconds
        self.t0: Optional[float] = None
        self.before = 0
        self.after = 0

    def add(self, now: float, n: int) -> None:
        t0 = self.t0
        if t0 is None or now < t0:
            self.before += n
            return
        i = int(now - t0)
        if i < len(self.counts):
            self.counts[i] += n
        else:
            self.after += n


def answered_buffer_id(msg_type: int, buf: Any, off: int) -> Optional[int]:
    """The buffer_id a PACKET_OUT or FLOW_MOD at buf[off:] releases (None: not such a message).
    Decoded with the platform's own formats; the emulated switch's hot loop inlines this."""
    if msg_type == T_PACKET_OUT:
        return PACKET_OUT_BODY.unpack_from(buf, off + HEADER_SIZE)[0]
    if msg_type == T_FLOW_MOD:
        return FLOW_MOD_BODY.unpack_from(buf, off + HEADER_SIZE)[FLOW_MOD_BUFFER_ID_FIELD]
    return None


def packet_out_data_id(buf: Any, off: int, mlen: int) -> Optional[int]:
    """The frame id of the data a PACKET_OUT at buf[off:off+mlen] carries (None: no data)."""
    actions_len = PACKET_OUT_BODY.unpack_from(buf, off + HEADER_SIZE)[2]
    return frame_id_of(buf, off + OFP.OFP_PACKET_OUT_SIZE + actions_len, off + mlen)


def split_messages(buf: bytearray) -> Tuple[List[Tuple[int, int, int]], int]:
    """Complete messages at the start of buf as (type, offset, length), and bytes consumed.
    Raises ValueError on a length below the header size (the stream cannot be resynchronised)."""
    out, off, end = [], 0, len(buf)
    while end - off >= HEADER_SIZE:
        _, mtype, mlen, _ = HEADER.unpack_from(buf, off)
        if mlen < HEADER_SIZE:
            raise ValueError(f"OpenFlow message of length {mlen} at offset {off}")
        if end - off < mlen:
            break
        out.append((mtype, off, mlen))
        off += mlen
    return out, off


@dataclass
class RoleState:
    """A switch's view of one controller connection's role (OpenFlow 1.3 section 6.3.5)."""

    role: int = ROLE_EQUAL
    generation_id: int = 0
    generation_known: bool = False

    def request(self, role: int, generation_id: int) -> Tuple[bool, int, int]:
        """Apply a ROLE_REQUEST: (accepted, role, generation_id) to reply with. MASTER and SLAVE
        requests older than the last generation seen are refused as stale."""
        if role in (ROLE_MASTER, ROLE_SLAVE):
            if self.generation_known and ((generation_id - self.generation_id)
                                          & 0xFFFFFFFFFFFFFFFF) >= 1 << 63:
                return False, self.role, self.generation_id
            self.generation_id, self.generation_known = generation_id, True
            self.role = role
        elif role == ROLE_EQUAL:
            self.role = role
        return True, self.role, self.generation_id


def decode_role_request(raw: bytes) -> Tuple[int, int, int]:
    """(xid, role, generation_id) of a ROLE_REQUEST (the platform cannot decode it)."""
    xid = HEADER.unpack_from(raw)[3]
    role, gen = ROLE_BODY.unpack_from(raw, HEADER_SIZE)
    return xid, role, gen


def decode_multipart_request(raw: bytes) -> Tuple[int, int, int]:
    """(xid, multipart type, flags) of a MULTIPART_REQUEST."""
    xid = HEADER.unpack_from(raw)[3]
    mp_type, flags = MULTIPART_REQUEST_BODY.unpack_from(raw, HEADER_SIZE)
    return xid, mp_type, flags


# -- the emulated switch --------------------------------------------------------------------------

class EmulatedSwitch(asyncio.Protocol):
    """One OpenFlow 1.3 switch: answers the handshake, then keeps `window` packet-ins in flight.
    A `spare` only answers (no packet-ins): what it is sent is counted, not matched."""

    def __init__(self, index: int, params: Params, spare: bool = False) -> None:
        self.index = index
        self.spare = spare
        self.dpid = spare_dpid(index + 1) if spare else index + 1
        self.params = params
        self.ports: Tuple[int, ...] = tuple(range(1, link_port(params.hosts) + 1)) \
            if params.ports or params.spares else ()
        self.factory = PacketInFactory(index, params.hosts, params.no_buffer)
        self.book = Outstanding()
        self.buckets = Buckets(params.duration_s)
        self.role = RoleState()
        self.transport: Optional[asyncio.Transport] = None
        self.rx = bytearray()
        self.ready = False  # handshake done (window started unless held)
        self.held = False  # a setup runs first: the window starts on release()
        self.closed: Optional[str] = None
        self.sent = self.stray = self.flow_mods = self.lost = self.packet_outs = 0
        self.other: Dict[str, int] = {}
        self.errors: List[str] = []
        self._fence_sent = False
        self._grace: Optional[asyncio.TimerHandle] = None
        self._loop: Any = None

    # asyncio callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        transport.write(hello())

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.closed is None:
            self.closed = f"connection lost ({exc})" if exc else "closed by the controller"
        if self._grace:
            self._grace.cancel()

    def data_received(self, data: bytes) -> None:
        rx = self.rx
        rx += data
        end, off, answered = len(rx), 0, 0
        sent = self.book.sent
        unpack_header, po_unpack, fm_unpack = HEADER.unpack_from, PACKET_OUT_BODY.unpack_from, \
            FLOW_MOD_BODY.unpack_from
        while end - off >= HEADER_SIZE:
            _, mtype, mlen, _ = unpack_header(rx, off)
            if mlen < HEADER_SIZE:
                self._fail(f"bad OpenFlow length {mlen}")
                return
            if end - off < mlen:
                break
            if mtype == T_PACKET_OUT:
                self.packet_outs += 1
                bid = po_unpack(rx, off + HEADER_SIZE)[0]
                if bid == NO_BUFFER:  # whole packet: its id is in the frame
                    bid = packet_out_data_id(rx, off, mlen)
                if sent.pop(bid, None) is not None:
                    answered += 1
                else:
                    self.stray += 1
            elif mtype == T_FLOW_MOD:
                self.flow_mods += 1
                bid = fm_unpack(rx, off + HEADER_SIZE)[FLOW_MOD_BUFFER_ID_FIELD]
                if bid != NO_BUFFER:
                    if sent.pop(bid, None) is not None:
                        answered += 1
                    else:
                        self.stray += 1
            else:
                self._control(mtype, bytes(rx[off:off + mlen]))
            off += mlen
        if off:
            del rx[:off]
        if answered:
            now = self._loop.time()
            self.buckets.add(now, answered)
            self._send_packet_ins(answered, now)

    # sending
    def _send_packet_ins(self, count: int, now: float) -> None:
        if self.transport is None or self.closed:
            return
        ids = self.book.issue(count, now)
        self.transport.write(self.factory.batch(ids))
        self.sent += count

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def start_window(self) -> None:
        if self.ready:
            return
        self.ready = True
        if self._grace:
            self._grace.cancel()
        if not self.spare and not self.held:
            self._send_packet_ins(self.params.window, self._loop.time())

    def release(self) -> None:
        """The setup is done: start the window (now, or when the handshake ends)."""
        if self.held:
            self.held = False
            if self.ready and not self.spare:
                self._send_packet_ins(self.params.window, self._loop.time())

    def expire(self, now: float) -> None:
        """Replace packet-ins the controller has not answered for lost_after_s."""
        if not self.ready or self.closed:
            return
        n = self.book.expire(now, self.params.lost_after_s)
        if n:
            self.lost += n
            self._send_packet_ins(n, now)

    def close(self) -> None:
        if self.closed is None:
            self.closed = "closed by ofbench"
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, why: str) -> None:
        self.errors.append(why)
        self.closed = why
        if self.transport is not None:
            self.transport.abort()

    def _send_fence(self) -> None:
        if not self._fence_sent:
            self._fence_sent = True
            self._write(echo_request(FENCE_XID))

    # the handshake and everything else the controller sends
    def _control(self, mtype: int, raw: bytes) -> None:
        version, _, _, xid = HEADER.unpack_from(raw)
        if mtype == T_HELLO:
            return
        if version != VERSION:
            self._write(error_msg(xid, OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_BAD_VERSION, raw))
            self.errors.append(f"message of version {version} (type {mtype})")
            return
        if mtype == T_FEATURES_REQUEST:
            self._write(features_reply(xid, self.dpid))
            self._grace = self._loop.call_later(PORT_DESC_GRACE_S, self._send_fence)
        elif mtype == T_MULTIPART_REQUEST:
            _, mp_type, _ = decode_multipart_request(raw)
            if mp_type == OFP.OFPMP_PORT_DESC:
                self._write(port_desc_reply(xid, self.ports, self.dpid))
                self._send_fence()
            elif mp_type == OFP.OFPMP_FLOW:
                self._write(flow_stats_reply(xid))
            else:
                self._write(error_msg(xid, OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_BAD_MULTIPART, raw))
        elif mtype == T_ROLE_REQUEST:
            _, role, gen = decode_role_request(raw)
            ok, role, gen = self.role.request(role, gen)
            if ok:
                self._write(role_reply(xid, role, gen))
            else:
                self._write(error_msg(xid, OFP.OFPET_ROLE_REQUEST_FAILED, OFP.OFPRRFC_STALE, raw))
        elif mtype == T_BARRIER_REQUEST:
            self._write(barrier_reply(xid))
        elif mtype == T_ECHO_REQUEST:
            self._write(echo_reply(xid, raw[HEADER_SIZE:]))
        elif mtype == T_ECHO_REPLY and xid == FENCE_XID:
            self.start_window()
        elif mtype == T_GET_CONFIG_REQUEST:
            self._write(get_config_reply(xid))
        elif mtype == T_ERROR:
            msg = compat.parse(version, raw)
            self.errors.append(f"controller sent ERROR type {getattr(msg, 'type', '?')} "
                               f"code {getattr(msg, 'code', '?')}")
        elif mtype not in SILENT_TYPES:
            key = str(mtype)
            self.other[key] = self.other.get(key, 0) + 1


Setup = Callable[[List["EmulatedSwitch"], List["EmulatedSwitch"]], Awaitable[Dict[str, Any]]]


async def drive(host: str, port: int, params: Params,
                pids: Optional[Dict[str, int]] = None,
                setup: Optional[Setup] = None) -> Dict[str, Any]:
    """Connect the switches (and spares), wait for every handshake, run `setup(switches,
    spares)` if given (its result is recorded), warm up, measure; returns raw counts (and the
    CPU use of `pids` and of this process over the measured window)."""
    loop = asyncio.get_running_loop()
    cpu = common.CpuSampler(dict(pids or {}, generator=os.getpid()))
    switches = [EmulatedSwitch(i, params) for i in range(params.switches)]
    spares = [EmulatedSwitch(i, params, spare=True) for i in range(params.switches)] \
        if params.spares else []
    everyone = switches + spares
    for sw in everyone:
        sw.held = setup is not None
    ticker: Optional[asyncio.Task] = None
    setup_result: Optional[Dict[str, Any]] = None
    connect_started = loop.time()
    try:
        for sw in everyone:
            try:
                await asyncio.wait_for(loop.create_connection(lambda sw=sw: sw, host, port), 5.0)
            except (OSError, asyncio.TimeoutError) as e:
                raise BenchError(f"cannot connect to {host}:{port}: {e}") from None
        deadline = connect_started + HANDSHAKE_TIMEOUT_S
        while not all(sw.ready for sw in everyone):
            dead = [sw for sw in everyone if sw.closed]
            if dead:
                raise BenchError(f"switch {dead[0].dpid:#x} during the handshake: {dead[0].closed}"
                                 + (f" ({dead[0].errors[0]})" if dead[0].errors else ""))
            if loop.time() > deadline:
                late = sum(not sw.ready for sw in everyone)
                raise BenchError(f"{late} of {len(everyone)} switches did not finish the "
                                 f"handshake in {HANDSHAKE_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.02)

        async def tick() -> None:
            while True:
                await asyncio.sleep(min(0.25, params.lost_after_s / 4))
                now = loop.time()
                for sw in switches:
                    sw.expire(now)

        ticker = asyncio.ensure_future(tick())
        handshake_done = loop.time()
        if setup is not None:
            setup_result = await setup(switches, spares)
        for sw in everyone:
            sw.release()
        setup_done = loop.time()
        await asyncio.sleep(params.warmup_s)
        warm = sum(sw.buckets.before for sw in switches)
        if warm == 0 and params.warmup_s > 0:
            raise BenchError(f"not one of {sum(sw.sent for sw in switches)} packet-ins was "
                             f"answered in the {params.warmup_s:g} s warm-up")
        t0 = loop.time()
        for sw in switches:
            sw.buckets.t0 = t0
        cpu.start()
        await asyncio.sleep(params.duration_s)
        t_end = loop.time()
        cpu_use = cpu.stop()
        dead = [sw for sw in everyone if sw.closed]
        if dead:
            raise BenchError(f"switch {dead[0].dpid:#x} during the measurement: {dead[0].closed}")
        per_switch = [list(sw.buckets.counts) for sw in switches]
        per_second = [sum(col) for col in zip(*per_switch)]
        errors = sorted({e for sw in everyone for e in sw.errors})
        other: Dict[str, int] = {}
        for sw in everyone:
            for k, v in sw.other.items():
                other[k] = other.get(k, 0) + v
        return {
            "per_second": per_second,
            "per_switch_per_second": per_switch,
            "answers": sum(per_second),
            "answers_per_s": sum(per_second) / params.duration_s,
            "measured_s": round(t_end - t0, 3),
            "handshake_s": round(handshake_done - connect_started, 3),
            "warmup_answers": warm,
            "late_answers": sum(sw.buckets.after for sw in switches),
            "packet_ins_sent": sum(sw.sent for sw in switches),
            "flow_mods": sum(sw.flow_mods for sw in switches),
            "stray_answers": sum(sw.stray for sw in switches),
            "lost": sum(sw.lost for sw in switches),
            "outstanding_at_end": sum(len(sw.book) for sw in switches),
            "other_messages": other,
            "switch_errors": errors,
            "cpu_cores_used": cpu_use,
            **({"setup": setup_result, "setup_s": round(setup_done - handshake_done, 3)}
               if setup is not None else {}),
            **({"spare_flow_mods": sum(sw.flow_mods for sw in spares),
                "spare_packet_outs": sum(sw.packet_outs for sw in spares)} if spares else {}),
        }
    finally:
        if ticker is not None:
            ticker.cancel()
        for sw in everyone:
            sw.close()
        await asyncio.sleep(0)


# -- the null responder -------------------------------------------------------------------------

class PacketOutTemplate:
    """The null responder's answer, serialised once by the platform; copies get xid and
    buffer_id patched with struct (speed: the responder must not be the bottleneck)."""

    def __init__(self) -> None:
        self.buf = packet_out(0, 0, OFP.OFPP_CONTROLLER)
        self.xid_at = field_offset(lambda v: packet_out(_u32(v), 7, OFP.OFPP_CONTROLLER), 4)
        self.bid_at = field_offset(lambda v: packet_out(0, _u32(v), OFP.OFPP_CONTROLLER), 4)
        self._u = struct.Struct("!I")

    def render(self, xid: int, buffer_id: int) -> bytearray:
        out = bytearray(self.buf)
        self._u.pack_into(out, self.xid_at, xid)
        self._u.pack_into(out, self.bid_at, buffer_id)
        return out


class NullController(asyncio.Protocol):
    """Handshake (HELLO, FEATURES, port descriptions), echo, and one PACKET_OUT per packet-in
    (same buffer_id, in_port OFPP_CONTROLLER, action FLOOD): no decision, no state."""

    answer = None  # type: Optional[PacketOutTemplate]

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.rx = bytearray()
        if NullController.answer is None:
            NullController.answer = PacketOutTemplate()
        transport.write(hello(1) + serialise(PARSER.OFPFeaturesRequest(PROTO), 2))

    def data_received(self, data: bytes) -> None:
        rx = self.rx
        rx += data
        end, off = len(rx), 0
        out = bytearray()
        tmpl = NullController.answer
        while end - off >= HEADER_SIZE:
            version, mtype, mlen, xid = HEADER.unpack_from(rx, off)
            if mlen < HEADER_SIZE:
                self.transport.abort()
                return
            if end - off < mlen:
                break
            if mtype == T_PACKET_IN:
                bid = PACKET_IN_BODY.unpack_from(rx, off + HEADER_SIZE)[0]
                if bid != NO_BUFFER:
                    out += tmpl.render(xid, bid)
                else:  # unbuffered: the data must go back with it (slow path, never in ofbench)
                    msg = compat.parse(version, bytes(rx[off:off + mlen]))
                    out += packet_out(xid, NO_BUFFER, msg.match["in_port"], msg.data)
            elif mtype == T_FEATURES_REPLY:
                out += serialise(PARSER.OFPPortDescStatsRequest(PROTO, 0), 3)
            elif mtype == T_ECHO_REQUEST:
                out += echo_reply(xid, bytes(rx[off + HEADER_SIZE:off + mlen]))
            off += mlen
        if off:
            del rx[:off]
        if out:
            self.transport.write(out)


def serve_null() -> None:
    """Child process: listen on an ephemeral loopback port, print it, serve until terminated."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(NullController, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())


# -- targets: what is started, pinned and stopped -----------------------------------------------

@dataclass
class Endpoint:
    host: str
    port: int
    pids: Dict[str, int] = field(default_factory=dict)
    log: Optional[Path] = None
    redis: Optional[Tuple[str, int, str]] = None  # the controller instance's (host, port, password)


TARGET_LABELS = {"null": "null responder", "osken": "learning app (os-ken)",
                 "ryu": "learning app (Ryu 4.34)"}


def parse_target(text: str) -> Tuple[str, Optional[Tuple[str, int]]]:
    """'null' | 'osken' | 'ryu' | 'tcp:HOST:PORT' (loopback only) -> (kind, address)."""
    text = text.strip()
    if text in ("null", "osken", "ryu"):
        return text, None
    if text.startswith("tcp:"):
        host, _, port_s = text[4:].rpartition(":")
        host = host.strip("[]")
        if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"target {text!r}: use tcp:HOST:PORT")
        if host != "localhost" and not host.startswith("127."):
            raise ValueError(f"target {text!r}: ofbench only sends traffic on loopback (127.0.0.1)")
        return "tcp", ("127.0.0.1" if host == "localhost" else host, int(port_s))
    raise ValueError(f"unknown target {text!r}: use null, osken, ryu or tcp:HOST:PORT")


def ryu_available() -> bool:
    try:
        instances.manager_command("ryu")
        return True
    except SdnmigError:
        return False


class Target:
    """Start (and always stop) what a run measures; `with Target(...) as endpoint:`."""

    def __init__(self, spec: str, pin: bool, app_conf: Optional[Dict[str, str]] = None,
                 apps: Sequence[str] = ("learning",)) -> None:
        self.spec = spec
        self.kind, self.address = parse_target(spec)
        self.pin = pin
        self.app_conf = dict(app_conf or {})
        self.apps = list(apps)  # loaded in this order (a shim before the app it serves)
        self.proc: Optional[subprocess.Popen] = None
        self.inst: Optional[instances.Instance] = None
        self.state_dir: Optional[Path] = None
        self.failed = False
        self.kept: Optional[str] = None  # where a failed run's controller log was left

    def __enter__(self) -> Endpoint:
        try:
            return self._start()
        except BaseException as e:
            self.failed = not isinstance(e, KeyboardInterrupt)
            self._stop()
            raise

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # keep the controller's log when a run failed (not when the user interrupted it)
        self.failed = self.failed or (exc_type is not None
                                      and not issubclass(exc_type, KeyboardInterrupt))
        self._stop()

    def _pin(self, pid: Optional[int]) -> None:
        if self.pin and pid:
            common.pin_process(pid, CONTROLLER_CPU)

    def _start(self) -> Endpoint:
        if self.kind == "tcp":
            assert self.address is not None
            return Endpoint(*self.address)
        if self.kind == "null":
            return self._start_null()
        platform = "os_ken" if self.kind == "osken" else "ryu"
        self.state_dir = Path(tempfile.mkdtemp(prefix=f"ofbench-{self.kind}-"))
        insts = instances.plan(1, self.apps, self.state_dir, of_port=16653, redis_port=26379,
                               platform=platform)
        self.inst = insts[0]
        self.inst.extra_conf.update(self.app_conf)
        instances.start_all(insts)
        self._pin(self.inst.controller_pid)
        self._pin(self.inst.redis_pid)
        return Endpoint(self.inst.host, self.inst.of_port,
                        {"controller": self.inst.controller_pid, "redis": self.inst.redis_pid},
                        self.inst.controller_log,
                        (self.inst.host, self.inst.redis_port, self.inst.redis_password))

    def _start_null(self) -> Endpoint:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-null"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     start_new_session=True, text=True)
        self._pin(self.proc.pid)
        line = _readline_with_timeout(self.proc, 15.0)
        m = re.match(r"READY (\d+)$", line.strip())
        if not m:
            raise BenchError(f"null responder did not start (said {line.strip()!r})")
        return Endpoint("127.0.0.1", int(m.group(1)), {"null_responder": self.proc.pid})

    def problems(self) -> List[str]:
        """Lines of the controller log that show a swallowed exception."""
        if self.inst is None:
            return []
        try:
            text = self.inst.controller_log.read_text(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if BAD_LOG.search(ln)][:5]

    def _stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()  # our own child, by PID
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self.inst is not None:
            instances.stop_instance(self.inst)  # by the PIDs it recorded
            if self.failed:
                self.kept = str(self.inst.controller_log)
                print(f"ofbench: controller state and log kept in {self.inst.path}", file=sys.stderr)
            self.inst = None
        if self.state_dir is not None and not self.failed:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir = None


def _readline_with_timeout(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline()


# -- the experiment ---------------------------------------------------------------------------

def run_once(spec: str, params: Params, pin: bool,
             app_conf: Optional[Dict[str, str]] = None, apps: Sequence[str] = ("learning",),
             setup: Optional[Callable[[Endpoint], Setup]] = None) -> Dict[str, Any]:
    """Start the target, drive it, stop it; the run's record (with `error` if it failed).
    `setup(endpoint)`: the coroutine function `drive` runs between handshake and warm-up."""
    record: Dict[str, Any] = {"target": spec}
    target = Target(spec, pin, app_conf, apps)
    started = time.monotonic()
    try:
        with target as ep:
            record["pids"] = ep.pids
            record.update(asyncio.run(drive(ep.host, ep.port, params, ep.pids,
                                            setup(ep) if setup is not None else None)))
            problems = target.problems()
            if problems:
                record["controller_log_problems"] = problems
    except (BenchError, SdnmigError) as e:
        record["error"] = str(e)
        if target.kept:
            record["controller_log"] = target.kept
    record["wall_s"] = round(time.monotonic() - started, 1)
    return record


def default_targets() -> List[str]:
    return ["null", "osken"] + (["ryu"] if ryu_available() else [])


def headline_key(spec: str) -> str:
    kind = parse_target(spec)[0]
    return {"null": "generator_ceiling_per_s", "osken": "packet_ins_per_s",
            "ryu": "packet_ins_per_s_ryu"}.get(kind, "packet_ins_per_s_tcp")


def summarise_runs(targets: Sequence[str], runs: Sequence[Dict[str, Any]]
                   ) -> Tuple[Dict[str, Any], Dict[str, Optional[float]]]:
    """Per target: statistics of every measured second of every run; and the headline medians."""
    summary: Dict[str, Any] = {}
    headline: Dict[str, Optional[float]] = {"packet_ins_per_s": None,
                                            "generator_ceiling_per_s": None}
    for spec in targets:
        ok = [r for r in runs if r["target"] == spec and "error" not in r]
        seconds = [x for r in ok for x in r["per_second"]]
        stats = common.summarize(seconds)
        stats["runs_ok"] = len(ok)
        stats["runs_failed"] = sum(1 for r in runs if r["target"] == spec and "error" in r)
        stats["run_means"] = [r["answers_per_s"] for r in ok]
        summary[spec] = stats
        med = stats["median"]
        key = headline_key(spec)
        if med is not None or key in headline:
            headline[key] = None if med is None else round(med, 1)
    return summary, headline


def plot(path: Path, targets: Sequence[str], runs: Sequence[Dict[str, Any]],
         params: Params) -> Optional[Path]:
    """Controllers on the left with the published baselines; the generator ceiling (null
    responder) on its own scale on the right."""
    controllers: Dict[str, List[float]] = {}
    ceiling: Dict[str, List[float]] = {}
    for spec in targets:
        label = TARGET_LABELS.get(spec, spec).replace(" (", "\n(")
        samples = [x for r in runs if r["target"] == spec and "error" not in r
                   for x in r["per_second"]]
        (ceiling if parse_target(spec)[0] == "null" else controllers)[label] = samples
    title = (f"ofbench: packet-ins answered per second (each point one measured second)\n"
             f"{params.switches} switches x {params.hosts} hosts, window {params.window}, "
             f"{params.duration_s} s after {params.warmup_s:g} s warm-up")
    refs = {"LIME paper baseline 9,700/s": LIME_BASELINE_PER_S}
    panels: List[common.Panel] = []
    if controllers:
        panels.append(("controllers", controllers, refs))
    if ceiling:
        panels.append(("generator ceiling", ceiling, {}))
    return common.plot_panels(path, panels, ylabel="answers / s", title=title)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ofbench.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Default: null responder, then the learning app on os-ken (and on Ryu if "
               ".venv-ryu exists); 3 repeats, 1 with --quick.")
    common.add_convention_args(ap)
    d = Params()
    ap.add_argument("--target", action="append", metavar="T",
                    help="null | osken | ryu | tcp:HOST:PORT (repeatable; default: see below)")
    ap.add_argument("--repeats", type=int, help="runs per target (default 3, --quick 1)")
    ap.add_argument("--switches", type=int, default=d.switches, help="emulated switches (%(default)s)")
    ap.add_argument("--hosts", type=int, default=d.hosts, help="hosts per switch (%(default)s)")
    ap.add_argument("--window", type=int, default=d.window,
                    help="packet-ins outstanding per switch (%(default)s)")
    ap.add_argument("--warmup", type=float, default=d.warmup_s, help="seconds (%(default)s)")
    ap.add_argument("--duration", type=int, default=d.duration_s,
                    help="measured seconds (%(default)s)")
    ap.add_argument("--lost-after", type=float, default=d.lost_after_s,
                    help="seconds before an unanswered packet-in is replaced (%(default)s)")
    ap.add_argument("--no-buffer", action="store_true",
                    help="packet-ins carry OFP_NO_BUFFER and an id in the frame; answers are "
                         "PACKET_OUTs carrying the frame (for controllers that want whole packets)")
    ap.add_argument("--ports", action="store_true",
                    help="describe host ports and a link port (default: an empty port list)")
    ap.add_argument("--app-conf", action="append", default=[], metavar="KEY=VALUE",
                    help="extra [sdnmig] setting for the learning app targets, e.g. "
                         "install_flows=false (repeatable; recorded with the results)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin generator/controller to cores")
    ap.add_argument("--serve-null", action="store_true", help=argparse.SUPPRESS)
    return ap


def parse_app_conf(items: Sequence[str]) -> Dict[str, str]:
    """['install_flows=false', ...] -> {'install_flows': 'false'} (checked by the app at start)."""
    conf: Dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", key.strip()) or "\n" in value:
            raise ValueError(f"--app-conf {item!r}: use KEY=VALUE, e.g. install_flows=false")
        conf[key.strip()] = value.strip()
    return conf


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM takes the Ctrl-C path (every `finally` stops what was started); a second
    SIGTERM must not cut that clean-up short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_null:
        serve_null()
        return 0
    params = Params(args.switches, args.hosts, args.window, args.warmup, args.duration,
                    args.lost_after, no_buffer=args.no_buffer, ports=args.ports)
    try:
        params.check()
        app_conf = parse_app_conf(args.app_conf)
        targets = args.target or default_targets()
        for spec in targets:
            parse_target(spec)
    except ValueError as e:
        print(f"ofbench: {e}", file=sys.stderr)
        return 2
    if any(parse_target(t)[0] == "ryu" for t in targets) and not ryu_available():
        print(f"ofbench: --target ryu: {instances.RYU_VENV} is missing (build it with "
              "'sudo make ryu-env')", file=sys.stderr)
        return 2
    repeats = args.repeats or (1 if args.quick else 3)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pin:
        common.pin_process(os.getpid(), GENERATOR_CPU)
    elif not args.no_pin:
        print("ofbench: fewer than 2 CPUs: not pinning", file=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)

    configurations = [{"name": spec, "label": TARGET_LABELS.get(spec, spec),
                       "kind": parse_target(spec)[0], "of_version": "1.3", "repeats": repeats,
                       "generator_cpu": GENERATOR_CPU if pin else None,
                       "controller_cpu": CONTROLLER_CPU if pin else None,
                       "frame_len": FRAME_LEN, "packet_in_len": PacketInLayout.find().length,
                       "app_conf": app_conf if parse_target(spec)[0] in ("osken", "ryu") else {},
                       **asdict(params)} for spec in targets]
    # Interleave targets (null, osken, ryu, null, ...) so slow drift of the machine is shared.
    plan = [(rep, spec) for rep in range(repeats) for spec in targets]
    progress = common.Progress(NAME, len(plan))
    runs: List[Dict[str, Any]] = []
    out_json, out_png = args.out / f"{NAME}.json", args.out / f"{NAME}.png"
    interrupted = False
    try:
        for rep, spec in plan:
            progress.start(f"{TARGET_LABELS.get(spec, spec)}, run {rep + 1}/{repeats}: "
                           f"{params.switches} switches x {params.hosts} hosts, window "
                           f"{params.window}, {params.warmup_s:g}+{params.duration_s} s")
            record = run_once(spec, params, pin, app_conf)
            record["repeat"] = rep
            runs.append(record)
            if "error" in record:
                progress.finish(f"FAILED: {record['error']}")
            else:
                cpu = record["cpu_cores_used"]
                busy = ", ".join(f"{k} {v:.0%}" for k, v in cpu.items()
                                 if k != "wall_s" and v is not None)
                progress.finish(f"{record['answers_per_s']:,.0f} answers/s (lost {record['lost']}, "
                                f"stray {record['stray_answers']}; CPU: {busy})")
    except KeyboardInterrupt:
        interrupted = True
        progress.note("interrupted: everything started was stopped; writing partial results")
    summary, headline = summarise_runs(targets, runs)
    common.write_json(out_json, common.result_document(
        NAME, args.quick, configurations, runs, summary, headline, interrupted=interrupted,
        platform=compat.PLATFORM))
    png = plot(out_png, targets, runs, params)
    progress.note(f"wrote {out_json}" + (f" and {png}" if png else ""))
    if interrupted:
        return 130
    common.print_headline(headline)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
