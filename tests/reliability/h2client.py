"""A lean HTTP/2 client over cleartext (h2c, prior knowledge) for the HTTP/2 tests, built on ``h2``.

One :class:`H2Connection` carries many concurrent streams. Each
:class:`H2Stream` sends its request headers and body (in as many ``DATA``
frames as the test asks, with flow control respected), can be read as a whole
or chunk by chunk, and can be reset by the client (``RST_STREAM``, error code
``CANCEL``) at any point. A connection can accept server pushes
(``SETTINGS_ENABLE_PUSH``), which the server then promises on a stream.

Unlike ``httpx``, this client gives a test exact control over when a stream
is reset, and it spends little of the CPU the test shares with the server.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import anyio
import anyio.abc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from tests.reliability.keepalive import Reply

__all__ = ["H2Connection", "H2Stream"]

#: Windows the client grants: responses never wait for a WINDOW_UPDATE.
_WINDOW = 2**30 - 1


@dataclass
class H2Stream:
    """One request and its response on an :class:`H2Connection`."""

    connection: H2Connection
    stream_id: int
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: DATA received and not yet taken by :meth:`next_chunk`.
    pending: list[bytes] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)
    ended: bool = False
    #: The error code of a RST_STREAM the server sent, if any.
    reset_by_server: int | None = None
    reset_by_client: bool = False
    #: Streams the server promised on this one: ``(promised stream, request headers)``.
    promised: list[tuple[H2Stream, list[tuple[bytes, bytes]]]] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait(self) -> None:
        self.connection.check_alive()
        await self._changed.wait()

    async def send_data(self, data: bytes, *, end: bool = False) -> None:
        """Send ``data`` in as many DATA frames as flow control allows."""
        await self.connection.send_data(self.stream_id, data, end=end)

    async def response(self) -> int:
        """Wait for the response headers; return the status."""
        while not self.status:
            if self.reset_by_server is not None:
                raise ConnectionError(f"stream {self.stream_id} reset: {self.reset_by_server}")
            await self._wait()
        return self.status

    async def next_chunk(self) -> bytes | None:
        """The next DATA received (several frames may come as one), or ``None`` at the end."""
        while not self.pending:
            if self.ended:
                return None
            if self.reset_by_server is not None:
                raise ConnectionError(f"stream {self.stream_id} reset: {self.reset_by_server}")
            await self._wait()
        chunk = b"".join(self.pending)
        self.pending.clear()
        return chunk

    async def read(self) -> Reply:
        """The whole response."""
        await self.response()
        while await self.next_chunk() is not None:
            pass
        return Reply(self.status, self.headers, bytes(self.received))

    async def reset(self) -> None:
        """Reset the stream (RST_STREAM CANCEL), unless it has already ended."""
        self.reset_by_client = True
        await self.connection.reset(self.stream_id)


class H2Connection:
    """An HTTP/2 connection, with a task reading it until :meth:`aclose`."""

    def __init__(self, host: str, port: int, *, enable_push: bool = False) -> None:
        self.host = host
        self.port = port
        self.enable_push = enable_push
        self.streams: dict[int, H2Stream] = {}
        #: Streams the server opened by push, in the order promised.
        self.pushed: list[H2Stream] = []
        self.terminated: h2.events.ConnectionTerminated | None = None
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._socket: anyio.abc.SocketStream | None = None
        self._write_lock = anyio.Lock()
        self._window_changed = anyio.Event()
        self._slots_changed = anyio.Event()
        self._ping_acked = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._failure: BaseException | None = None

    async def __aenter__(self) -> H2Connection:
        self._socket = await anyio.connect_tcp(self.host, self.port)
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: int(self.enable_push),
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1_000,
            },
        )
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_WINDOW - 65_535)
        await self._flush()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._read)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
            self._task_group = None
        if self._socket is not None:
            await self._socket.aclose()
            self._socket = None

    async def abort(self) -> None:
        """Drop the TCP connection without a GOAWAY, as a client that vanishes does."""
        if self._socket is not None:
            # SO_LINGER 0: the close sends a TCP RST.
            raw = self._socket.extra(anyio.abc.SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await self.aclose()

    def check_alive(self) -> None:
        if self._failure is not None:
            raise ConnectionError(f"connection failed: {self._failure!r}") from self._failure
        if self.terminated is not None:
            raise ConnectionError(f"connection terminated: {self.terminated}")

    @property
    def open_streams(self) -> int:
        return self._h2.open_outbound_streams

    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        *,
        end_stream: bool = True,
    ) -> H2Stream:
        """Open a stream with the request headers (and no body, unless ``end_stream=False``)."""
        while self._h2.open_outbound_streams >= self._h2.remote_settings.max_concurrent_streams:
            self.check_alive()
            await self._slots_changed.wait()
        async with self._write_lock:
            self.check_alive()
            stream_id = self._h2.get_next_available_stream_id()
            stream = H2Stream(self, stream_id)
            self.streams[stream_id] = stream
            request_headers = [
                (b":method", method.encode()),
                (b":path", path.encode()),
                (b":scheme", b"http"),
                (b":authority", f"{self.host}:{self.port}".encode()),
                *(
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in headers
                ),
            ]
            self._h2.send_headers(stream_id, request_headers, end_stream=end_stream)
            await self._flush_locked()
        return stream

    async def send_data(self, stream_id: int, data: bytes, *, end: bool) -> None:
        view = memoryview(data)
        while True:
            async with self._write_lock:
                self.check_alive()
                window = min(
                    self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
                )
                size = min(window, len(view))
                if size or not view:
                    last = size == len(view)
                    self._h2.send_data(stream_id, bytes(view[:size]), end_stream=end and last)
                    await self._flush_locked()
                    view = view[size:]
                    if last:
                        return
                    continue
            await self._window_changed.wait()

    async def reset(self, stream_id: int) -> None:
        async with self._write_lock:
            try:
                self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.StreamClosedError:
                return  # it ended first
            await self._flush_locked()
        self._wake_slots()

    async def ping(self) -> None:
        """Send a PING and wait for its ACK: the server has read everything sent before."""
        acked = self._ping_acked = anyio.Event()
        async with self._write_lock:
            self._h2.ping(b"sessctx!")
            await self._flush_locked()
        while not acked.is_set():
            self.check_alive()
            with anyio.move_on_after(0.1):
                await acked.wait()

    async def _flush(self) -> None:
        async with self._write_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        data = self._h2.data_to_send()
        if data and self._socket is not None:
            await self._socket.send(data)

    def _wake_slots(self) -> None:
        self._slots_changed.set()
        self._slots_changed = anyio.Event()

    def _wake_window(self) -> None:
        self._window_changed.set()
        self._window_changed = anyio.Event()

    async def _read(self) -> None:
        assert self._socket is not None
        try:
            while True:
                try:
                    data = await self._socket.receive(65_536)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as error:
                    raise ConnectionError("the server closed the connection") from error
                events = self._h2.receive_data(data)
                for event in events:
                    self._handle(event)
                async with self._write_lock:
                    await self._flush_locked()
        except BaseException as error:
            if not isinstance(error, anyio.get_cancelled_exc_class()):
                self._failure = error
            raise
        finally:
            self._wake_window()
            self._wake_slots()
            for stream in list(self.streams.values()):
                stream._wake()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams[event.stream_id]
            for name, value in event.headers or ():
                if name == b":status":
                    stream.status = int(value)
                else:
                    stream.headers.append((bytes(name), bytes(value)))
            stream._wake()
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams[event.stream_id]
            data = event.data or b""
            stream.pending.append(data)
            stream.received += data
            self._h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            stream._wake()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams[event.stream_id]
            stream.ended = True
            stream._wake()
            self._wake_slots()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams[event.stream_id]
            if not stream.reset_by_client:
                stream.reset_by_server = event.error_code
            stream._wake()
            self._wake_slots()
        elif isinstance(event, h2.events.PushedStreamReceived):
            parent_id, pushed_id = event.parent_stream_id, event.pushed_stream_id
            assert parent_id is not None
            assert pushed_id is not None
            parent = self.streams[parent_id]
            pushed = H2Stream(self, pushed_id)
            self.streams[pushed_id] = pushed
            self.pushed.append(pushed)
            parent.promised.append((pushed, list(event.headers or ())))
            parent._wake()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._wake_window()
            self._wake_slots()
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_acked.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
            for stream in self.streams.values():
                stream._wake()
