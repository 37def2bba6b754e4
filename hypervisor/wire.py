"""OpenFlow on asyncio streams, for the hypervisor, the proxy and their tests.

Framing is by the 8-byte header's length; encoding and decoding are the platform's ofproto
parsers (via `sdnmig.compat`). The hypervisor-proxy link is an OpenFlow 1.3 connection too: the
tenant's messages travel on it unchanged, and the migration protocol's control messages are
experimenter messages of our own (`CONTROL_EXPERIMENTER`), their body a JSON object.

A peer that sends a header with a length under 8, a version other than the one agreed, or a
message the parser cannot decode is that peer's problem only: `BadMessage` says what, the caller
answers with an OpenFlow error or closes that connection.
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from sdnmig import compat

VERSION = compat.ofproto_v1_3.OFP_VERSION
ofp = compat.ofproto_v1_3
parser = compat.ofproto_v1_3_parser
HEADER = struct.Struct("!BBHI")
#: the experimenter id of the control messages on the hypervisor-proxy link ("sdnmig", as a
#: number outside the IEEE OUI range ONF uses)
CONTROL_EXPERIMENTER = 0xFF5D4E19
#: the most hellos a peer may send: after the first, every one is a protocol error
MAX_HELLOS = 1
DESC = compat.protocol(VERSION)
# The platform's parser logs a traceback for every message it cannot decode (it was written for
# switches that do not lie); `decode` reports each as a BadMessage its caller logs in one line.
logging.getLogger(f"{compat.PLATFORM}.ofproto.ofproto_parser").setLevel(logging.CRITICAL)


class BadMessage(Exception):
    """The peer sent something that is not a valid OpenFlow 1.3 message."""

    def __init__(self, reason: str, raw: bytes = b"", etype: int = ofp.OFPET_BAD_REQUEST,
                 code: int = ofp.OFPBRC_BAD_LEN, fatal: bool = False) -> None:
        super().__init__(reason)
        self.raw, self.etype, self.code, self.fatal = raw, etype, code, fatal


async def read_raw(reader: asyncio.StreamReader) -> bytes:
    """One message's bytes. EOF -> `asyncio.IncompleteReadError`; a length under 8 cannot be
    framed past, so it is fatal for the connection."""
    head = await reader.readexactly(HEADER.size)
    version, _type, length, _xid = HEADER.unpack(head)
    if length < HEADER.size:
        raise BadMessage(f"length {length} is under the header's 8 bytes", head, fatal=True)
    body = await reader.readexactly(length - HEADER.size)
    return head + body


def decode(raw: bytes) -> Any:
    """The parsed message, or BadMessage (wrong version, unknown type, a body the parser
    rejects)."""
    version, msg_type, length, xid = HEADER.unpack_from(raw)
    if version != VERSION:
        raise BadMessage(f"version {version}, not {VERSION}", raw, ofp.OFPET_BAD_REQUEST,
                         ofp.OFPBRC_BAD_VERSION)
    if msg_type not in _KNOWN_TYPES:
        raise BadMessage(f"unknown message type {msg_type}", raw, ofp.OFPET_BAD_REQUEST,
                         ofp.OFPBRC_BAD_TYPE)
    try:
        msg = compat.parse(VERSION, raw)
    except Exception as exc:  # noqa: BLE001  the parser raises anything on a bad body
        raise BadMessage(f"type {msg_type}: {type(exc).__name__}: {exc}", raw) from None
    if msg is None:  # a known type whose body the parser could not read
        raise BadMessage(f"type {msg_type}: body of {length - 8} bytes not decodable", raw)
    return msg


def header(raw: bytes) -> Tuple[int, int, int, int]:
    """(version, type, length, xid)."""
    return HEADER.unpack_from(raw)


def with_xid(raw: bytes, xid: int) -> bytes:
    return raw[:4] + struct.pack("!I", xid & 0xFFFFFFFF) + raw[8:]


def encode(msg: Any, xid: Optional[int] = None) -> bytes:
    if xid is not None:
        msg.xid = xid
    if msg.xid is None:
        msg.xid = 0
    msg.serialize()
    return bytes(msg.buf)


def error(etype: int, code: int, xid: int, data: bytes = b"") -> bytes:
    """An OpenFlow error carrying (as the spec asks) at least 64 bytes of the offending
    request."""
    return encode(parser.OFPErrorMsg(DESC, type_=etype, code=code, data=data[:64]), xid)


def hello() -> bytes:
    return encode(parser.OFPHello(DESC), 0)


def echo_reply(request: bytes) -> bytes:
    _v, _t, _l, xid = header(request)
    return encode(parser.OFPEchoReply(DESC, data=request[8:]), xid)


def is_type(raw: bytes, msg_type: int) -> bool:
    return raw[1] == msg_type


# -- control messages on the hypervisor-proxy link ------------------------------------------------
@dataclass(frozen=True)
class ControlMsg:
    kind: str
    body: Dict[str, Any]


def control(kind: str, **body: Any) -> bytes:
    data = json.dumps(dict(body, kind=kind), sort_keys=True).encode()
    return encode(parser.OFPExperimenter(DESC, experimenter=CONTROL_EXPERIMENTER, exp_type=0,
                                         data=data), 0)


def as_control(raw: bytes) -> Optional[ControlMsg]:
    """The control message in `raw`, or None when `raw` is a tenant's message. A control
    message that does not decode is a BadMessage."""
    if raw[1] != ofp.OFPT_EXPERIMENTER or len(raw) < 16:
        return None
    if struct.unpack_from("!I", raw, 8)[0] != CONTROL_EXPERIMENTER:
        return None
    try:
        body = json.loads(raw[16:].decode())
        kind = body.pop("kind")
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise BadMessage(f"control message: {exc}", raw, fatal=True) from None
    if not isinstance(kind, str):
        raise BadMessage("control message without a kind", raw, fatal=True)
    return ControlMsg(kind, body)


class Conn:
    """One OpenFlow connection: write whole messages, read whole messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 name: str = "") -> None:
        self.reader, self.writer, self.name = reader, writer, name
        self.closed = False

    @classmethod
    async def connect(cls, host: str, port: int, name: str = "",
                      timeout: float = 5.0) -> "Conn":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        conn = cls(reader, writer, name)
        conn.nodelay()
        return conn

    def nodelay(self) -> None:
        import socket
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, raw: bytes) -> None:
        if not self.closed:
            self.writer.write(raw)

    async def recv(self) -> bytes:
        return await read_raw(self.reader)

    async def handshake(self, timeout: float = 5.0) -> None:
        """Send our HELLO and read the peer's; a peer that cannot speak 1.3 gets
        HELLO_FAILED."""
        self.send(hello())
        raw = await asyncio.wait_for(self.recv(), timeout)
        version, msg_type, _l, xid = header(raw)
        if msg_type != ofp.OFPT_HELLO:
            raise BadMessage(f"{self.name}: first message of type {msg_type}, not HELLO", raw,
                             fatal=True)
        if version < VERSION and not _bitmap_has(raw, VERSION):
            self.send(error(ofp.OFPET_HELLO_FAILED, ofp.OFPHFC_INCOMPATIBLE, xid, raw))
            raise BadMessage(f"{self.name}: peer speaks OpenFlow version {version}", raw,
                             fatal=True)

    async def drain(self) -> None:
        if not self.closed:
            await self.writer.drain()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


def _bitmap_has(hello_raw: bytes, version: int) -> bool:
    """Whether a HELLO's version bitmap element names `version`."""
    pos = 8
    while pos + 4 <= len(hello_raw):
        etype, elen = struct.unpack_from("!HH", hello_raw, pos)
        if elen < 4:
            return False
        if etype == ofp.OFPHET_VERSIONBITMAP and pos + 8 <= len(hello_raw):
            bits = struct.unpack_from("!I", hello_raw, pos + 4)[0]
            return bool(bits & (1 << version))
        pos += (elen + 7) // 8 * 8
    return False


_KNOWN_TYPES = {getattr(ofp, name) for name in dir(ofp)
                if name.startswith("OFPT_") and isinstance(getattr(ofp, name), int)}
