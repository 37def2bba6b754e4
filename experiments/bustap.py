"""A pattern subscription to the bus that reads each message's header line and skips the rest.

Why not redis-py's pub/sub: it turns every message into a Python bytes object through its
pure-Python parser. A Meta-Migration with copy transfer publishes the 1 MB snapshot to each
candidate, and reading those 3 MB in the experiment process took ~40 ms of CPU inside a ~70 ms
migration on our 2-core machine, slowing the very thing measured. Bus messages are a JSON header
line, a newline, then the payload (ryu_apps/erc/wire.py), and the experiment needs only the header:
this client speaks just enough RESP2 (AUTH, PSUBSCRIBE, the pushes that follow) to read it, and
drops the payload's bytes straight from the socket into a scratch buffer. (Since then payloads go
to `ercdata:<id>`, which `erc:*` does not match, so the bus does not even write them to the tap: in
a 3-candidate migration the tap had cost the bus 3 MB of writes and the winner about 3 ms.)
"""
from __future__ import annotations

import socket
from typing import Callable, Iterator, Optional, Tuple

HEAD_MAX = 65536  # a header line longer than this is not a bus message header


class TapClosed(Exception):
    pass


class _Reader:
    """Buffered RESP reading over a socket with a short timeout, so a stop flag is noticed."""

    def __init__(self, sock: socket.socket, stopped: Callable[[], bool]) -> None:
        self.sock, self.stopped = sock, stopped
        self.buf = bytearray()
        self.scratch = bytearray(1 << 16)

    def _fill(self) -> None:
        while True:
            if self.stopped():
                raise TapClosed()
            try:
                n = self.sock.recv_into(self.scratch)
            except socket.timeout:
                continue
            if n == 0:
                raise TapClosed("the bus closed the connection")
            self.buf += self.scratch[:n]
            return

    def line(self) -> bytes:
        while True:
            at = self.buf.find(b"\r\n")
            if at >= 0:
                out = bytes(self.buf[:at])
                del self.buf[:at + 2]
                return out
            self._fill()

    def take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def skip(self, n: int) -> None:
        if n <= len(self.buf):
            del self.buf[:n]
            return
        n -= len(self.buf)
        self.buf.clear()
        view = memoryview(self.scratch)
        while n > 0:
            if self.stopped():
                raise TapClosed()
            try:
                got = self.sock.recv_into(view[:min(n, len(view))])
            except socket.timeout:
                continue
            if got == 0:
                raise TapClosed("the bus closed the connection")
            n -= got

    def bulk_head(self) -> Optional[bytes]:
        """A bulk string: its text up to the first newline (the rest is skipped)."""
        size = self._size(b"$")
        if size < 0:
            return None
        first = self.take(min(size, HEAD_MAX))
        self.skip(size - len(first) + 2)  # the rest, and the CRLF
        return first.split(b"\n", 1)[0]

    def bulk(self) -> bytes:
        size = self._size(b"$")
        data = self.take(size) if size >= 0 else b""
        self.take(2)
        return data

    def _size(self, kind: bytes) -> int:
        head = self.line()
        if head[:1] != kind:
            raise ValueError(f"unexpected RESP reply {head[:80]!r}")
        return int(head[1:])


def _command(*parts: bytes) -> bytes:
    out = b"*%d\r\n" % len(parts)
    for p in parts:
        out += b"$%d\r\n%s\r\n" % (len(p), p)
    return out


class BusTap:
    """PSUBSCRIBE `pattern` on the bus; `messages()` yields (channel, header line)."""

    def __init__(self, host: str, port: int, password: Optional[str], pattern: str,
                 stopped: Callable[[], bool], timeout: float = 0.1) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.settimeout(timeout)
        self.reader = _Reader(self.sock, stopped)
        if password:
            self.sock.sendall(_command(b"AUTH", password.encode()))
            reply = self.reader.line()
            if reply != b"+OK":
                raise ValueError(f"bus AUTH refused: {reply!r}")
        self.sock.sendall(_command(b"PSUBSCRIBE", pattern.encode()))

    def messages(self) -> Iterator[Tuple[str, bytes]]:
        r = self.reader
        while True:
            count = r._size(b"*")
            kind = r.bulk()
            if kind == b"pmessage" and count == 4:
                r.bulk()  # the pattern
                chan = r.bulk().decode(errors="replace")
                head = r.bulk_head()
                yield chan, head or b""
            else:  # the subscription confirmation: kind, pattern, count
                for _ in range(count - 1):
                    line = r.line()
                    if line[:1] == b"$" and int(line[1:]) >= 0:
                        r.take(int(line[1:]) + 2)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
