"""PRODUCER_API_DOCS: the API's description is served, or not at all (the manifests turn it off)."""

import pytest
from fastapi.testclient import TestClient

from producer.app import create_app
from producer.settings import Settings

DESCRIPTION = ("/docs", "/redoc", "/openapi.json")


@pytest.mark.parametrize(("docs", "status"), [(True, 200), (False, 404)])
def test_the_api_s_description_follows_producer_api_docs(docs: bool, status: int) -> None:
    client = TestClient(create_app(Settings(producer_api_docs=docs)))  # not entered: no lifespan, no services
    assert {path: client.get(path).status_code for path in DESCRIPTION} == dict.fromkeys(DESCRIPTION, status)
