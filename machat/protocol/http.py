"""HTTP/1.1 on the chat port, sans-IO, on top of h11.

The chat port speaks two protocols, and the first bytes decide (`sniff`): a ``{``
after optional whitespace starts the chat handshake; an HTTP request line starts
HTTP.  Over HTTP the server answers exactly one request per connection
(`RequestReader`): ``/`` and the web client's files (`route`), or ``/mychat``,
the WebSocket upgrade (see `machat.protocol.websocket`).  A request is bounded in
size; anything malformed raises `HttpError`, which carries the response to send.

Origins (`origin_allowed`) are compared by scheme, host and port, so that a page
served from somewhere else cannot open a chat connection in a visitor's name.
"""

from __future__ import annotations

import enum
import importlib.resources
from collections.abc import Iterable
from functools import cache
from urllib.parse import urlsplit

import attrs
import h11

__all__ = [
    "MAX_REQUEST",
    "WEBSOCKET_PATH",
    "HttpError",
    "Origin",
    "Protocol",
    "Request",
    "RequestReader",
    "Response",
    "origin_allowed",
    "parse_origin",
    "route",
    "sniff",
]

#: The largest request (request line and headers) read before answering 431.
MAX_REQUEST = 8192
#: Where the WebSocket chat lives, as in MaChat.
WEBSOCKET_PATH = "/mychat"

_WHITESPACE = b" \t\r\n"
#: How many bytes of an HTTP method `sniff` reads before deciding.
_MAX_METHOD = 16


class Protocol(enum.Enum):
    CHAT = "chat"  #: the chat handshake, a JSON object
    HTTP = "http"  #: an HTTP request: the web client or a WebSocket upgrade


def sniff(data: bytes) -> Protocol | None:
    """Which protocol a connection speaks, from its first bytes; None: read more.

    ``{`` after optional whitespace is chat.  An upper-case token followed by a
    space (``GET /``) is HTTP.  Anything else is handed to the chat framer, which
    refuses it with a clear ``! ERROR 106``.
    """
    rest = data.lstrip(_WHITESPACE)
    if not rest:
        return None
    if rest[0] == 0x7B:  # "{"
        return Protocol.CHAT
    n = 0
    while n < len(rest) and n < _MAX_METHOD and 0x41 <= rest[n] <= 0x5A:  # A-Z
        n += 1
    if n == len(rest) and n < _MAX_METHOD:
        return None  # "GE": wait for the rest of the method
    if n and n < len(rest) and rest[n] == 0x20:
        return Protocol.HTTP
    return Protocol.CHAT


@attrs.frozen
class Response:
    """A complete response: status, extra headers, and a body."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class HttpError(Exception):
    """The peer sent a request we refuse; ``response`` is what to send back."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.response = _text_response(status, message, headers)


def _text_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(
        status,
        (("Content-Type", "text/plain; charset=utf-8"), *headers),
        message.encode() + b"\n",
    )


@attrs.frozen
class Request:
    """One HTTP request, as far as the chat port cares."""

    method: str
    target: str
    #: Header names lower-case, in the order received.
    headers: tuple[tuple[str, str], ...]
    #: Bytes received after the request (the first WebSocket frames, say).
    trailing: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of a header (the last one if repeated), or None."""
        value = None
        for key, v in self.headers:
            if key == name:
                value = v
        return value

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def wants_upgrade(self) -> bool:
        return (self.header("upgrade") or "").lower() == "websocket"


class RequestReader:
    """Reads one HTTP request, bounded by ``max_size``, and writes its response.

    `feed` the bytes received, then `next_request` returns the `Request` once its
    headers are complete (a request with a body is refused).  Every failure is an
    `HttpError`; `write` turns a `Response` into bytes, closing the connection.
    """

    def __init__(self, max_size: int = MAX_REQUEST) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_size)
        self._max_size = max_size
        self._fed = 0
        self._started = False
        self._request: Request | None = None

    def feed(self, data: bytes) -> None:
        if not self._started:
            # RFC 9112 2.2: a server should ignore empty lines before the request line.
            data = data.lstrip(_WHITESPACE)
            if not data:
                return
            self._started = True
        self._fed += len(data)
        self._h11.receive_data(data)

    def feed_eof(self) -> None:
        self._h11.receive_data(b"")

    def next_request(self) -> Request | None:
        """The request, once complete; None: feed more.  Raises `HttpError`."""
        if self._request is not None:
            return self._request
        conn = self._h11
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return None
                if isinstance(event, h11.Request):
                    if event.http_version not in (b"1.0", b"1.1"):
                        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1")
                    head = event
                    continue
                if isinstance(event, h11.Data):
                    raise HttpError(413, "request bodies are not accepted here")
                if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                    break
                if isinstance(event, h11.ConnectionClosed):
                    raise HttpError(400, "incomplete request")
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            if status == 431:
                raise HttpError(431, "request header fields too large") from None
            raise HttpError(status, f"bad request: {exc}") from None
        trailing, _closed = conn.trailing_data
        if self._fed - len(trailing) > self._max_size:
            # h11 bounds what it buffers; a request that came whole is bounded here.
            raise HttpError(431, "request header fields too large")
        self._request = Request(
            method=head.method.decode("ascii", "replace"),
            target=head.target.decode("ascii", "replace"),
            headers=tuple(
                (k.decode("ascii", "replace"), v.decode("latin-1")) for k, v in head.headers
            ),
            trailing=bytes(trailing),
        )
        return self._request

    def write(self, response: Response, *, head_only: bool = False) -> bytes:
        """The bytes of ``response``, with the headers every answer carries."""
        headers = [
            *response.headers,
            ("Content-Length", str(len(response.body))),
            ("Connection", "close"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Server", "machat"),
        ]
        try:
            return _send(self._h11, response, headers, head_only)
        except h11.LocalProtocolError:
            # The peer closed its side mid-request, and h11 answers no request it did
            # not see: answer on a machine that saw one.
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(b"GET / HTTP/1.1\r\nHost: machat\r\n\r\n")
            conn.next_event()
            return _send(conn, response, headers, head_only)


def _send(
    conn: h11.Connection, response: Response, headers: list[tuple[str, str]], head_only: bool
) -> bytes:
    # h11 lets a server answer a request it could not parse (their_state ERROR).
    reason = _REASONS.get(response.status, "")
    out = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    assert out is not None
    if response.body and not head_only:
        out += conn.send(h11.Data(data=response.body)) or b""
    return out + (conn.send(h11.EndOfMessage()) or b"")


_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}


# -- origins -------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


@attrs.frozen
class Origin:
    """An origin as compared: scheme, host and port (default ports filled in)."""

    scheme: str
    host: str
    port: int


def parse_origin(value: str) -> Origin | None:
    """``http://localhost:8099/`` -> Origin('http', 'localhost', 8099); None if unusable.

    A path after the authority is ignored (MaChat's Go client sends a trailing
    ``/``); ``ws`` and ``wss`` count as ``http`` and ``https``.
    """
    try:
        parts = urlsplit(value.strip())
        scheme = _SCHEMES.get(parts.scheme.lower())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if scheme is None or not host:
        return None
    return Origin(scheme, host.lower(), port if port is not None else _DEFAULT_PORTS[scheme])


def _own_origin(host_header: str | None, secure: bool) -> Origin | None:
    if not host_header:
        return None
    return parse_origin(("https://" if secure else "http://") + host_header)


def origin_allowed(
    origin: str | None, host: str | None, *, secure: bool, allowed: Iterable[str] = ()
) -> bool:
    """May a page from ``origin`` open the chat?  ``host`` is the request's Host.

    No Origin header (not a browser) or the page's own origin: yes.  Otherwise only
    an origin listed in ``allowed`` (``*``: any).
    """
    if origin is None:
        return True
    allowed = list(allowed)
    if "*" in allowed:
        return True
    theirs = parse_origin(origin)
    if theirs is None:
        return False
    if theirs == _own_origin(host, secure):
        return True
    return any(theirs == parse_origin(entry) for entry in allowed)


# -- the web client's files ----------------------------------------------------------

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/icon.svg": ("icon.svg", "image/svg+xml"),
}

#: The page loads nothing from anywhere else and may not be framed.
_PAGE_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-cache"),
)


@cache
def _static_file(name: str) -> bytes:
    return importlib.resources.files("machat.web").joinpath(name).read_bytes()


def route(request: Request) -> Response | None:
    """The response to a plain request; None: ``/mychat``, to upgrade (the caller's job).

    Raises `HttpError` for anything else.
    """
    path = request.path
    if path == WEBSOCKET_PATH:
        if request.method != "GET":
            raise HttpError(405, "use GET with a WebSocket upgrade", [("Allow", "GET")])
        if not request.wants_upgrade:
            raise HttpError(
                426, "this is the WebSocket chat: upgrade to websocket", [("Upgrade", "websocket")]
            )
        return None
    found = _STATIC.get(path)
    if found is None:
        raise HttpError(404, f"not found: {path[:100]}")
    if request.method not in ("GET", "HEAD"):
        raise HttpError(405, "only GET and HEAD", [("Allow", "GET, HEAD")])
    name, content_type = found
    return Response(200, (("Content-Type", content_type), *_PAGE_HEADERS), _static_file(name))
