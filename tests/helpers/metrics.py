"""Reading a service's /metrics as Prometheus would."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One scrape of a /metrics endpoint: every sample, by name and labels."""

    def __init__(self, url: str) -> None:
        response = httpx.get(url, timeout=5)
        response.raise_for_status()
        self.text = response.text
        self.samples = {(s.name, frozenset(s.labels.items())): s.value
                        for family in text_string_to_metric_families(self.text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a labelled child never incremented, as Prometheus's absent series reads."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def labelled(self, name: str) -> list[dict[str, str]]:
        """The label sets `name` has samples for."""
        return [dict(labels) for sample_name, labels in self.samples if sample_name == name]
