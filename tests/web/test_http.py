"""The sans-IO HTTP side of the chat port: sniffing, bounded requests, routes, origins."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from machat.protocol.http import (
    MAX_REQUEST,
    HttpError,
    Origin,
    Protocol,
    RequestReader,
    Response,
    origin_allowed,
    parse_origin,
    route,
    sniff,
)
from tests.web.wsclient import parse_request


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", None),
        (b"  \r\n", None),
        (b"{", Protocol.CHAT),
        (b' \n {"name": "Mina"}', Protocol.CHAT),
        (b"G", None),
        (b"GET", None),
        (b"GET ", Protocol.HTTP),
        (b"GET / HTTP/1.1\r\n", Protocol.HTTP),
        (b"\r\nOPTIONS * HTTP/1.1", Protocol.HTTP),
        (b"hello", Protocol.CHAT),
        (b"Get / HTTP/1.1", Protocol.CHAT),
        (b"GET/", Protocol.CHAT),
        (b"\x16\x03\x01", Protocol.CHAT),
        (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", Protocol.CHAT),
    ],
)
def test_sniff(data, expected):
    assert sniff(data) is expected


@given(st.binary(max_size=40))
def test_sniff_decides_once_and_for_all(data):
    # Once sniff decides, more bytes never change its mind.
    decided = sniff(data)
    if decided is not None:
        assert sniff(data + b"GET {") is decided


def _read(data: bytes, max_size: int = MAX_REQUEST):
    reader = RequestReader(max_size)
    reader.feed(data)
    return reader, reader.next_request()


def test_request_parsed_whole_or_byte_by_byte():
    data = b"\r\nGET /?x=1 HTTP/1.1\r\nHost: localhost:8989\r\nOrigin: http://a\r\n\r\n"
    _, whole = _read(data)
    reader = RequestReader()
    for i in range(len(data)):
        assert reader.next_request() is None
        reader.feed(data[i : i + 1])
    assert reader.next_request() == whole
    assert whole.method == "GET"
    assert whole.path == "/"
    assert whole.header("host") == "localhost:8989"
    assert whole.header("origin") == "http://a"
    assert whole.header("cookie") is None


def test_bytes_after_an_upgrade_are_kept():
    data = (
        b"GET /mychat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\n\x81\x85"
    )
    _, request = _read(data)
    assert request.wants_upgrade
    assert request.trailing == b"\x81\x85"


@pytest.mark.parametrize(
    "data",
    [
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\x00\x01 / HTTP/1.1\r\n\r\n",
    ],
)
def test_malformed_requests_get_400(data):
    reader = RequestReader()
    reader.feed(data)
    with pytest.raises(HttpError) as info:
        reader.next_request()
    assert info.value.response.status in (400, 501, 505)
    out = reader.write(info.value.response)
    assert out.startswith(b"HTTP/1.1 ")
    assert b"connection: close" in out.lower()


def test_malformed_request_response_status_line():
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(HttpError) as info:
        reader.next_request()
    assert reader.write(info.value.response).startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_request_size_is_bounded():
    reader = RequestReader(max_size=1024)
    reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(100):
        reader.feed(b"X-Filler: " + b"a" * 50 + b"\r\n")
        try:
            assert reader.next_request() is None
        except HttpError as exc:
            assert exc.response.status == 431
            break
    else:
        pytest.fail("a 5 KiB request was accepted by a 1 KiB reader")


def test_truncated_request_at_eof():
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost")
    assert reader.next_request() is None
    reader.feed_eof()
    with pytest.raises(HttpError):
        reader.next_request()


def test_a_body_is_refused():
    reader, _ = _read(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
    reader.feed(b"abc")
    with pytest.raises(HttpError) as info:
        reader.next_request()
    assert info.value.response.status == 413


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_request_or_an_http_error(data):
    reader = RequestReader(max_size=256)
    reader.feed(data)
    try:
        request = reader.next_request()
        if request is None:
            reader.feed_eof()
            reader.next_request()
    except HttpError as exc:
        out = reader.write(exc.response)
        assert out.startswith(b"HTTP/1.1 4") or out.startswith(b"HTTP/1.1 5")


def test_response_bytes_parse_as_http():
    reader, request = _read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = reader.write(Response(200, (("Content-Type", "text/plain"),), b"hello"))
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(out)
    response = client.next_event()
    assert response.status_code == 200
    assert client.next_event().data == b"hello"
    assert dict(response.headers)[b"content-length"] == b"5"


def test_head_has_no_body():
    reader, request = _read(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = reader.write(route(request), head_only=True)
    assert out.endswith(b"\r\n\r\n")
    assert b"<html" not in out


# -- routes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "needle"),
    [
        ("/", "text/html", b"<!doctype html>"),
        ("/index.html", "text/html", b'role="log"'),
        ("/app.js", "text/javascript", b"WebSocket"),
        ("/style.css", "text/css", b"prefers-color-scheme"),
    ],
)
def test_static_files(path, content_type, needle):
    response = route(parse_request(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
    headers = dict(response.headers)
    assert response.status == 200
    assert headers["Content-Type"].startswith(content_type)
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert needle in response.body


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        ("GET /nope", 404),
        ("GET /../../etc/passwd", 404),
        ("POST /", 405),
        ("DELETE /app.js", 405),
        ("POST /mychat", 405),
        ("GET /mychat", 426),
    ],
)
def test_refused_routes(request_line, status):
    with pytest.raises(HttpError) as info:
        route(parse_request(f"{request_line} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
    assert info.value.response.status == status


def test_the_upgrade_is_left_to_the_caller():
    request = parse_request(
        b"GET /mychat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: upgrade\r\n\r\n"
    )
    assert route(request) is None


# -- origins --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://localhost:8099/", Origin("http", "localhost", 8099)),
        ("http://LocalHost:8099", Origin("http", "localhost", 8099)),
        ("https://example.org", Origin("https", "example.org", 443)),
        ("http://example.org", Origin("http", "example.org", 80)),
        ("ws://example.org:80", Origin("http", "example.org", 80)),
        ("http://[::1]:8989", Origin("http", "::1", 8989)),
        ("null", None),
        ("", None),
        ("ftp://example.org", None),
        ("http://x:99999", None),
        ("http://", None),
    ],
)
def test_parse_origin(value, expected):
    assert parse_origin(value) == expected


@pytest.mark.parametrize(
    ("origin", "host", "secure", "allowed", "ok"),
    [
        (None, "localhost:8989", False, [], True),
        ("http://localhost:8989", "localhost:8989", False, [], True),
        ("http://localhost:8989/", "LOCALHOST:8989", False, [], True),
        ("http://example.org", "example.org:80", False, [], True),
        ("http://example.org:80", "example.org", False, [], True),
        ("https://localhost:8989", "localhost:8989", True, [], True),
        # scheme, host and port each matter
        ("https://localhost:8989", "localhost:8989", False, [], False),
        ("http://localhost:8989", "localhost:8989", True, [], False),
        ("http://evil.example:8989", "localhost:8989", False, [], False),
        ("http://localhost:8990", "localhost:8989", False, [], False),
        ("null", "localhost:8989", False, [], False),
        ("http://localhost:8989", None, False, [], False),
        # listed origins
        ("http://app.example", "localhost:8989", False, ["http://app.example"], True),
        ("http://app.example:81", "localhost:8989", False, ["http://app.example"], False),
        ("https://app.example", "localhost:8989", False, ["http://app.example"], False),
        ("http://anything", "localhost:8989", False, ["*"], True),
        ("null", "localhost:8989", False, ["*"], True),
    ],
)
def test_origin_allowed(origin, host, secure, allowed, ok):
    assert origin_allowed(origin, host, secure=secure, allowed=allowed) is ok


def test_a_large_request_arriving_whole_is_refused_too():
    reader = RequestReader(max_size=1024)
    reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2000 + b"\r\n\r\n")
    with pytest.raises(HttpError) as info:
        reader.next_request()
    assert info.value.response.status == 431
