"""Fixtures for every test.

The server logs and swallows an exception raised while serving one connection, so
that one bug cannot take everyone down.  That must not let a bug pass green: any
test in which a machat logger records an exception (a record with ``exc_info``, or
at ERROR and above from ``logger.exception``) fails.  A test that provokes such a
record on purpose says so with ``@pytest.mark.allow_server_errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


class _ExceptionRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info is not None or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture(autouse=True)
def no_server_exceptions(request: pytest.FixtureRequest) -> Iterator[None]:
    recorder = _ExceptionRecorder()
    machat_logger = logging.getLogger("machat")
    machat_logger.addHandler(recorder)
    try:
        yield
    finally:
        machat_logger.removeHandler(recorder)
    if recorder.records and request.node.get_closest_marker("allow_server_errors") is None:
        lines = [
            f"{r.name}: {r.getMessage()}"
            + (f"\n{logging.Formatter().formatException(r.exc_info)}" if r.exc_info else "")
            for r in recorder.records
        ]
        pytest.fail("the server logged an exception:\n" + "\n".join(lines), pytrace=False)
