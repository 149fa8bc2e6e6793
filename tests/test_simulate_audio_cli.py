"""`voicecrm simulate --audio`: a call from WAV files through the offline audio pipeline.

No account and no network: espeak-ng speaks for the receptionist and
PocketSphinx listens, behind the same voice activity detection, turn taking
and carrier framing as a Twilio or Asterisk call.
"""

from __future__ import annotations

import wave
from pathlib import Path

from tests.conftest import engine_independent
from tests.speech_audio import needs_espeak
from tests.test_simulate_cli import only_contact, simulate
from voicecrm.storage import Database

FIXTURES = Path(__file__).parent / "fixtures" / "audio"

ECHO_NAME = """
name: echo-name
numbers: ["+14155550100"]
steps:
  ask:
    gather:
      prompt: "Hello. Who is calling, please?"
      input: [speech]
      timeout: 8
      save_as: caller
  answer:
    say: "You said {{ vars.caller }}. Goodbye."
"""


@needs_espeak
async def test_a_spoken_name_is_recognised_offline_and_the_answer_is_recorded(
    database: Database, tmp_path: Path
) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "echo-name.yaml").write_text(ECHO_NAME)
    out = tmp_path / "receptionist.wav"
    status, output = await simulate(
        database,
        "echo-name",
        "--scenarios",
        str(tmp_path / "scenarios"),
        "--audio",
        str(FIXTURES / "my-name.wav"),
        "--audio-out",
        str(out),
        "--speed",
        "4",
        env={"VOICECRM_STT_PROVIDER": "offline", "VOICECRM_TTS_PROVIDER": "offline"},
    )
    assert status == 0, output
    assert "speech in: pocketsphinx (offline" in output
    assert "speech out: espeak-ng (offline" in output
    caller_lines = [line for line in output.splitlines() if line.startswith("caller: ")]
    assert len(caller_lines) == 1
    heard = set(caller_lines[0].removeprefix("caller: ").split())
    assert len(heard & {"my", "name", "is", "john", "smith"}) >= 4, caller_lines
    assert "receptionist: You said my name" in output
    # One turn, timed: the row has a service time in milliseconds.
    table = output.split("[latency per turn")[1].splitlines()
    assert table[2].split()[0] == "1" and table[2].rstrip().endswith(" ms")

    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        assert wav.getnframes() / 8000 > 4  # the question, the caller's turn, the answer
    contact = await only_contact(database)
    assert contact.name == "Unknown Caller"


@engine_independent
async def test_a_missing_or_broken_wav_is_a_clear_error(database: Database, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF nonsense")
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, message in (
        (tmp_path / "missing.wav", "not a readable WAV file"),
        (broken, "not a readable WAV file"),
        (empty, "no .wav files in this folder"),
    ):
        status, output = await simulate(database, "dtmf-menu", "--audio", str(path))
        assert status != 0
        assert message in output and "Traceback" not in output
