"""The cluster tests' fixtures (real redis-server, nodes as processes), for these tests."""

from tests.cluster.conftest import redis, start_process  # noqa: F401
