"""Per-turn latency of audio calls, as Prometheus histograms.

`service` is the number the project owns (everything but provider waits);
`response` is what the caller feels (end of their speech to the first frame
of the answer); the provider waits say where the rest went.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from voicecrm.calls.latency import TurnLatency

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class TurnMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.turns = Counter(
            "voicecrm_turns", "Caller turns answered on audio calls.", registry=registry
        )
        self.service = Histogram(
            "voicecrm_turn_service_seconds",
            "Time the service itself added to a turn: the response time minus provider waits.",
            buckets=_FAST,
            registry=registry,
        )
        self.response = Histogram(
            "voicecrm_turn_response_seconds",
            "End of the caller's speech to the first frame of the answer.",
            buckets=_SLOW,
            registry=registry,
        )
        self.provider = Histogram(
            "voicecrm_turn_provider_wait_seconds",
            "Time a turn waited for a provider before its first answer frame.",
            ["provider"],
            buckets=_SLOW,
            registry=registry,
        )

    def observe(self, turn: TurnLatency) -> None:
        total, service = turn.total_seconds, turn.service_seconds
        if total is None or service is None:
            return
        self.turns.inc()
        self.service.observe(service)
        self.response.observe(total)
        for provider, waited in (
            ("stt", turn.stt_wait),
            ("llm", turn.llm_wait),
            ("tts", turn.tts_wait),
        ):
            if waited:
                self.provider.labels(provider).observe(waited)
