"""The README's settings table is the truth: every setting of the code, its default, and the manifests."""

import re
from pathlib import Path

import pytest
import yaml
from pydantic_settings import BaseSettings

import producer.settings
import scaler.settings
import worker.settings

ROOT = Path(__file__).resolve().parents[2]
SERVICES: dict[str, type[BaseSettings]] = {
    "producer": producer.settings.Settings,
    "worker": worker.settings.Settings,
    "scaler": scaler.settings.Settings,
}
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| (.+?) \| ([\w, ]+) \|", re.MULTILINE)


def readme_table() -> dict[str, tuple[str, str]]:
    """variable -> (default as the README writes it, the services that use it, comma-separated, or "all")."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Settings\n")
    table = text[start:text.find("\n## ", start + 1)]
    rows = {name: (_default(default), used_by) for name, default, used_by in ROW.findall(table)}
    assert len(rows) > 20, "the table was not found or not parsed"
    return rows


def _default(cell: str) -> str:
    if cell.startswith("empty"):
        return ""
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell.strip("`")


def fields(service: str) -> set[str]:
    return {name.upper() for name in SERVICES[service].model_fields}


def test_every_setting_of_every_service_is_in_the_table_and_nothing_else() -> None:
    assert set(readme_table()) == set().union(*map(fields, SERVICES))


def test_the_used_by_column_names_the_services_that_read_it() -> None:
    for name, (_, used_by) in readme_table().items():
        readers = {service for service in SERVICES if name in fields(service)}
        assert readers == (set(SERVICES) if used_by == "all" else set(used_by.split(", "))), name


@pytest.mark.parametrize("service", SERVICES)
def test_the_table_gives_the_code_s_defaults(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in readme_table():
        monkeypatch.delenv(name, raising=False)
    settings = SERVICES[service]
    as_written = {name.lower(): default for name, (default, _) in readme_table().items() if name in fields(service)}
    assert settings(**as_written) == settings()


def test_the_manifests_set_every_setting_and_their_values_are_valid() -> None:
    config_text = (ROOT / "infra" / "k8s" / "config.yaml").read_text()
    config = yaml.safe_load(config_text)["data"]
    manifests = "\n".join(p.read_text() for p in (ROOT / "infra" / "k8s").glob("*.yaml"))
    from_env_entries = set(re.findall(r"- name: ([A-Z0-9_]+)$", manifests, re.MULTILINE))
    assert set(readme_table()) <= set(config) | from_env_entries
    for service, settings in SERVICES.items():
        settings(**{k.lower(): v for k, v in config.items() if k in fields(service)})  # raises if invalid


def test_a_shipped_value_other_than_the_default_says_why() -> None:
    table = readme_table()
    for line in (ROOT / "infra" / "k8s" / "config.yaml").read_text().splitlines():
        match = re.match(r"^  ([A-Z0-9_]+): (.+?)(\s+#.*)?$", line)
        if match:
            name, value, comment = match.groups()
            assert yaml.safe_load(value) == table[name][0] or comment, line
