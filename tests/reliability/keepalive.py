"""A lean HTTP/1.1 keep-alive client for the load test, built on ``h11``.

The load test sends thousands of requests per server from a machine it shares
with the servers; ``httpx`` spends most of that budget in its connection pool.
One :class:`KeepAliveConnection` per concurrent worker keeps the client's share
of the CPU small, and ``h11`` still parses every response strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.abc
import h11

__all__ = ["KeepAliveConnection", "Reply"]


@dataclass(frozen=True)
class Reply:
    status: int
    #: Header names lower-case, in the order received.
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header_values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]


class _ClosedBeforeReply(Exception):
    """The server closed the connection before it started a reply."""


class KeepAliveConnection:
    """One TCP connection at a time, reopened when the server closes it."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self._stream: anyio.abc.SocketStream | None = None
        self._http = h11.Connection(h11.CLIENT)

    async def get(self, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> Reply:
        """Send ``GET target`` with ``headers`` (``POST`` with ``body``, when
        there is one) and read the whole reply.

        A kept-alive connection the server closed in the meantime is replaced
        once, as any HTTP client does: the server never saw that request.
        """
        with anyio.fail_after(self._timeout):
            reused = self._stream is not None
            try:
                return await self._exchange(target, headers, body)
            except _ClosedBeforeReply:
                if not reused:
                    raise
                await self._discard()
                return await self._exchange(target, headers, body)

    async def _exchange(self, target: str, headers: list[tuple[str, str]], body: bytes) -> Reply:
        stream = await self._ready()
        http = self._http
        if body:
            method = "POST"
            headers = [*headers, ("Content-Length", str(len(body)))]
        else:
            method = "GET"
        request = h11.Request(
            method=method, target=target, headers=[("Host", self._host), *headers]
        )
        data = http.send(request) or b""
        if body:
            data += http.send(h11.Data(data=body)) or b""
        data += http.send(h11.EndOfMessage()) or b""
        try:
            await stream.send(data)
        except (anyio.BrokenResourceError, OSError):
            raise _ClosedBeforeReply from None
        status = 0
        reply_headers: list[tuple[bytes, bytes]] = []
        received = bytearray()
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                try:
                    http.receive_data(await stream.receive(65_536))
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    http.receive_data(b"")
            elif isinstance(event, h11.Response):
                status = event.status_code
                reply_headers = list(event.headers)
            elif isinstance(event, h11.Data):
                received += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Reply(status, reply_headers, bytes(received))
            elif isinstance(event, h11.ConnectionClosed) and status == 0:
                raise _ClosedBeforeReply
            else:
                raise ConnectionError(f"unexpected {event!r} from {self._host}:{self._port}")

    async def _ready(self) -> anyio.abc.SocketStream:
        http = self._http
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
        elif http.our_state is not h11.IDLE:
            # The server ended this connection after its reply: open another.
            await self._discard()
        if self._stream is None:
            self._stream = await anyio.connect_tcp(self._host, self._port)
        return self._stream

    async def _discard(self) -> None:
        await self.aclose()
        self._http = h11.Connection(h11.CLIENT)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None
