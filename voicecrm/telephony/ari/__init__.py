"""Asterisk's REST Interface (ARI): a thin typed client, typed events, the events socket.

There is no maintained Python ARI client, and the service needs only a small
part of ARI (answer, play, record, bridge, external media, hang up), so this
package speaks it directly over aiohttp, from ../shared/reference/asterisk-ari.md.
Every Asterisk refusal becomes a typed error (`errors`), so a call can treat
"the caller hung up meanwhile" (`ChannelGone`) as an outcome rather than a crash,
and every event becomes a frozen dataclass (`events`), so the call logic
matches on types rather than on dictionaries. It knows nothing of Twilio, the
API or the configuration: the composition root hands it a URL and credentials.
"""

from voicecrm.telephony.ari.client import (
    AriClient,
    AsteriskInfo,
    Bridge,
    Channel,
    LiveRecording,
    Playback,
)
from voicecrm.telephony.ari.errors import (
    AriConflict,
    AriError,
    AriInvalid,
    AriProtocolError,
    AriUnauthorized,
    AriUnavailable,
    ChannelGone,
    MalformedEvent,
)
from voicecrm.telephony.ari.events import Event, parse_event
from voicecrm.telephony.ari.events_socket import AriEvents, Backoff, Reconnected

__all__ = [
    "AriClient",
    "AriConflict",
    "AriError",
    "AriEvents",
    "AriInvalid",
    "AriProtocolError",
    "AriUnauthorized",
    "AriUnavailable",
    "AsteriskInfo",
    "Backoff",
    "Bridge",
    "Channel",
    "ChannelGone",
    "Event",
    "LiveRecording",
    "MalformedEvent",
    "Playback",
    "Reconnected",
    "parse_event",
]
