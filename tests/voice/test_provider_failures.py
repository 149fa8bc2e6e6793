"""When a speech provider fails, the call still ends cleanly: never a crash, never silence
forever. A failing recogniser takes the scenario's error path; a voice that cannot speak
at all hangs up with the outcome "error"."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from tests.conftest import TeamWorld
from tests.scenarios.conftest import scenario_from
from tests.speech_audio import InstantSpeech, needs_espeak, spoken
from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.scenarios.runner import run_call
from voicecrm.storage import Database
from voicecrm.telephony.simulator.audio_line import EmulatedLine, Silence, Speak, WaitForTurn
from voicecrm.voice.call import VoiceCall
from voicecrm.voice.ports import PcmAudio, SpeechProviderError, SpeechUnavailable, Transcript

MENU = """
name: menu
settings: {greeting: "Hello."}
steps:
  ask:
    gather: {prompt: "How can I help?", input: [speech], timeout: 5}
    on_error: sorry
  thanks:
    say: "Thanks."
  bye:
    hangup:
  sorry:
    say: "Sorry, I could not hear that."
"""
INFO = CallInfo(
    call_id="f-1", direction=Direction.INBOUND, from_number="+14155550177", to_number="+1"
)


class Mute:
    label = "no voice"

    async def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        raise SpeechUnavailable("espeak-ng is not installed (apt-get install espeak-ng)")
        yield PcmAudio(b"", 8000)  # pragma: no cover - makes this a generator


class Deaf:
    label = "broken recogniser"

    async def transcribe(
        self, audio: PcmAudio, *, language: str, hints: tuple[str, ...] = ()
    ) -> Transcript:
        raise SpeechProviderError("the transcription server answered 500")


async def test_a_voice_that_cannot_speak_ends_the_call_with_an_error_outcome(
    database: Database, world: TeamWorld
) -> None:
    scenario = scenario_from(MENU)
    line = EmulatedLine(INFO, [Silence(10)], tick=0.002)
    async with VoiceCall(line, stt=Deaf(), tts=Mute()) as call:
        result = await run_call(database, world.system, scenario, call, channel="test")
    assert result.state.outcome == "error"
    assert line.log.hangup == "error"


@needs_espeak
async def test_a_failing_recogniser_takes_the_steps_error_path(
    database: Database, world: TeamWorld
) -> None:
    scenario = scenario_from(MENU)
    line = EmulatedLine(
        INFO, [WaitForTurn(), Speak(spoken("sales please")), Silence(10)], tick=0.002
    )
    tts = InstantSpeech()
    async with VoiceCall(line, stt=Deaf(), tts=tts) as call:
        result = await run_call(database, world.system, scenario, call, channel="test")
    assert tts.said == ["Hello.", "How can I help?", "Sorry, I could not hear that."]
    assert result.state.variables["error"] == "the transcription server answered 500"
    assert result.state.outcome == "completed"
