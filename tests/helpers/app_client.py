"""The producer's app in the test's own process, for tests that call its routes without a server."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from producer.app import create_app
from producer.settings import Settings


@pytest.fixture
def client(queue_name: str) -> Iterator[TestClient]:
    """The app publishing to the test's queue, its lifespan (the ledger, the broker watch) run around the test."""
    with TestClient(create_app(Settings(queue_name=queue_name))) as client:
        yield client
