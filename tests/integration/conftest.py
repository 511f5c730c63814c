"""Every test here runs with DATABASE_URL naming the session's own ledger database (tests/conftest.py)."""

import pytest

from tests.helpers.app_client import client  # noqa: F401 (a fixture: imported to be offered to every test here)
from tests.helpers.keys import keys_ledger  # noqa: F401 (a fixture, likewise)


@pytest.fixture(autouse=True)
def _ledger(ledger_database: str) -> str:
    return ledger_database
