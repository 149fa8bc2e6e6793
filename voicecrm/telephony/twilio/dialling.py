"""A transfer as TwiML: the `<Dial>` that puts the caller through, and its whisper.

A scenario's transfer may carry a whisper ("Call from Jane Doe about a leak"),
said to the person who answers before the caller is put through. Twilio runs
a `<Number url>` (or `<Sip url>`) document on the answered leg before bridging
it: that URL is this service's `/twilio/whisper` webhook, with the words in its
query string. Twilio signs the whole URL, query included, so the words it asks
for are the words this service wrote; no state is kept between the dial and the
whisper, and any instance can answer it.

The whisper is said by Twilio (`<Say>`), in the scenario's language; on a
Media Streams call the scenario's voice belongs to the service's own speech
provider, not to Twilio, and is not passed on.
"""

from __future__ import annotations

from urllib.parse import urlencode

from twilio.twiml.voice_response import Dial, VoiceResponse

WHISPER_PATH = "/twilio/whisper"
# Twilio's <Say> takes up to 4,096 characters; a whisper is a sentence or two.
MAX_WHISPER = 1000


def whisper_url(base: str, text: str, *, language: str, voice: str | None = None) -> str:
    """The webhook that says `text` to the answered leg (`base`: the public URL)."""
    query = {"text": text[:MAX_WHISPER], "language": language}
    if voice:
        query["voice"] = voice
    return f"{base}{WHISPER_PATH}?{urlencode(query)}"


def dial(
    target: str, *, ring_timeout: float, caller_id: str | None, whisper: str | None = None
) -> Dial:
    """`<Dial>` to a number or a `sip:` URI; `whisper` is its `whisper_url`."""
    verb = Dial(timeout=round(ring_timeout), caller_id=caller_id or None)
    extra = {"url": whisper, "method": "POST"} if whisper else {}
    if target.startswith("sip:"):
        verb.sip(target, **extra)
    else:
        verb.number(target, **extra)
    return verb


def whisper_response(text: str, *, language: str, voice: str | None) -> VoiceResponse:
    """The TwiML the whisper webhook answers: the words, said to the answered leg."""
    attributes = {"language": language}
    if voice:
        attributes["voice"] = voice
    response = VoiceResponse()
    response.say(text[:MAX_WHISPER], **attributes)
    return response
