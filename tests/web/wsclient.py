"""A sans-IO WebSocket client from wsproto, to test the server side against."""

from __future__ import annotations

import wsproto
import wsproto.events as wse

from machat.protocol.http import Request, RequestReader


def upgrade_request(
    host: str = "localhost:8989", target: str = "/mychat", headers: list | None = None
) -> tuple[wsproto.WSConnection, bytes]:
    """A client connection and the bytes of its upgrade request."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    data = client.send(wse.Request(host=host, target=target, extra_headers=headers or []))
    return client, data


def parse_request(data: bytes) -> Request:
    reader = RequestReader()
    reader.feed(data)
    request = reader.next_request()
    assert request is not None
    return request


def client_events(client: wsproto.WSConnection, data: bytes) -> list[wse.Event]:
    client.receive_data(data)
    return list(client.events())
