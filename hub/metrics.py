"""Prometheus metrics of one hub process, on ``/metrics``.

Each :class:`HubMetrics` has its own ``CollectorRegistry`` (several hubs can live in one test
process). Counters are bumped by the service; registry sizes and the MQTT owner's counters are
read when scraped, so they cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xiaozhi_hub.registry import Registry
from xiaozhi_runtime.mqtt import OwnerStats

__all__ = ["CONTENT_TYPE", "HubMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_OWNER_COUNTERS = (
    "connects",
    "published",
    "acknowledged",
    "received",
    "dropped_qos0",
    "dropped_qos1",
    "requeued_qos1",
)


class _StateCollector(Collector):
    def __init__(self, registry: Registry, owner_stats: Callable[[], OwnerStats]) -> None:
        self._registry = registry
        self._owner_stats = owner_stats

    def collect(self) -> Iterator[Metric]:
        devices = self._registry.devices()
        known = GaugeMetricFamily(
            "xiaozhi_hub_registry_devices", "Devices in the registry", labels=["state"]
        )
        connected = sum(1 for d in devices if d.connected)
        known.add_metric(["known"], len(devices))
        known.add_metric(["connected"], connected)
        yield known
        yield GaugeMetricFamily(
            "xiaozhi_hub_registry_groups",
            "Groups in the registry",
            value=len(self._registry.groups()),
        )
        stats = asdict(self._owner_stats())
        for name in _OWNER_COUNTERS:
            yield CounterMetricFamily(
                f"xiaozhi_hub_mqtt_{name}", f"MQTT owner: {name.replace('_', ' ')}", stats[name]
            )
        yield GaugeMetricFamily(
            "xiaozhi_hub_mqtt_connected", "1 while connected to the broker", stats["connected"]
        )
        yield GaugeMetricFamily(
            "xiaozhi_hub_mqtt_queued", "Messages waiting for the broker", stats["queued"]
        )
        yield GaugeMetricFamily(
            "xiaozhi_hub_mqtt_inflight", "QoS 1 messages awaiting PUBACK", stats["inflight"]
        )


class HubMetrics:
    """The hub's counters and histograms, and the text exposition of all of them."""

    def __init__(self, registry: Registry, owner_stats: Callable[[], OwnerStats]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.voice_commands = Counter(
            "xiaozhi_hub_voice_commands",
            "Voice commands handled, by outcome (executed, not_executed, invalid, duplicate)",
            ["outcome"],
            registry=self.registry,
        )
        self.actions = Counter(
            "xiaozhi_hub_actions",
            "Actions executed, by executor (binding type) and result (ok, error)",
            ["executor", "result"],
            registry=self.registry,
        )
        self.intent_latency = Histogram(
            "xiaozhi_hub_intent_latency_seconds",
            "Time to recognize one voice command's intent",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.utterances = Counter(
            "xiaozhi_hub_utterances",
            "Utterances heard, by outcome (transcribed, not_understood, invalid, duplicate)",
            ["outcome"],
            registry=self.registry,
        )
        self.speech_latency = Histogram(
            "xiaozhi_hub_speech_latency_seconds",
            "Time to transcribe one utterance (the engine's processing time)",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.bridge_requests = Counter(
            "xiaozhi_hub_bridge_requests",
            "Bridge requests answered, by status (ok, error)",
            ["status"],
            registry=self.registry,
        )
        self.fan_out = Counter(
            "xiaozhi_hub_fan_out_commands",
            "Commands published to member devices by group fan-out",
            ["kind"],
            registry=self.registry,
        )
        self.undelivered_commands = Counter(
            "xiaozhi_hub_undelivered_commands",
            "Commands for a disconnected or unknown device that no device answered in time: "
            "the hub published a failed command_result for each, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.invalid_messages = Counter(
            "xiaozhi_hub_invalid_messages",
            "MQTT messages refused (bad JSON, bad fields, foreign topics), by topic kind",
            ["kind"],
            registry=self.registry,
        )
        self.stream_sessions = Gauge(
            "xiaozhi_hub_stream_sessions",
            "Live stream (/api/v1/stream) connections open",
            registry=self.registry,
        )
        self.stream_signing_in = Gauge(
            "xiaozhi_hub_stream_signing_in",
            "Live stream connections open without credentials yet (bounded by "
            "XIAOZHI_STREAM_MAX_SIGNING_IN)",
            registry=self.registry,
        )
        self.stream_refused = Counter(
            "xiaozhi_hub_stream_refused",
            "Live stream connections refused before they signed in: busy (too many signing "
            "in at once), timeout (not signed in within XIAOZHI_SIGN_IN_SECONDS)",
            ["reason"],
            registry=self.registry,
        )
        self.stream_dropped = Counter(
            "xiaozhi_hub_stream_dropped",
            "Live stream messages dropped for clients that read too slowly (skipped ahead)",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(registry, owner_stats))

    def exposition(self) -> bytes:
        """The text format for ``/metrics``."""
        return generate_latest(self.registry)
