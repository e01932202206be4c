"""When the server hands memory back: after a crowd halves, and when it is gone."""

from __future__ import annotations

from machat.server.memory import MemoryReleaser


def due(releaser: MemoryReleaser, counts: list[int]) -> list[int]:
    return [n for n in counts if releaser.connections_changed(n)]


def test_small_servers_never_release() -> None:
    releaser = MemoryReleaser(min_peak=500)
    assert due(releaser, [*range(1, 400), *range(399, -1, -1)]) == []


def test_a_crowd_releases_when_halved_and_when_gone() -> None:
    releaser = MemoryReleaser(min_peak=500)
    up = list(range(1, 1001))
    down = list(range(999, -1, -1))
    # Halved at 500 (peak 1000), halved again at 250 (peak 500), and gone at 0;
    # below a peak of 500 only the end of the crowd counts.
    assert due(releaser, up + down) == [500, 250, 0]
    # The next crowd starts afresh.
    assert due(releaser, up + down) == [500, 250, 0]


def test_release_runs_without_error() -> None:
    releaser = MemoryReleaser()
    releaser.release()
    assert releaser.releases == 1
