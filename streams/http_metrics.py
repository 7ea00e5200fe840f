"""``GET /metrics``: the worker's counters in Prometheus' text format.

Built from the service's health report at scrape time (nothing is counted twice and nothing on
the fold path changes): every number ``/health`` has, under a stable Prometheus name. A report
without a field (a worker that has not taken a partition yet) simply lacks that metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthCollector(Collector):
    """Collects the metrics of one health report, read when Prometheus scrapes."""

    def __init__(self, health: Callable[[], Mapping[str, Any]]) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        report = self.health()
        records = report.get("records")
        if isinstance(records, Mapping):
            yield _by_label(
                "trackerflow_records",
                "Records read from the events topics, by what became of them.",
                records,
            )
        if "transactions" in report:
            yield CounterMetricFamily(
                "trackerflow_transactions",
                "Kafka transactions committed (each: one partition's batch).",
                value=report["transactions"],
            )
        if "restored_records" in report:
            yield CounterMetricFamily(
                "trackerflow_restored_records",
                "Changelog records read to restore the state of partitions taken.",
                value=report["restored_records"],
            )
        fetches = report.get("fetches")
        if isinstance(fetches, Mapping):
            yield _by_label(
                "trackerflow_fetches",
                "Fetches of the events topics, by how long the broker may hold them: busy "
                "(briefly, for a batch) or idle (long, until the first record).",
                fetches,
                "wait",
            )
        reminders = report.get("reminders")
        if isinstance(reminders, Mapping):
            yield _by_label(
                "trackerflow_reminders",
                "Reminders that came due: fired, or missed (due longer ago than the grace).",
                {k: v for k, v in reminders.items() if k in ("fired", "missed")},
            )
            if "pending" in reminders:
                yield GaugeMetricFamily(
                    "trackerflow_reminders_pending",
                    "Reminders waiting in this worker's partitions.",
                    value=reminders["pending"],
                )
        if isinstance(report.get("partitions"), list):
            yield GaugeMetricFamily(
                "trackerflow_partitions_owned",
                "Events partitions this worker owns.",
                value=len(report["partitions"]),
            )
        kafka = report.get("kafka")
        if isinstance(kafka, Mapping) and kafka.get("answering") is not None:
            yield GaugeMetricFamily(
                "trackerflow_kafka_answering",
                "1 if Kafka answered the worker's last check (every 2 s), else 0.",
                value=int(bool(kafka["answering"])),
            )
            if kafka.get("unanswered_s") is not None:
                yield GaugeMetricFamily(
                    "trackerflow_kafka_unanswered_seconds",
                    "Seconds since Kafka last answered the worker (0 while it answers).",
                    value=kafka["unanswered_s"],
                )
        failing = report.get("failing")
        if isinstance(failing, list):
            yield GaugeMetricFamily(
                "trackerflow_failing_partitions",
                "Owned partitions whose last transaction failed, until they are taken again.",
                value=sum(len(f.get("partitions", ())) for f in failing),
            )
        lag = report.get("lag")
        if isinstance(lag, Mapping):
            family = GaugeMetricFamily(
                "trackerflow_lag_records",
                "Records of an owned events partition not yet folded and committed.",
                labels=["partition"],
            )
            for partition, records in lag.items():
                family.add_metric([str(partition)], records)
            yield family
        if "uptime_s" in report:
            yield GaugeMetricFamily(
                "trackerflow_uptime_seconds", "Seconds since the worker started.",
                value=report["uptime_s"],
            )  # fmt: skip


def _by_label(
    name: str, documentation: str, counts: Mapping[str, Any], label: str = "outcome"
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def metrics_text(health: Callable[[], Mapping[str, Any]]) -> bytes:
    """The Prometheus text exposition of one health report."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(health))
    return generate_latest(registry)
