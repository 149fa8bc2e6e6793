"""What Asterisk's refusals mean to a call, as exceptions.

ARI answers every refusal with an HTTP status and a JSON `{"message": ...}`
body. The status says what the call can do about it, so each one that matters
has its own class: a 404 almost always means the caller hung up (or the
playback or bridge ended) while the request was on its way, which a call
handles as the end of the call rather than as a bug. The message Asterisk gave
is kept verbatim; credentials never appear in any of these.

    AriError(status, message)   any refusal; status 0 when no HTTP answer came
    ├── ChannelGone             404: the channel, bridge, playback or recording is gone
    ├── AriConflict             409/412: not possible in the resource's current state
    ├── AriInvalid              400/422/501: the request itself is wrong
    ├── AriUnauthorized         401/403: wrong ARI user or password
    └── AriUnavailable          no connection, a timeout, or a 5xx
    AriProtocolError            Asterisk sent something that is not ARI
    └── MalformedEvent          an event that cannot be read
"""

from __future__ import annotations

from typing import Any

from voicecrm.errors import VoiceCRMError


class AriError(VoiceCRMError):
    """Asterisk refused a request (or could not be asked: `status` 0)."""

    title = "Asterisk refused the request"

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(f"ARI {status}: {message}" if status else message, status=status, **extra)
        self.status = status
        self.message = message


class ChannelGone(AriError):
    """404: the channel (or bridge, playback, recording) no longer exists.

    On a live call this is the caller having hung up while the request was in
    flight; the StasisEnd that says so is already on its way."""

    title = "Channel gone"


class AriConflict(AriError):
    """409 or 412: the resource exists but is in the wrong state for this
    (channel not in Stasis, id already used, recording name in use)."""

    title = "Asterisk state conflict"


class AriInvalid(AriError):
    """400, 422 or 501: the request is wrong and retrying will not help."""

    title = "Invalid ARI request"


class AriUnauthorized(AriError):
    """401 or 403: the ARI user or password is wrong (or the user is read-only)."""

    title = "ARI credentials refused"


class AriUnavailable(AriError):
    """Asterisk could not be reached, timed out, or failed (5xx): possibly transient."""

    title = "Asterisk unavailable"


class AriProtocolError(VoiceCRMError):
    """Asterisk answered with something that does not follow ARI's shapes."""

    title = "Unexpected ARI message"


class MalformedEvent(AriProtocolError):
    """An events-socket message that is not JSON, not an object, or lacks a field
    its type requires."""

    title = "Malformed ARI event"


def error_for_status(status: int, message: str) -> AriError:
    """The typed error for an HTTP status Asterisk answered with."""
    if status == 404:
        return ChannelGone(status, message)
    if status in (409, 412):
        return AriConflict(status, message)
    if status in (400, 422, 501):
        return AriInvalid(status, message)
    if status in (401, 403):
        return AriUnauthorized(status, message)
    if status >= 500:
        return AriUnavailable(status, message)
    return AriError(status, message)


class ApplicationReplaced(AriError):
    """Another connection registered this Stasis application (a second instance, or a
    restart elsewhere): Asterisk now sends it the events. Reconnecting would take them
    back and the two would displace each other forever, so this one stops."""

    title = "ARI application taken over"
