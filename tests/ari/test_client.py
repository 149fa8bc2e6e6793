"""The ARI REST client against the fake Asterisk: what goes on the wire, what comes back,
and which typed error each refusal becomes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes.fake_asterisk import APP, PASSWORD, USERNAME, FakeAsterisk, fake_asterisk
from voicecrm.telephony.ari import (
    AriClient,
    AriConflict,
    AriInvalid,
    AriUnauthorized,
    AriUnavailable,
    ChannelGone,
)

__all__ = ["fake_asterisk"]


@pytest.fixture
async def ari(fake_asterisk: FakeAsterisk) -> AsyncIterator[AriClient]:
    async with AriClient(fake_asterisk.base_url, USERNAME, PASSWORD, APP) as client:
        yield client


async def test_answer_posts_to_the_channel_and_changes_its_state(
    fake_asterisk: FakeAsterisk, ari: AriClient
) -> None:
    channel_id = await fake_asterisk.inject_call()

    await ari.answer(channel_id)

    request = fake_asterisk.requests[-1]
    assert (request.method, request.path) == ("POST", f"/channels/{channel_id}/answer")
    channel = await ari.get_channel(channel_id)
    assert channel.state == "Up"
    assert (channel.caller_number, channel.exten, channel.context) == (
        "+14155550123",
        "+14155550100",
        "from-trunk",
    )


async def test_base_url_may_already_end_in_ari(fake_asterisk: FakeAsterisk) -> None:
    async with AriClient(f"{fake_asterisk.base_url}/ari/", USERNAME, PASSWORD, APP) as client:
        info = await client.asterisk_info()
    assert info.version == "22.10.1"
    assert fake_asterisk.requests[-1].path == "/asterisk/info"


async def test_hangup_sends_the_reason(fake_asterisk: FakeAsterisk, ari: AriClient) -> None:
    channel_id = await fake_asterisk.inject_call()

    await ari.hangup(channel_id, "busy")

    request = fake_asterisk.requests[-1]
    assert (request.method, request.path, request.query) == (
        "DELETE",
        f"/channels/{channel_id}",
        {"reason": "busy"},
    )
    assert channel_id not in fake_asterisk.channels
    with pytest.raises(ValueError):
        await ari.hangup(channel_id, "because")


async def test_play_with_a_chosen_id_returns_the_playback(
    fake_asterisk: FakeAsterisk, ari: AriClient
) -> None:
    channel_id = await fake_asterisk.inject_call()

    playback = await ari.play(channel_id, ["sound:hello-world", "digits:42"], "greeting-1")

    request = fake_asterisk.requests[-1]
    assert request.path == f"/channels/{channel_id}/play/greeting-1"
    assert request.query == {"media": "sound:hello-world,digits:42"}
    assert playback.id == "greeting-1"
    assert playback.target_uri == f"channel:{channel_id}"
    assert playback.state == "playing"

    await ari.stop_playback("greeting-1")
    assert fake_asterisk.requests[-1].method == "DELETE"
    assert fake_asterisk.requests[-1].path == "/playbacks/greeting-1"
    with pytest.raises(ChannelGone):  # the playback ended meanwhile
        await ari.stop_playback("greeting-1")


async def test_record_sends_ari_parameter_names(
    fake_asterisk: FakeAsterisk, ari: AriClient
) -> None:
    channel_id = await fake_asterisk.inject_call()

    recording = await ari.record(
        channel_id, "msg-1", "wav", max_duration=60, max_silence=3, beep=True, terminate_on="#"
    )

    assert fake_asterisk.requests[-1].query == {
        "name": "msg-1",
        "format": "wav",
        "maxDurationSeconds": "60",
        "maxSilenceSeconds": "3",
        "beep": "true",
        "terminateOn": "#",
        "ifExists": "fail",
    }
    assert (recording.name, recording.format, recording.state) == ("msg-1", "wav", "queued")
    with pytest.raises(AriConflict, match="Recording name already in use"):
        await ari.record(channel_id, "msg-1")
    with pytest.raises(AriInvalid) as invalid:
        await ari.record(channel_id, "msg-2", "mp3")
    assert invalid.value.status == 422


async def test_dtmf_continue_and_redirect(fake_asterisk: FakeAsterisk, ari: AriClient) -> None:
    channel_id = await fake_asterisk.inject_call()

    await ari.send_dtmf(channel_id, "12#", duration_ms=200)
    assert fake_asterisk.requests[-1].query == {"dtmf": "12#", "duration": "200"}
    await ari.redirect(channel_id, "PJSIP/1001")
    assert fake_asterisk.requests[-1].query == {"endpoint": "PJSIP/1001"}
    with pytest.raises(AriInvalid):  # another technology than the channel's
        await ari.redirect(channel_id, "IAX2/peer")

    await ari.continue_in_dialplan(channel_id, "after-bot", "s", 1)

    request = fake_asterisk.requests[-1]
    assert request.path == f"/channels/{channel_id}/continue"
    assert request.query == {"context": "after-bot", "extension": "s", "priority": "1"}
    with pytest.raises(AriConflict):  # no longer in Stasis
        await ari.answer(channel_id)


async def test_originate_sends_app_args_and_variables_in_the_body(
    fake_asterisk: FakeAsterisk, ari: AriClient
) -> None:
    channel = await ari.originate(
        "PJSIP/trunk/sip:+15551234567@carrier",
        app_args=["outbound", "42"],
        caller_id="+14155550100",
        ring_timeout=25,
        channel_id="out-1",
        variables={"VOICECRM_CALL": "42"},
    )

    request = fake_asterisk.requests[-1]
    assert (request.method, request.path) == ("POST", "/channels")
    assert request.query == {
        "endpoint": "PJSIP/trunk/sip:+15551234567@carrier",
        "app": APP,
        "appArgs": "outbound,42",
        "callerId": "+14155550100",
        "timeout": "25",
        "channelId": "out-1",
    }
    assert request.body == {"variables": {"VOICECRM_CALL": "42"}}
    assert (channel.id, channel.state) == ("out-1", "Down")
    assert await ari.get_variable(channel.id, "VOICECRM_CALL") == "42"
    with pytest.raises(AriConflict):
        await ari.originate("PJSIP/1001", channel_id="out-1")


async def test_external_media_returns_the_rtp_address_in_channelvars(
    fake_asterisk: FakeAsterisk, ari: AriClient
) -> None:
    channel = await ari.external_media("127.0.0.1:40000", "ulaw", channel_id="em-1")

    assert fake_asterisk.requests[-1].query == {
        "app": APP,
        "external_host": "127.0.0.1:40000",
        "format": "ulaw",
        "encapsulation": "rtp",
        "transport": "udp",
        "direction": "both",
        "channelId": "em-1",
    }
    (peer,) = fake_asterisk.peers  # the fake's RTP end, streaming to external_host
    assert channel.channelvars["UNICASTRTP_LOCAL_PORT"] == str(peer.address[1])
    with pytest.raises(AriInvalid, match="not supported") as refused:
        await ari.external_media("127.0.0.1:40000", encapsulation="rtp", transport="tcp")
    assert refused.value.status == 501


async def test_variables(fake_asterisk: FakeAsterisk, ari: AriClient) -> None:
    channel_id = await fake_asterisk.inject_call(caller_number="+14155550199")

    assert await ari.get_variable(channel_id, "VOICECRM_CONTACT") is None
    await ari.set_variable(channel_id, "VOICECRM_CONTACT", "7")
    assert await ari.get_variable(channel_id, "VOICECRM_CONTACT") == "7"
    assert await ari.get_variable(channel_id, "CALLERID(num)") == "+14155550199"
    await fake_asterisk.hang_up(channel_id)
    with pytest.raises(ChannelGone):
        await ari.get_variable(channel_id, "VOICECRM_CONTACT")


async def test_bridges(fake_asterisk: FakeAsterisk, ari: AriClient) -> None:
    caller = await fake_asterisk.inject_call()
    media = await ari.external_media("127.0.0.1:40000")

    bridge = await ari.create_bridge("mixing", bridge_id="call-1", name="call")
    await ari.add_channel(bridge.id, [caller, media.id])

    assert (bridge.id, bridge.bridge_type, bridge.name) == ("call-1", "mixing", "call")
    assert fake_asterisk.requests[-1].path == "/bridges/call-1/addChannel"
    assert fake_asterisk.requests[-1].query == {"channel": f"{caller},{media.id}"}
    assert fake_asterisk.bridges["call-1"]["channels"] == [caller, media.id]
    await ari.remove_channel(bridge.id, media.id)
    with pytest.raises(AriInvalid):  # no longer in this bridge
        await ari.remove_channel(bridge.id, media.id)
    await ari.destroy_bridge(bridge.id)
    with pytest.raises(ChannelGone):
        await ari.destroy_bridge(bridge.id)


async def test_a_hung_up_channel_raises_channel_gone_with_asterisks_message(
    fake_asterisk: FakeAsterisk, ari: AriClient
) -> None:
    channel_id = await fake_asterisk.inject_call()
    await fake_asterisk.hang_up(channel_id)

    with pytest.raises(ChannelGone) as gone:
        await ari.play(channel_id, "sound:hello-world")

    assert gone.value.status == 404
    assert gone.value.message == "Channel not found"


async def test_a_channel_outside_stasis_raises_conflict(
    fake_asterisk: FakeAsterisk, ari: AriClient
) -> None:
    fake_asterisk.dial_outcome = "ring"
    channel = await ari.originate("PJSIP/1001")  # not answered: not in Stasis yet

    with pytest.raises(AriConflict) as conflict:
        await ari.answer(channel.id)

    assert conflict.value.status == 409
    assert conflict.value.message == "Channel not in Stasis application"


async def test_wrong_credentials_raise_unauthorized(fake_asterisk: FakeAsterisk) -> None:
    async with AriClient(fake_asterisk.base_url, USERNAME, "wrong", APP) as client:
        with pytest.raises(AriUnauthorized) as refused:
            await client.ping()
    assert refused.value.status == 401
    assert "wrong" not in str(refused.value)


async def test_server_errors_and_no_server_raise_unavailable(
    fake_asterisk: FakeAsterisk, ari: AriClient
) -> None:
    fake_asterisk.fail_next(500, "Internal Server Error")
    with pytest.raises(AriUnavailable) as failed:
        await ari.ping()
    assert failed.value.status == 500

    async with AriClient("http://127.0.0.1:1", USERNAME, PASSWORD, APP) as nobody:
        with pytest.raises(AriUnavailable) as unreachable:
            await nobody.ping()
    assert unreachable.value.status == 0


async def test_a_borrowed_session_stays_open(fake_asterisk: FakeAsterisk) -> None:
    async with aiohttp.ClientSession() as session:
        client = AriClient(fake_asterisk.base_url, USERNAME, PASSWORD, APP, session=session)
        await client.ping()
        await client.aclose()
        assert not session.closed
        await client.ping()
