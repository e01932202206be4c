"""``host:port`` parsing shared by the server and the client."""

from __future__ import annotations

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "format_address", "parse_address"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8989


def parse_address(
    text: str, default_port: int = DEFAULT_PORT, *, allow_zero: bool = False
) -> tuple[str, int]:
    """``host:port`` -> ``(host, port)``; IPv6 hosts in brackets: ``[::1]:8989``.

    The port may be left out (``host``, ``[::1]``) and so may the host (``:8989``).
    Port 0 (any free port) is accepted only with ``allow_zero``, for servers.
    Raises `ValueError` with a readable message.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host:
            raise ValueError(f"invalid address {text!r}: expected [host]:port")
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid address {text!r}: expected [host]:port")
        port_text = rest[1:] if rest else ""
    elif text.count(":") > 1:
        raise ValueError(f"invalid address {text!r}: write IPv6 addresses as [::1]:8989")
    else:
        host, _, port_text = text.partition(":")
    if not port_text and not text.endswith(":"):
        return host or DEFAULT_HOST, default_port
    lowest = 0 if allow_zero else 1
    if not (port_text.isascii() and port_text.isdigit()) or not lowest <= int(port_text) < 65536:
        raise ValueError(f"invalid port {port_text!r} in address {text!r}: expected {lowest}-65535")
    return host or DEFAULT_HOST, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of `parse_address`: ``localhost:8989``, ``[::1]:8989``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
