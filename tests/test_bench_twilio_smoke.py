"""The Twilio load bench still runs: a real `voicecrm serve`, two streams, a few webhooks.

It checks that the figures come out and make sense (streams held, answers
heard, frames both ways, webhooks answered), never how fast: timing
assertions on a shared machine would only make the suite flaky.
"""

from __future__ import annotations

import re

import pytest

from bench import twilio_streams
from tests.speech_audio import needs_espeak


@needs_espeak
def test_two_streams_and_some_webhooks_print_sane_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = twilio_streams.main(
        ["--streams", "2", "--seconds", "7", "--contacts", "300", "--requests", "20"]
    )
    out = capsys.readouterr().out
    assert status == 0
    (row,) = [line.split() for line in out.splitlines() if re.match(r"\s+2\s+0\s", line)]
    streams, failed, answers, frames_in, frames_out = row[:5]
    assert (streams, failed) == ("2", "0")
    assert int(answers) >= 2  # each caller spoke once and was answered
    assert int(frames_in.replace(",", "")) == 2 * 350  # 7 s of 20 ms frames each
    assert int(frames_out.replace(",", "")) >= 2 * 50  # a second of answer each
    hooks = [line.split() for line in out.splitlines() if re.match(r"\s+[18]\s+20\s", line)]
    assert len(hooks) == 2 and all(float(h[2]) > 0 for h in hooks)
    assert "target: webhook p99 < 15 ms:" in out
