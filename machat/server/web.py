"""The chat port's other protocols: HTTP for the web client, and WebSocket chat.

`serve_stream` serves one accepted connection, whatever it speaks.  It counts the
connection against the caps at once (a silent client counts, as before), reads the
first bytes and decides (`sniff`):

- the chat handshake: the stream goes to `serve_connection` as it is, with the
  bytes already read as the transport's prefix;
- an HTTP request: the web client's files, or at ``/mychat`` a WebSocket upgrade,
  after which `WebSocketTransport` carries the chat.

The handshake timeout runs from the first byte of the connection, HTTP included
(`serve_connection`'s ``handshake_deadline``).

`WebSocketTransport` turns text messages into chat lines (`WebSocketChat`); its
`WebSocketSender` frames each line as one text message and has one writer task,
the only writer of the socket: pongs and pings are queued to it as well.  A room's
message is framed once for all its WebSocket members (server frames are not
masked, so they are the same for everyone).  The writer ends with the close frame:
1000, 1001 at shutdown, 1008 on eviction, or the code of a protocol error (1003
binary, 1007 bad UTF-8).  A client quiet for ``ws_ping_interval`` is pinged and
dropped when nothing comes back within ``ws_ping_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..protocol.http import HttpError, Protocol, RequestReader, origin_allowed, route, sniff
from ..protocol.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    ChatData,
    Closed,
    WebSocketChat,
    accept,
    frame_lines,
)
from .connection import serve_connection
from .transport import (
    RECEIVE_SIZE,
    TRANSPORT_ERRORS,
    Peer,
    StreamSender,
    Transport,
    close_stream,
    peer_of_stream,
    transport_for_stream,
)

if TYPE_CHECKING:
    from .config import ServerConfig
    from .server import ChatServer

__all__ = ["WebSocketSender", "WebSocketTransport", "serve_stream"]

logger = logging.getLogger("machat.server")

#: Longest run of leading whitespace read before the stream goes to the chat framer.
MAX_SNIFF = 4096
#: How long a refused HTTP client gets to read the answer; a close frame to go out.
LINGER = 1.0


async def serve_stream(server: ChatServer, stream: trio.abc.Stream) -> None:
    """Serve one connection on the chat port: chat, the web client, or WebSocket chat."""
    peer = peer_of_stream(stream)
    if server.open_connection(peer) is not None:
        # Over a cap: the connection refuses it at once, with ! ERROR 109.
        await server.serve_transport(transport_for_stream(stream))
        return
    deadline = trio.current_time() + server.config.handshake_timeout
    try:
        transport = await _sniff(server, deadline, stream, peer)
        if transport is None:
            server.close_connection(peer)
            await close_stream(stream)
            return
    except BaseException:
        server.close_connection(peer)
        await trio.aclose_forcefully(stream)
        raise
    try:
        # It closes the connection and the transport.
        await serve_connection(server, transport, counted=True, handshake_deadline=deadline)
    except Exception:
        # A bug in one connection must not take the server down with it.
        logger.exception("error serving %s", peer.label)


async def _sniff(
    server: ChatServer, deadline: float, stream: trio.abc.Stream, peer: Peer
) -> Transport | None:
    """The connection's chat transport, once its protocol is known; None when done."""
    first = b""
    kind: Protocol | None = None
    try:
        with trio.move_on_at(deadline):
            while (kind := sniff(first)) is None and len(first) < MAX_SNIFF:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                first += data
    except TRANSPORT_ERRORS:
        return None
    if kind is not Protocol.HTTP:
        # Chat, or nothing in time: the connection reads on (and times out) as ever.
        return transport_for_stream(stream, first, peer)
    config = server.config
    try:
        chat = await _serve_http(stream, first, deadline, config)
    except TRANSPORT_ERRORS:
        return None
    if chat is None:
        return None
    return WebSocketTransport(
        stream,
        peer,
        chat,
        ping_interval=config.ws_ping_interval,
        ping_timeout=config.ws_ping_timeout,
        going_away=lambda: server.shutting_down,
    )


async def _serve_http(
    stream: trio.abc.Stream, first: bytes, deadline: float, config: ServerConfig
) -> WebSocketChat | None:
    """Answer one HTTP request; the accepted WebSocket if it was an upgrade."""
    reader = RequestReader()
    reader.feed(first)
    try:
        request = None
        with trio.move_on_at(deadline):
            while (request := reader.next_request()) is None:
                data = await stream.receive_some(RECEIVE_SIZE)
                if data:
                    reader.feed(bytes(data))
                else:
                    reader.feed_eof()
        if request is None:
            raise HttpError(408, "timed out: no complete request in time")
        response = route(request)
        if response is not None:
            await _send(stream, reader.write(response, head_only=request.method == "HEAD"))
            return None
        origin = request.header("origin")
        secure = config.ssl_context is not None
        if not origin_allowed(
            origin, request.header("host"), secure=secure, allowed=config.ws_origins
        ):
            logger.info("refusing a WebSocket from origin %r", origin)
            raise HttpError(403, "this origin may not open the chat (see --ws-origin)")
        response_bytes, chat = accept(request)
    except HttpError as exc:
        await _send(stream, reader.write(exc.response))
        return None
    with trio.move_on_at(deadline):
        await stream.send_all(response_bytes)
        return chat
    return None


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    """Send a whole HTTP answer, bounded in time."""
    with trio.move_on_after(LINGER + len(data) / 65536):
        try:
            await stream.send_all(data)
        except TRANSPORT_ERRORS:
            pass


class _FrameCache:
    """The frames of the last bytes framed: a room hands the same object to everyone."""

    data: bytes = b""
    frames: bytes = b""

    def frame(self, data: bytes) -> bytes:
        if data is not self.data:
            self.data = data
            self.frames = frame_lines(data)
        return self.frames


_frames = _FrameCache()


class WebSocketTransport:
    """An accepted WebSocket, read as the chat byte stream."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: Peer,
        chat: WebSocketChat,
        *,
        ping_interval: float,
        ping_timeout: float,
        going_away: Callable[[], bool] = lambda: False,
    ) -> None:
        self._stream = stream
        self.peer = peer
        self._chat = chat
        self._ping_interval = ping_interval or float("inf")
        self._ping_timeout = ping_timeout
        self._going_away = going_away
        self._last_heard = trio.current_time()
        self._sender: WebSocketSender | None = None
        self._eof = False
        #: The close code the writer ends with, when not the usual 1000 / 1001.
        self.close_code: int | None = None

    async def receive_some(self) -> bytes:
        chat = self._chat
        self._send_control(chat.data_to_send())  # pongs for frames sent with the request
        while True:
            event = chat.next_event()
            if isinstance(event, ChatData):
                await trio.lowlevel.checkpoint()
                return event.data
            if isinstance(event, Closed):
                self._eof = True
                if not event.by_peer:  # a protocol error: close with its code
                    self.close_code = event.code
                    label, reason, code = self.peer.label, event.reason, event.code
                    logger.info("websocket from %s: %s (close %d)", label, reason, code)
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            data = await self._receive_network()
            chat.receive_data(data or None)
            self._send_control(chat.data_to_send())

    async def _receive_network(self) -> bytes:
        """The next bytes from the network; pings first when the client is quiet."""
        pinged = False
        while True:
            if pinged:
                deadline = trio.current_time() + self._ping_timeout
            else:
                deadline = self._last_heard + self._ping_interval
            with trio.move_on_at(deadline):
                try:
                    data = await self._stream.receive_some(RECEIVE_SIZE)
                except trio.ClosedResourceError:
                    raise trio.BrokenResourceError("connection closed") from None
                self._last_heard = trio.current_time()
                return bytes(data)
            if pinged:
                self.close_code = CLOSE_POLICY
                raise trio.BrokenResourceError("no answer to a ping")
            self._send_control(self._chat.ping())
            pinged = True

    def _send_control(self, data: bytes) -> None:
        if data and self._sender is not None:
            self._sender.send_control(data)

    def open_sender(
        self, limit: int, nursery: trio.Nursery, on_closed: Callable[[], None]
    ) -> WebSocketSender:
        self._sender = WebSocketSender(self, limit, nursery, on_closed)
        return self._sender

    def close_frame(self) -> bytes:
        """The close frame to end with (b"" if one was sent already)."""
        code = self.close_code
        if code is None:
            code = CLOSE_GOING_AWAY if self._going_away() else CLOSE_NORMAL
        return self._chat.close(code)

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def aclose(self) -> None:
        """Stop the writer; send the close frame if it could not (bounded); close."""
        if self._sender is not None:
            await self._sender.stop()
        try:
            frame = self.close_frame()
            if frame and (self._sender is None or not self._sender.cut):
                with trio.move_on_after(LINGER):
                    await self._stream.send_all(frame)
        except (*TRANSPORT_ERRORS, trio.BusyResourceError):
            pass
        await close_stream(self._stream)


class WebSocketSender(StreamSender):
    """A `StreamSender` of frames: lines go out as text frames, and the writer ends
    with the close frame.

    The writer runs in the hub's nursery, which outlives the connection: `stop`
    (from `WebSocketTransport.aclose`) ends it.
    """

    __slots__ = ("_transport", "cut")

    def __init__(
        self,
        transport: WebSocketTransport,
        limit: int,
        nursery: trio.Nursery,
        on_closed: Callable[[], None],
    ) -> None:
        self._transport = transport
        self.cut = False  # cancelled inside send_all: a frame may be half written
        super().__init__(transport, limit, nursery, on_closed)

    def send_nowait(self, data: bytes) -> bool:
        return self.outbox.put_nowait(_frames.frame(data))

    def send_control(self, data: bytes) -> None:
        """A pong or a ping, in line with the data (they are small and rare)."""
        self.outbox.put_nowait(data)

    def close(self, last: bytes = b"") -> None:
        self.outbox.close(frame_lines(last))

    def evict(self, last: bytes) -> None:
        self._transport.close_code = CLOSE_POLICY
        self.outbox.replace_and_close(frame_lines(last))

    async def _write(self) -> None:
        transport = self._transport
        writing = False
        try:
            with self._scope:
                while data := await self.outbox.take():
                    writing = True
                    await transport.send_all(data)
                    writing = False
                frame = transport.close_frame()
                if frame:
                    writing = True
                    await transport.send_all(frame)
                    writing = False
        except TRANSPORT_ERRORS:
            self.outbox.replace_and_close(b"")
            writing = True  # the stream is broken: write nothing more
        finally:
            self.cut = writing
            self._done.set()
            self._on_closed()
