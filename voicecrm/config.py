"""Settings, read once from `VOICECRM_*` environment variables and passed down.

Only the composition root (`voicecrm.app`) and the CLI read this; every other
module receives the values it needs as arguments. Secrets are held as
`SecretStr` so that printing the settings never prints them. A test keeps the
README's table of settings equal to these fields.

"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from voicecrm.errors import ConfigurationError

PREFIX = "VOICECRM_"


class Settings(BaseModel):
    """Every setting with its default; the README's table is generated from these fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = Field(
        "sqlite+aiosqlite:///./voicecrm.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///PATH (default, embedded) or "
        "postgresql+asyncpg://USER:PASSWORD@HOST/DB (several instances).",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server listens on.")
    migrate_on_start: bool = Field(
        True, description="Apply database migrations when the service starts."
    )
    bootstrap_team: str = Field(
        "My Business", description="Name of the team created on first start."
    )
    bootstrap_admin_email: str = Field(
        "admin@localhost", description="Email of the admin user created on first start."
    )
    default_region: str = Field(
        "US", description="Phone region of the first team, for numbers without a country code."
    )
    timezone: str = Field("UTC", description="Timezone of the first team.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest JSON request body the API accepts."
    )
    max_import_bytes: int = Field(
        512 * 1_048_576, ge=1024, description="Largest CSV upload the import endpoint accepts."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    recordings_dir: str = Field(
        "recordings",
        description="Folder for the recordings the service makes (voicemail on audio calls).",
    )
    scenarios_dir: str = Field(
        "scenarios", description="Folder of scenario YAML files the service and simulator load."
    )
    llm_base_url: str | None = Field(
        None,
        description="OpenAI-compatible API base URL with its /v1 prefix (OpenAI, Ollama, vLLM);"
        " unset with no key: agent steps explain that no model is configured.",
    )
    llm_api_key: SecretStr | None = Field(
        None, description="API key for that server (alone: OpenAI itself). Never logged."
    )
    public_url: str | None = Field(
        None,
        description="The service's public base URL as Twilio reaches it (https://crm.example.com);"
        " unset: taken from each request's Host and X-Forwarded-Proto.",
    )
    twilio_account_sid: str | None = Field(
        None,
        description="Twilio account SID (AC...); placing calls needs it, the auth token and "
        "the public URL.",
    )
    twilio_auth_token: SecretStr | None = Field(
        None,
        description="Twilio auth token: checks every webhook's signature. Unset: the Twilio "
        "endpoints answer 503 and say so. Never logged.",
    )
    twilio_from_number: str | None = Field(
        None,
        description="Caller ID of outbound calls when neither the request nor the scenario's "
        "numbers give one (a Twilio number or verified caller ID, E.164).",
    )
    twilio_api_base_url: str | None = Field(
        None,
        description="Base URL of Twilio's REST API, for a regional edge "
        "(https://api.dublin.ie1.twilio.com) or a test double; unset: https://api.twilio.com.",
    )
    twilio_mode: Literal["stream", "twiml"] = Field(
        "stream",
        description="How Twilio calls run unless a scenario says otherwise: stream (Media "
        "Streams through the service's speech providers) or twiml (Twilio's <Say> and <Gather>).",
    )
    blocked_callers: str = Field(
        "reject",
        description="What a call from a blocked contact gets: reject (refused before it is "
        "answered) or the name of a scenario to run instead.",
    )
    ari_url: str | None = Field(
        None,
        description="Base URL of Asterisk's REST Interface (http://127.0.0.1:8088); unset: "
        "no Asterisk calls (logged at start).",
    )
    ari_user: str = Field("voicecrm", description="ARI user (the ari.conf section name).")
    ari_password: SecretStr | None = Field(
        None, description="That ARI user's password. Never logged."
    )
    ari_app: str = Field(
        "voicecrm", description="Name of the Stasis application the dialplan sends calls to."
    )
    ari_media_host: str = Field(
        "127.0.0.1",
        description="Address Asterisk sends a call's RTP to (ExternalMedia external_host); "
        "the service listens for it there.",
    )
    ari_media_bind: str | None = Field(
        None,
        description="Address the RTP sockets bind to, when it differs from the one Asterisk "
        "is told (behind NAT or in a container: 0.0.0.0); unset: VOICECRM_ARI_MEDIA_HOST.",
    )
    ari_http_url: str | None = Field(
        None,
        description="This service's HTTP address as Asterisk reaches it (http://10.0.0.5:8080): "
        "Asterisk fetches from it the audio it plays that the service synthesises (a "
        "transfer's whisper). Unset: whispers are not played on Asterisk (logged).",
    )
    ari_dial_template: str | None = Field(
        None,
        description="How Asterisk dials a number, {number} standing for it "
        "(PJSIP/{number}@trunk): transfers then dial and bridge the target themselves, and "
        "`voicecrm call` can place calls through Asterisk. Unset: transfers continue in the "
        "dialplan at the target extension.",
    )
    ari_sip_dial_template: str | None = Field(
        None,
        description="How Asterisk dials a SIP URI transfer target (sip:alice@example.com), "
        "{address} standing for it without the scheme (PJSIP/{address}); unset: SIP targets "
        "fail, and the log says so.",
    )
    stt_provider: Literal["auto", "openai", "offline"] = Field(
        "auto",
        description="Speech-to-text for audio calls: openai (the LLM server's transcription "
        "endpoint), offline (PocketSphinx: no account, English, low accuracy), or auto (openai "
        "when an LLM server is configured, else offline).",
    )
    stt_model: str = Field("gpt-4o-mini-transcribe", description="Transcription model (openai).")
    tts_provider: Literal["auto", "openai", "offline"] = Field(
        "auto",
        description="Text-to-speech for audio calls: openai (the LLM server's speech endpoint), "
        "offline (espeak-ng: no account, robotic voice), or auto (as for speech-to-text).",
    )
    tts_model: str = Field("gpt-4o-mini-tts", description="Speech model (openai).")
    tts_voice: str | None = Field(
        None, description="Default voice: alloy etc. for openai, an espeak-ng voice offline."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {
            name: env[PREFIX + name.upper()]
            for name in cls.model_fields
            if PREFIX + name.upper() in env
        }
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problems = "; ".join(
                f"{PREFIX}{str(e['loc'][0]).upper()}: {e['msg']}" for e in err.errors()
            )
            raise ConfigurationError(f"bad configuration: {problems}") from err
