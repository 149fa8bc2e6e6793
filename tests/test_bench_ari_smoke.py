"""The ARI load bench still runs: a real `voicecrm serve`, a fake Asterisk, two calls.

It checks that the figures come out and make sense (calls answered, answers
heard, RTP both ways, an answer latency), never how fast: timing assertions on
a shared machine would only make the suite flaky.
"""

from __future__ import annotations

import math
import re

import pytest

from bench import ari_calls
from tests.speech_audio import needs_espeak


@needs_espeak
def test_two_calls_print_sane_figures(capsys: pytest.CaptureFixture[str]) -> None:
    status = ari_calls.main(["--calls", "2", "--seconds", "7", "--contacts", "300"])
    out = capsys.readouterr().out
    assert status == 0
    (row,) = [line.split() for line in out.splitlines() if re.match(r"\s+2\s+0\s", line)]
    calls, failed, answer_p50, answer_p99, answers, rtp_in, rtp_out = row[:7]
    assert (calls, failed) == ("2", "0")
    assert 0 < float(answer_p50) <= float(answer_p99) < math.inf
    assert int(answers) >= 2  # each caller spoke once and was answered
    assert int(rtp_in.replace(",", "")) == 2 * 350  # 7 s of 20 ms frames each
    # The service sends a packet every 20 ms once the media is up: comfort noise or speech.
    assert int(rtp_out.replace(",", "")) >= 2 * 250
    missing, seq_gaps = row[10:12]
    assert int(missing) >= 0 and int(seq_gaps) >= 0
    assert "held cleanly" in out and "StasisStart-to-answer latency p50/p99" in out
