"""Connection limits for waitress that a slow client cannot stretch (slowloris).

waitress closes a connection only after ``channel_timeout`` seconds *without a byte*, so a
client that trickles one header line every few seconds holds its connection for ever, and
``connection_limit`` such clients stop the server from accepting anything. This module
extends waitress (a channel and a server subclass) instead of replacing it:

- a whole-request deadline: the header must be complete ``header_timeout`` seconds after
  its first byte, the whole request (header and body) ``request_timeout`` seconds after
  it, plus one second per ``MIN_BODY_RATE`` bytes of body received (so a large upload at
  a reasonable speed completes); trickling bytes extends neither by anything useful;
- a connection limit that evicts instead of refusing: when ``max_connections`` are open,
  a new connection closes the oldest one that is idle or still sending its request, so a
  legitimate request (which completes in milliseconds) always gets in;
- a per-client cap: one client address holds at most ``max_per_client`` connections;
  past it, that client's own oldest idle or incomplete connection is closed;
- request bodies larger than the largest any endpoint accepts (``max_upload`` plus room
  for multipart headers) are refused by waitress as soon as the header (Content-Length)
  or the chunked stream shows it, before they are spooled to disk, with a JSON 400 like
  the application's; smaller ones over ``max_body`` are refused by the application.

Deadlines are checked by waitress's maintenance pass, every ``CHECK_INTERVAL`` second.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import RequestEntityTooLarge

from kbgit.config import ServeConfig

#: seconds between deadline checks (waitress's cleanup_interval; an int)
CHECK_INTERVAL = 1
#: bytes per second of body that extend request_timeout (a 32 MiB upload earns 512 s)
MIN_BODY_RATE = 64 * 1024
#: extra sockets waitress may hold above max_connections while evicted ones close
EVICTION_HEADROOM = 8


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """Limits one kbgit HTTP server enforces on its connections (defaults: ServeConfig)."""

    header_timeout: float
    request_timeout: float
    idle_timeout: float
    max_connections: int
    max_per_client: int
    #: largest request body waitress receives (the largest any endpoint accepts)
    max_request_body: int

    @classmethod
    def from_config(cls, config: ServeConfig, *, max_request_body: int) -> ConnectionLimits:
        """Take the limits from a server's settings."""
        return cls(
            header_timeout=config.header_timeout,
            request_timeout=config.request_timeout,
            idle_timeout=config.idle_timeout,
            max_connections=config.max_connections,
            max_per_client=config.max_per_client,
            max_request_body=max_request_body,
        )


class JsonErrorTask(ErrorTask):
    """Answer waitress's own refusals (too large, bad framing) with kbgit's JSON errors."""

    def execute(self) -> None:
        """Write the error as ``{"error": reason}`` and close the connection."""
        err = self.request.error
        status, message = err.code, f"{err.reason}: {err.body}"
        if isinstance(err, RequestEntityTooLarge):
            limit = self.channel.server.limits.max_request_body
            status, message = 400, f"request body larger than {limit} bytes"
        body = json.dumps({"error": message}).encode()
        self.status = f"{status} {'Bad Request' if status == 400 else err.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class DeadlineChannel(HTTPChannel):
    """A waitress channel that remembers when the request it is reading began."""

    error_task_class = JsonErrorTask
    #: time (time.time) of the first byte of the request being read (None: none in progress)
    request_started: float | None = None

    def received(self, data: bytes) -> bool:
        """Note the start of a new request, then let waitress parse the bytes."""
        if self.request_started is None and data:
            self.request_started = time.time()
        accepted = super().received(data)
        if self.request is None:  # nothing partial left: the next byte starts a request
            self.request_started = None
        return accepted

    def evictable(self) -> bool:
        """Tell whether no task runs for this channel and nothing waits to be sent."""
        return not (self.requests or self.total_outbufs_len or self.will_close)

    def overdue(self, now: float, limits: ConnectionLimits) -> bool:
        """Tell whether the request being read has overrun its deadline."""
        if self.request_started is None or self.requests:
            return False
        age = now - self.request_started
        req = self.request
        if req is None or not req.headers_finished:
            return age > limits.header_timeout
        # a large upload earns time by what it delivers; a trickle earns almost none
        return age > limits.request_timeout + req.body_bytes_received / MIN_BODY_RATE


class LimitedServer(TcpWSGIServer):
    """waitress's TCP server with request deadlines, eviction and a per-client cap."""

    channel_class = DeadlineChannel

    def __init__(self, application: Any, limits: ConnectionLimits, **kw: Any) -> None:
        self.limits = limits
        kw.update(
            connection_limit=limits.max_connections + EVICTION_HEADROOM,
            channel_timeout=max(1, round(limits.idle_timeout)),
            cleanup_interval=CHECK_INTERVAL,
            # waitress refuses Content-Length >= this, so allow exactly the limit
            max_request_body_size=limits.max_request_body + 1,
            asyncore_use_poll=True,  # select() fails past fd 1024
        )
        super().__init__(application, map={}, adj=Adjustments(**kw))

    def maintenance(self, now: float) -> None:
        """Close idle channels (waitress) and channels whose request overran its deadline."""
        super().maintenance(now)
        for channel in list(self.active_channels.values()):
            if channel.overdue(now, self.limits):
                channel.will_close = True

    def handle_accept(self) -> None:
        """Accept a connection, then close the oldest stalled ones over the limits."""
        super().handle_accept()
        live = [c for c in self.active_channels.values() if not c.will_close]
        by_client: dict[Any, list[DeadlineChannel]] = defaultdict(list)
        for channel in live:
            by_client[_client(channel)].append(channel)
        for group in by_client.values():
            if len(group) > self.limits.max_per_client:
                _evict_oldest(group)
        live = [c for c in live if not c.will_close]
        if len(live) > self.limits.max_connections:
            _evict_oldest(live)


def _client(channel: HTTPChannel) -> Any:
    addr = channel.addr
    return addr[0] if isinstance(addr, tuple) else addr


def _evict_oldest(channels: list[DeadlineChannel]) -> None:
    """Close the stalled channel that has waited longest (incomplete request, else idle)."""
    candidates = [c for c in channels if c.evictable()]
    if not candidates:
        return
    victim = min(
        candidates,
        key=lambda c: c.request_started if c.request_started is not None else c.last_activity,
    )
    victim.will_close = True
