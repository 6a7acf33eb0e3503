"""Reading `/metrics` in tests: the exposition text parsed by prometheus_client's own parser."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Samples:
    values: dict[Key, float]

    @classmethod
    def parse(cls, text: str) -> Samples:
        values: dict[Key, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values[(s.name, frozenset(s.labels.items()))] = s.value
        return cls(values)

    def get(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and wanted <= ls)

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.values)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(ls)[label] for n, ls in self.values if n == name and label in dict(ls)}

    def delta(self, before: Samples, name: str, **labels: str) -> float:
        return self.get(name, **labels) - before.get(name, **labels)


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    return Samples.parse(r.text)
