"""The offline voice: espeak-ng's speech, streamed as it is made, and its process owned.

What the call relies on: audio starts long before a long text is finished, it
always comes in whole 16-bit samples at 22050 Hz, a barge-in (closing the
generator) kills espeak-ng at once, and nothing in the text can act as an
option. Most tests run the real espeak-ng; a few replace it with a small script
to produce what espeak-ng never does on its own (odd pipe splits, failures).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import sys
import time
from contextlib import aclosing
from pathlib import Path

import pytest

from tests.speech import collect, joined, require_espeak
from voicecrm.speech.espeak_tts import EspeakTextToSpeech
from voicecrm.voice.ports import SpeechProviderError, SpeechUnavailable

LONG_TEXT = " ".join(
    ["Thank you for calling Acme Dental, all of our receptionists are busy right now."] * 40
)


def espeak_children() -> dict[int, str]:
    """pid -> state ("S", "R", "Z"...) of every espeak-ng process this test process started."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            data = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        name = data[data.index("(") + 1 : data.rindex(")")]
        state, parent = data[data.rindex(")") + 2 :].split()[:2]
        if name == "espeak-ng" and int(parent) == os.getpid():
            children[int(stat.parent.name)] = state
    return children


def process_exists(pid: int) -> bool:
    """True while the process exists, zombies included: only reaping removes it."""
    return Path(f"/proc/{pid}").exists()


def fake_espeak(
    tmp_path: Path,
    *,
    output: bytes,
    pieces: tuple[int, ...] = (),
    exit_status: int = 0,
    stderr: str = "",
    broken_voice: str = "",
) -> Path:
    """An executable standing in for espeak-ng: it records its arguments and stdin,
    then writes `output` in pieces of the given sizes (the rest in one piece).
    `--voices` lists en-us and `broken_voice`; speaking with `broken_voice` crashes."""
    script = tmp_path / "fake-espeak-ng"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, time, json\n"
        "if '--voices' in sys.argv:\n"
        "    print('Pty Language Age/Gender VoiceName File Other Languages')\n"
        "    print(' 2  en-us  --/M  English_(America)  gmw/en-US  (en 3)')\n"
        f"    print(' 5  {broken_voice}  --/M  Broken  x/broken')\n"
        "    sys.exit(0)\n"
        f"if {broken_voice!r} and sys.argv[sys.argv.index('-v') + 1] == {broken_voice!r}:\n"
        "    sys.stderr.write('Unknown phoneme table')\n"
        "    sys.exit(-11)\n"
        "text = sys.stdin.buffer.read().decode()\n"
        f"open({str(tmp_path / 'seen.json')!r}, 'w').write("
        "json.dumps({'argv': sys.argv[1:], 'stdin': text}))\n"
        f"output, pieces = {output!r}, {pieces!r}\n"
        "start = 0\n"
        "for size in pieces + (len(output),):\n"
        "    sys.stdout.buffer.write(output[start : start + size])\n"
        "    sys.stdout.buffer.flush()\n"
        "    start += size\n"
        "    time.sleep(0.002)  # let the reader see each piece on its own\n"
        f"sys.stderr.write({stderr!r})\n"
        f"sys.exit({exit_status})\n"
    )
    script.chmod(0o755)
    return script


def wav_stream(pcm: bytes, *, rate: int = 22050, extra_chunk: bytes = b"") -> bytes:
    """A WAV stream as espeak-ng writes it to a pipe: placeholder sizes, then samples."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    header = b"RIFF" + struct.pack("<I", 0x7FFFF000) + b"WAVE"
    header += b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if extra_chunk:
        padded = extra_chunk + b"\0" * (len(extra_chunk) % 2)
        header += b"LIST" + struct.pack("<I", len(extra_chunk)) + padded
    return header + b"data" + struct.pack("<I", 0x7FFFF000) + pcm


async def test_speech_is_22050_hz_in_whole_samples() -> None:
    require_espeak()
    chunks = await collect(
        EspeakTextToSpeech().synthesize(
            "Thank you for calling, how can I help?", voice=None, language="en-US"
        )
    )
    assert chunks
    assert {chunk.sample_rate for chunk in chunks} == {22050}
    assert all(len(chunk.pcm) > 0 and len(chunk.pcm) % 2 == 0 for chunk in chunks)
    assert 1.0 < joined(chunks).seconds < 5.0


async def test_the_first_chunk_arrives_while_espeak_is_still_speaking() -> None:
    """A two-minute text: espeak-ng is still running (blocked on the pipe we stopped
    reading) when its first audio is already here, so playback need not wait for it."""
    require_espeak()
    started = time.perf_counter()
    async with aclosing(
        EspeakTextToSpeech().synthesize(LONG_TEXT, voice=None, language="en-US")
    ) as stream:
        first = await anext(stream)
        latency = time.perf_counter() - started
        running = espeak_children()
        assert len(running) == 1
        assert set(running.values()) <= {"R", "S"}
    assert first.sample_rate == 22050 and first.pcm
    print(f"espeak-ng first chunk after {latency * 1000:.1f} ms")


async def test_closing_the_stream_early_kills_and_reaps_espeak() -> None:
    """A barge-in: the consumer closes the generator after the first chunk; the process
    is gone when `aclose()` returns, neither running nor a zombie."""
    require_espeak()
    stream = EspeakTextToSpeech().synthesize(LONG_TEXT, voice=None, language="en-US")
    await anext(stream)
    (pid,) = espeak_children()
    await stream.aclose()
    assert espeak_children() == {}
    assert not process_exists(pid)


async def test_cancelling_the_consumer_kills_espeak_too() -> None:
    require_espeak()
    tts = EspeakTextToSpeech()
    first_chunk = asyncio.Event()

    async def play() -> None:
        async with aclosing(tts.synthesize(LONG_TEXT, voice=None, language="en-US")) as stream:
            async for _chunk in stream:
                first_chunk.set()
                await asyncio.Event().wait()  # playback that never ends

    task = asyncio.create_task(play())
    await first_chunk.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert espeak_children() == {}


async def test_text_that_looks_like_options_is_spoken() -> None:
    require_espeak()
    chunks = await collect(
        EspeakTextToSpeech().synthesize(
            "-v xx --version -w /tmp/out.wav", voice=None, language="en-US"
        )
    )
    assert joined(chunks).seconds > 1.0


async def test_the_text_goes_in_on_stdin_never_on_the_command_line(tmp_path: Path) -> None:
    """A caller's name in the text must not show in the process list."""
    script = fake_espeak(tmp_path, output=wav_stream(b"\1\0" * 100))
    tts = EspeakTextToSpeech(executable=str(script), words_per_minute=140)
    text = "-s 999 Hello Jane Doe, your balance is 12 dollars"
    await collect(tts.synthesize(text, voice=None, language="en-GB"))
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["stdin"] == text
    assert not any("Jane" in argument for argument in seen["argv"])
    assert seen["argv"][seen["argv"].index("-v") + 1] == "en-gb"
    assert seen["argv"][seen["argv"].index("-s") + 1] == "140"


async def test_the_wav_stream_is_parsed_however_the_pipe_splits_it(tmp_path: Path) -> None:
    pcm = bytes(range(256)) * 8
    output = wav_stream(pcm, rate=16000, extra_chunk=b"INFOx")
    script = fake_espeak(tmp_path, output=output, pieces=(1, 3, 7, 13, 29, 1, 61, 5, 333))
    chunks = await collect(
        EspeakTextToSpeech(executable=str(script)).synthesize("hello", voice=None, language="en")
    )
    assert len(chunks) > 1
    assert all(len(chunk.pcm) % 2 == 0 for chunk in chunks)
    assert joined(chunks).pcm == pcm
    assert joined(chunks).sample_rate == 16000


async def test_a_stream_that_is_not_wav_is_an_error(tmp_path: Path) -> None:
    script = fake_espeak(tmp_path, output=b"ID3 this is an mp3, not a wav file")
    with pytest.raises(SpeechProviderError, match="WAV"):
        await collect(
            EspeakTextToSpeech(executable=str(script)).synthesize(
                "hello", voice=None, language="en"
            )
        )


async def test_a_failing_espeak_is_an_error_with_its_message(tmp_path: Path) -> None:
    script = fake_espeak(
        tmp_path, output=wav_stream(b"\0\1" * 50), exit_status=3, stderr="out of memory"
    )
    with pytest.raises(SpeechProviderError, match="exit status 3: out of memory"):
        await collect(
            EspeakTextToSpeech(executable=str(script)).synthesize(
                "hello", voice=None, language="en"
            )
        )


async def test_the_voice_follows_the_language() -> None:
    require_espeak()
    tts = EspeakTextToSpeech()
    american = joined(await collect(tts.synthesize("tomato", voice=None, language="en-US")))
    british = joined(await collect(tts.synthesize("tomato", voice=None, language="en-GB")))
    german = joined(await collect(tts.synthesize("Guten Tag", voice=None, language="de-AT")))
    assert american.pcm != british.pcm
    assert german.seconds > 0.3


async def test_an_explicit_voice_wins_over_the_language() -> None:
    require_espeak()
    tts = EspeakTextToSpeech()
    by_language = await collect(tts.synthesize("tomato", voice=None, language="en-GB"))
    by_voice = await collect(tts.synthesize("tomato", voice="en-gb", language="en-US"))
    assert joined(by_voice).pcm == joined(by_language).pcm


async def test_a_voice_espeak_does_not_know_falls_back_to_the_language(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An OpenAI voice name left in a scenario that now runs offline still speaks."""
    require_espeak()
    tts = EspeakTextToSpeech()
    with caplog.at_level(logging.WARNING, logger="voicecrm.speech.espeak_tts"):
        fallback = await collect(tts.synthesize("hello", voice="alloy", language="en-US"))
    plain = await collect(tts.synthesize("hello", voice=None, language="en-US"))
    assert joined(fallback).pcm == joined(plain).pcm
    assert "no voice 'alloy'" in caplog.text


async def test_a_listed_voice_that_fails_before_speaking_falls_back_to_the_language(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pcm = b"\3\0" * 100
    script = fake_espeak(tmp_path, output=wav_stream(pcm), broken_voice="xx-broken")
    tts = EspeakTextToSpeech(executable=str(script))
    with caplog.at_level(logging.WARNING, logger="voicecrm.speech.espeak_tts"):
        chunks = await collect(tts.synthesize("hello", voice="xx-broken", language="en-US"))
    assert joined(chunks).pcm == pcm
    assert "cannot speak with voice 'xx-broken'" in caplog.text
    assert "Unknown phoneme table" in caplog.text


async def test_a_language_espeak_cannot_speak_is_unavailable() -> None:
    require_espeak()
    with pytest.raises(SpeechUnavailable, match="no voice for the language 'xx-YY'"):
        await collect(EspeakTextToSpeech().synthesize("hello", voice=None, language="xx-YY"))
    assert espeak_children() == {}


async def test_words_per_minute_sets_the_pace() -> None:
    require_espeak()
    text = "Please leave your name and number after the tone."
    slow = await collect(
        EspeakTextToSpeech(words_per_minute=100).synthesize(text, voice=None, language="en")
    )
    fast = await collect(
        EspeakTextToSpeech(words_per_minute=300).synthesize(text, voice=None, language="en")
    )
    assert joined(slow).seconds > 1.8 * joined(fast).seconds


async def test_nothing_to_say_starts_nothing() -> None:
    tts = EspeakTextToSpeech(executable="/nonexistent/espeak-ng")
    assert await collect(tts.synthesize("  \n", voice=None, language="en-US")) == []


async def test_without_espeak_the_voice_is_unavailable_and_says_how_to_install_it() -> None:
    tts = EspeakTextToSpeech(executable="/nonexistent/espeak-ng")
    with pytest.raises(SpeechUnavailable, match=r"apt-get install espeak-ng"):
        await collect(tts.synthesize("hello", voice=None, language="en-US"))


def test_the_label_warns_that_it_sounds_robotic() -> None:
    assert EspeakTextToSpeech().label == "espeak-ng (offline, robotic voice)"


@pytest.mark.parametrize("pace", [0, 79, 451])
def test_a_pace_espeak_cannot_speak_is_refused(pace: int) -> None:
    with pytest.raises(ValueError, match="words per minute"):
        EspeakTextToSpeech(words_per_minute=pace)
