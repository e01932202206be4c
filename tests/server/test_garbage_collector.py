"""The server process tunes CPython's garbage collector (`settle_garbage_collector`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from machat.cmd.chatserver import YOUNG_COLLECTION_THRESHOLD, settle_garbage_collector


@pytest.fixture
def collector() -> Iterator[list[int]]:
    """The generations collected while the test runs; the collector's settings are
    put back afterwards."""
    thresholds = gc.get_threshold()
    collected: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collected.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield collected
    finally:
        gc.callbacks.remove(note)
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_what_is_alive_at_start_is_frozen_and_older_thresholds_are_kept(
    collector: list[int],
) -> None:
    _, older, oldest = gc.get_threshold()
    kept = [object(), [1], {"a": []}]
    settle_garbage_collector()
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, older, oldest)


def test_a_thousand_new_objects_do_not_start_a_collection(collector: list[int]) -> None:
    # (Like the wait records of a thousand connections that each wait for a read:
    # with CPython's 700, they start a collection.)
    gc.set_threshold(700)
    gc.collect()
    collector.clear()
    alive = [[i] for i in range(1000)]
    assert 0 in collector

    settle_garbage_collector()
    collector.clear()
    alive += [[i] for i in range(1000)]
    assert collector == []
    del alive
