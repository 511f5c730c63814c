"""Every service refuses a bad setting at start with one line that names the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-pw"

CASES = [
    ("producer", "LOG_LEVEL", "chatty", "Input should be 'DEBUG', 'INFO'"),
    ("worker", "LOG_LEVEL", "chatty", "Input should be 'DEBUG', 'INFO'"),
    ("scaler", "LOG_LEVEL", "chatty", "Input should be 'DEBUG', 'INFO'"),
    ("producer", "RABBITMQ_PORT", "0", "greater than or equal to 1"),
    ("worker", "RABBITMQ_PORT", "amqp", "valid integer"),
    ("producer", "MAX_UPLOAD_BYTES", "-1", "greater than 0"),
    # A Secret with token="" satisfies its secretKeyRef; taken as no token, it would leave the API open.
    ("producer", "UPLOAD_TOKEN", "", "is set but empty, which would leave the API open"),
    ("producer", "OIDC_ISSUER", "https://issuer.example", "needs OIDC_JWKS_URL and OIDC_AUDIENCE too"),
    ("worker", "WORKER_PREFETCH", "0", "greater than or equal to 1"),
    ("worker", "WORKER_HANDLER", "not-a-spec", "should match pattern"),
    ("worker", "WORKER_HANDLER", "no.such.module:f", "cannot import 'no.such.module:f'"),
    ("worker", "WORKER_HANDLER", "worker.handlers:missing", "cannot import 'worker.handlers:missing'"),
    ("scaler", "SCALER_MAX_JOBS", "none", "valid integer"),
]


@pytest.mark.parametrize(("service", "name", "value", "reason"), CASES)
def test_the_process_exits_at_start_naming_the_variable(service: str, name: str, value: str, reason: str) -> None:
    env = {**os.environ, name: value, "RABBITMQ_PASSWORD": PASSWORD}
    result = subprocess.run([sys.executable, "-m", service], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    (line,) = result.stderr.splitlines()  # one line, not a traceback
    assert line.startswith(f"{service}: invalid configuration: {name}: ") and reason in line, line
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.parametrize(("service", "low", "high"), [
    ("worker", "WORKER_RETRY_DELAY_SECONDS", "WORKER_RETRY_MAX_DELAY_SECONDS"),
    ("scaler", "SCALER_JOB_BACKOFF_SECONDS", "SCALER_JOB_BACKOFF_MAX_SECONDS"),
    ("producer", "MAX_LINE_BYTES", "MAX_RECORD_BYTES"),
])
def test_two_settings_that_contradict_each_other_stop_the_process_naming_both(service: str, low: str,
                                                                              high: str) -> None:
    env = {**os.environ, low: "90", high: "60"}
    result = subprocess.run([sys.executable, "-m", service], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{service}: invalid configuration: {low} (90"), line
    assert f"is more than {high} (60" in line, line


def test_the_producer_refuses_to_serve_its_metrics_on_its_api_port() -> None:
    env = {**os.environ, "PRODUCER_PORT": "8123", "PRODUCER_METRICS_PORT": "8123"}
    result = subprocess.run([sys.executable, "-m", "producer"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr == ("producer: invalid configuration: PRODUCER_METRICS_PORT and PRODUCER_PORT are both "
                             "8123; the metrics need a port of their own\n")
