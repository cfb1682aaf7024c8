"""Which REST connections stay open: an idle connection is cheap and the first to go, a busy one is kept.

A cap that refuses new connections turns held-open idle ones into a lockout (64 sockets that never send a
byte kept every new client out until they timed out). Here an idle connection (waiting for a request's
headers: sending nothing, a partial header, or a keep-alive between requests) costs a few kilobytes and no
thread, is closed by Tornado's header timeout, and is the one let go when a cap is reached: at
`max_per_client` connections from one peer address the new one sheds that peer's longest-idle
connection, at `max_connections` in all the longest-idle of anyone's. A connection is refused only when
every connection it would displace is busy (a request's headers read and its answer not yet written).
"""

from __future__ import annotations

import collections
import logging
import resource
from typing import Dict, Optional

import tornado.httpserver
import tornado.httputil

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 4096  # REST connections open at once, idle or busy
DEFAULT_MAX_PER_CLIENT = 1024  # from one peer address (behind a proxy, all clients share its address)
# Descriptors kept for everything but REST connections: gRPC channels, model files, pipes, the admin port.
RESERVED_DESCRIPTORS = 2048


def raise_open_file_limit() -> int:
    """Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the soft limit now in force.

    Linux's default soft limit (1024) would make accept() fail (EMFILE) long before the connection caps.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, e)
    return soft


def connection_cap(max_connections: int, open_file_limit: int) -> int:
    """`max_connections`, lowered to what the open-file limit leaves after the reserve (at least 16)."""
    fits = max(16, open_file_limit - RESERVED_DESCRIPTORS)
    if max_connections > fits:
        log.warning("REST connections capped at %d, not %d: the open-file limit is %d (raise it with ulimit -n)",
                    fits, max_connections, open_file_limit)
    return min(max_connections, fits)


class SheddingHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer, capped in all and per peer address, shedding the longest-idle connection at a cap.

    Runs on the event-loop thread only, so the bookkeeping needs no lock. Sizes are set after construction
    (Tornado's HTTPServer takes no extra constructor arguments).
    """

    max_connections = DEFAULT_MAX_CONNECTIONS
    max_per_client = DEFAULT_MAX_PER_CLIENT

    def initialize(self, *args, **kwargs):
        super().initialize(*args, **kwargs)
        self._peer: Dict[object, str] = {}  # every open connection's stream -> its peer address
        self._per_peer: collections.Counter = collections.Counter()
        self._idle: "collections.OrderedDict[object, None]" = collections.OrderedDict()  # longest idle first
        self._idle_by_peer: Dict[str, "collections.OrderedDict[object, None]"] = {}
        self.refused = 0  # so a flood of refusals logs a few lines, not one each

    def handle_stream(self, stream, address):
        peer = _peer(address)
        if self._per_peer[peer] >= self.max_per_client and not self._shed(self._idle_by_peer.get(peer)):
            return self._refuse(stream, f"{peer} has {self._per_peer[peer]} connections, all busy")
        if len(self._peer) >= self.max_connections and not self._shed(self._idle):
            return self._refuse(stream, f"{len(self._peer)} connections open, all busy")
        self._peer[stream] = peer  # connections are known by their stream, which Tornado hands to every hook
        self._per_peer[peer] += 1
        self._set_idle(stream)
        super().handle_stream(stream, address)

    def start_request(self, server_conn, request_conn):
        """Called before each request's headers are read (the first, and after each answer): idle from now."""
        self._set_idle(server_conn.stream)
        return _BusyOnHeaders(super().start_request(server_conn, request_conn), self, server_conn.stream)

    def on_close(self, server_conn):
        self._forget(server_conn.stream)
        super().on_close(server_conn)

    def _set_idle(self, stream) -> None:
        peer = self._peer.get(stream)
        if peer is not None:
            for idle in (self._idle, self._idle_by_peer.setdefault(peer, collections.OrderedDict())):
                idle[stream] = None
                idle.move_to_end(stream)

    def set_busy(self, stream) -> None:
        peer = self._peer.get(stream)
        self._idle.pop(stream, None)
        if peer in self._idle_by_peer:
            self._idle_by_peer[peer].pop(stream, None)
            if not self._idle_by_peer[peer]:
                del self._idle_by_peer[peer]

    def _forget(self, stream) -> None:
        self.set_busy(stream)  # off the idle lists
        peer = self._peer.pop(stream, None)
        if peer is not None:
            self._per_peer[peer] -= 1
            if not self._per_peer[peer]:
                del self._per_peer[peer]

    def _shed(self, idle: Optional["collections.OrderedDict[object, None]"]) -> bool:
        """Closes the longest-idle connection of `idle`; False when there is none (every one is busy)."""
        if not idle:
            return False
        stream = next(iter(idle))
        self._forget(stream)  # now, not when Tornado's close callback runs: the new connection takes its place
        stream.close()
        return True

    def _refuse(self, stream, why: str) -> None:
        self.refused += 1
        if self.refused & (self.refused - 1) == 0:  # 1st, 2nd, 4th, 8th...: a flood is a few lines, not one per try
            log.warning("REST connection refused (%d so far): %s", self.refused, why)
        stream.close()


class _BusyOnHeaders(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through, marking its connection busy once the headers are in."""

    def __init__(self, delegate, server: SheddingHTTPServer, stream):
        self._delegate, self._server, self._stream = delegate, server, stream

    def headers_received(self, start_line, headers):
        self._server.set_busy(self._stream)
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self._delegate.data_received(chunk)

    def finish(self):
        return self._delegate.finish()

    def on_connection_close(self):
        return self._delegate.on_connection_close()


def _peer(address) -> str:
    """The client's IP address; an IPv4 client on a dual-stack socket counts as its IPv4 address."""
    host = address[0] if isinstance(address, tuple) and address else str(address)
    return host[7:] if host.startswith("::ffff:") else host
