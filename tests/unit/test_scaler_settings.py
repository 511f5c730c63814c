"""The scaler's settings: defaults, and start-up refusal that names the bad variable."""

import pytest

from kubejob.errors import SettingsError
from kubejob.settings import load
from scaler.settings import Settings

SCALER_VARS = [name.upper() for name in Settings.model_fields]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in SCALER_VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    settings = load(Settings)
    assert (settings.scaler_threshold, settings.scaler_messages_per_job) == (20, 500)
    assert (settings.scaler_max_jobs, settings.scaler_poll_seconds) == (5, 5.0)
    assert settings.scaler_small_backlog_wait_seconds == 60.0
    assert settings.rabbitmq_management_url == "http://localhost:15672"
    assert (settings.queue_name, settings.pod_namespace) == ("rows", "default")
    assert settings.job_template()["metadata"]["generateName"] == "worker-job-"
    # The ledger the producer and the worker find with no settings.
    assert settings.database_url.get_secret_value() == "postgresql://kubejob:kubejob@localhost:5432/kubejob"
    assert settings.database_timeout_seconds == 5.0


def test_every_field_is_described():
    undocumented = [name for name, f in Settings.model_fields.items() if not f.description]
    assert undocumented == []


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("SCALER_POLL_SECONDS", "0.5")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "http://rabbitmq:15672/")
    settings = load(Settings)
    assert settings.scaler_poll_seconds == 0.5
    assert settings.log_level == "DEBUG"
    assert settings.rabbitmq_management_url == "http://rabbitmq:15672"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCALER_THRESHOLD", "-1"),
        ("SCALER_MESSAGES_PER_JOB", "0"),
        ("SCALER_MAX_JOBS", "0"),
        ("SCALER_POLL_SECONDS", "0.1"),
        ("SCALER_POLL_SECONDS", "often"),
        ("SCALER_HTTP_TIMEOUT_SECONDS", "0"),
        ("RABBITMQ_MANAGEMENT_URL", "rabbitmq:15672"),
        ("LOG_LEVEL", "chatty"),
        ("SCALER_JOB_TEMPLATE", "kind: Pod"),
        ("SCALER_JOB_TEMPLATE", "{not yaml"),
        ("DATABASE_URL", "mysql://kubejob@db/kubejob"),
        ("DATABASE_TIMEOUT_SECONDS", "0"),
    ],
)
def test_bad_value_stops_start_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load(Settings)


def test_credentials_in_the_url_are_refused_without_echoing_them(monkeypatch):
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "http://admin:s3cret-pw@rabbitmq:15672")
    with pytest.raises(SettingsError, match="RABBITMQ_MANAGEMENT_URL") as caught:
        load(Settings)
    assert "s3cret-pw" not in str(caught.value)


def test_password_is_never_in_the_settings_text(monkeypatch):
    monkeypatch.setenv("RABBITMQ_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("DATABASE_URL", "postgresql://kubejob:db-s3cret@postgres/kubejob")
    settings = load(Settings)
    for secret in ("s3cret-pw", "db-s3cret"):
        assert secret not in repr(settings) and secret not in str(settings.model_dump())
        assert secret in settings.secrets()  # masked in every log line
    assert settings.rabbitmq_password.get_secret_value() == "s3cret-pw"


@pytest.mark.parametrize(
    ("low", "high"),
    [("SCALER_JOB_BACKOFF_SECONDS", "SCALER_JOB_BACKOFF_MAX_SECONDS"),
     ("SCALER_POLL_SECONDS", "SCALER_MAX_BACKOFF_SECONDS")],
)
def test_a_first_wait_above_its_cap_stops_start_naming_both(monkeypatch, low, high):
    monkeypatch.setenv(low, "90")
    monkeypatch.setenv(high, "60")
    with pytest.raises(SettingsError, match=f"^{low} \\(90.0\\) is more than {high} \\(60.0\\)"):
        load(Settings)
