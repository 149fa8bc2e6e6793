"""/metrics: turn latency in Prometheus' text format, for the operator's dashboards."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from voicecrm.app import TURN_METRICS
from voicecrm.calls.latency import TurnLatency


async def test_metrics_show_each_turns_service_time_and_provider_waits(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "voicecrm_turns_total 0.0" in await response.text()

    metrics = client.app[TURN_METRICS]
    metrics.observe(
        TurnLatency(
            speech_end=10.0, transcript_ready=10.3, first_frame=11.004, stt_wait=0.3, tts_wait=0.7
        )
    )
    metrics.observe(TurnLatency(speech_end=20.0))  # never answered: not a turn

    text = await (await client.get("/metrics")).text()
    assert "voicecrm_turns_total 1.0" in text
    assert 'voicecrm_turn_service_seconds_bucket{le="0.005"} 1.0' in text
    assert 'voicecrm_turn_service_seconds_bucket{le="0.0025"} 0.0' in text
    assert 'voicecrm_turn_provider_wait_seconds_count{provider="stt"} 1.0' in text
    assert 'voicecrm_turn_provider_wait_seconds_count{provider="llm"}' not in text
