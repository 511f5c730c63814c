"""Every test here runs with DATABASE_URL naming the session's own ledger database (tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _ledger(ledger_database: str) -> str:
    return ledger_database
