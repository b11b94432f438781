"""The HTTP side: server and handler threads, one response on the wire, gzip, pacing, caching.

Nothing here knows Mixpanel: an endpoint gets a ``Wire`` to answer on, a ``Body`` when it
streams lines of unknown total size, and ``BodyCache`` when a whole body can be made once.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections.abc import Callable, Hashable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GZIP_MIN_BYTES = 1400
# Big chunks keep syscalls and chunk framing out of the profile; pacing needs finer pieces so a
# throttled connection does not burst 64 KiB and then sleep for seconds.
_CHUNK = 64 * 1024
_THROTTLE_PIECE = 16 * 1024
# Level 1: the fake must never be the bottleneck of a benchmark; ratio does not matter here.
_GZIP_LEVEL = 1


def stall(stopping: threading.Event, seconds: float) -> None:
    """Wait, but give up at once when the server stops, so stop() stays prompt."""
    if stopping.wait(seconds):
        raise ConnectionAbortedError("fake server stopping")


class Wire:
    """One response on the socket: chunk framing, optional gzip, pacing and the abrupt cut."""

    def __init__(
        self,
        handler: Handler,
        stopping: threading.Event,
        bytes_per_second: float | None,
        throttle_payload: bool = False,
    ) -> None:
        self._handler = handler
        self._stopping = stopping
        self._bps = bytes_per_second
        self._throttle_payload = throttle_payload
        self._compressor: zlib._Compress | None = None
        self._t0 = 0.0
        # Bytes counted against the throttle: wire bytes, or payload bytes (before gzip) when
        # ``throttle_payload`` is on, so a compressible body is not sent faster than its size.
        self._paced = 0.0
        self.started = False
        self.status = 0
        self.bytes_sent = 0

    def simple(
        self,
        status: int,
        body: str,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode()
        self.status = status
        self.started = True
        h = self._handler
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        self.bytes_sent += len(data)

    def begin(self, *, gzip: bool, compress: bool = True) -> None:
        """Start a chunked 200; ``compress=False`` when the body is already gzipped (cache)."""
        self.status = 200
        self.started = True
        h = self._handler
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; charset=utf-8")
        h.send_header("Transfer-Encoding", "chunked")
        if gzip:
            h.send_header("Content-Encoding", "gzip")
            if compress:
                self._compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
        h.end_headers()
        self._t0 = time.monotonic()

    def send(self, data: bytes) -> None:
        if self._compressor is None:
            self.send_raw(data)
        elif self._bps and self._throttle_payload:
            for offset in range(0, len(data), _THROTTLE_PIECE):
                piece = data[offset : offset + _THROTTLE_PIECE]
                self.send_raw(self._compressor.compress(piece), payload=len(piece))
        else:
            self.send_raw(self._compressor.compress(data))

    def send_raw(self, data: bytes, payload: float | None = None) -> None:
        """Write ``data``; ``payload`` is what it counts against a payload throttle."""
        per_byte = 1.0
        if self._throttle_payload and payload is not None and data:
            per_byte = payload / len(data)
        # An empty chunk would be the terminator, so nothing is written for empty input.
        step = _THROTTLE_PIECE if self._bps else max(len(data), 1)
        for offset in range(0, len(data), step):
            piece = data[offset : offset + step]
            self._handler.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.bytes_sent += len(piece)
            self._pace(len(piece) * per_byte)
        if not data and payload and self._throttle_payload:
            self._pace(payload)  # gzip buffered this input: its time is still owed

    def _pace(self, amount: float) -> None:
        if not self._bps:
            return
        self._paced += amount
        delay = self._t0 + self._paced / self._bps - time.monotonic()
        if delay > 0 and self._stopping.wait(delay):
            raise ConnectionAbortedError("fake server stopping")

    def end(self, *, gzip_trailer: bool = True) -> None:
        """The terminating chunk; without ``gzip_trailer`` a gzip body stops at a clean block
        boundary but never ends (what a truncating proxy sends)."""
        if self._compressor is not None:
            mode = zlib.Z_FINISH if gzip_trailer else zlib.Z_SYNC_FLUSH
            self.send_raw(self._compressor.flush(mode), payload=0)
        self._handler.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Close without the terminating chunk: the client sees an incomplete chunked body."""
        self._handler.close_connection = True
        with contextlib.suppress(OSError):
            self._handler.connection.shutdown(socket.SHUT_RDWR)


class Body:
    """Buffers a streamed body because gzip only pays off past 1400 bytes, unknown until then.

    The encoding is decided at the first flush: on a full buffer, at the end, or at a stall that
    flushes early (then a small prefix may go uncompressed although the whole body is larger).
    """

    def __init__(self, wire: Wire, accept_gzip: bool) -> None:
        self._wire = wire
        self._accept_gzip = accept_gzip
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self._wire.started:
            self._wire.begin(gzip=self._accept_gzip and len(self._buf) > GZIP_MIN_BYTES)
        if self._buf:
            self._wire.send(bytes(self._buf))
            self._buf.clear()

    def finish(self, *, gzip_trailer: bool = True) -> None:
        self.flush()
        self._wire.end(gzip_trailer=gzip_trailer)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        self.server.dispatch(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: thousands of requests in a test run would drown pytest's output."""


class Server(ThreadingHTTPServer):
    # Daemon threads and no join on close: a stalled handler must never block stop().
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], dispatch: Callable[[Handler], None]) -> None:
        self.dispatch = dispatch
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # clients hanging up are routine here (cuts, timeouts, stop())
        super().handle_error(request, client_address)


class BodyCache:
    """Whole bodies made once per distinct request, so benchmarks measure the client, not the fake.

    Entries are (body as sent, whether it is gzipped, payload size before gzip). ``reset`` drops
    them when the dataset changes; a body made from an older ``version`` is not stored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._entries: dict[Hashable, tuple[bytes, bool, int]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}

    def reset(self, version: int) -> None:
        with self._lock:
            self._version = version
            self._entries.clear()
            self._locks.clear()

    def get(
        self, key: Hashable, version: int, accept_gzip: bool, make: Callable[[], bytes]
    ) -> tuple[bytes, bool, int]:
        full_key = (key, version, accept_gzip)
        with self._lock:
            lock = self._locks.setdefault(full_key, threading.Lock())
        with lock:
            cached = self._entries.get(full_key)
            if cached is not None:
                return cached
            raw = make()
            entry = (raw, False, len(raw))
            if accept_gzip and len(raw) > GZIP_MIN_BYTES:
                compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
                entry = (compressor.compress(raw) + compressor.flush(), True, len(raw))
            with self._lock:
                if version == self._version:
                    self._entries[full_key] = entry
            return entry
