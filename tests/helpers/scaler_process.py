"""`python -m scaler` as a child of a test, its JSON log lines kept in a file to read back."""

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from tests.helpers import REPO_ROOT, die_with_parent, free_port


class ScalerProcess:
    """The real scaler, started from the repository root with `settings` as its environment."""

    def __init__(self, log_path: Path, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}  # never in-cluster
        # A port of its own: scalers of one test run side by side on this host.
        env["SCALER_METRICS_PORT"] = str(free_port())
        env.update(settings)
        self.metrics_url = f"http://127.0.0.1:{env['SCALER_METRICS_PORT']}/metrics"
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(die_with_parent([sys.executable, "-m", "scaler"]), cwd=REPO_ROOT, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def events(self) -> list[dict]:
        """Every log line so far; a line that is not JSON (a traceback) is kept as its text."""
        lines = self.log_path.read_text().splitlines()
        return [_json_or_text(line) for line in lines if line.strip()]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def seconds(event: dict) -> float:
    """A log line's own timestamp (the formatter's asctime, to the millisecond)."""
    return datetime.strptime(event["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _json_or_text(line: str) -> dict:
    try:
        return json.loads(line)
    except ValueError:
        return {"message": "not json", "text": line}
