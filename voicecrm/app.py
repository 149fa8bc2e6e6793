"""The composition root: builds the aiohttp application and owns every long-lived resource.

Each resource is opened in a `cleanup_ctx` generator and closed after its
`yield`, in reverse order, and only if it was opened. Nothing imports this
module but the CLI and the tests; everything below receives what it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twilio.request_validator import RequestValidator

from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor, Role
from voicecrm.agent.factory import language_model_from_settings
from voicecrm.api.problems import problem_middleware
from voicecrm.api.resources import all_routes
from voicecrm.api.resources.csv_io import MAX_IMPORT_BYTES
from voicecrm.api.resources.imports import IMPORTS
from voicecrm.api.resources.recordings import RECORDINGS
from voicecrm.api.resources.scenarios import SCENARIOS
from voicecrm.api.server import API_PREFIX, DATABASE, build_api
from voicecrm.calls.outbound import OutboundNotConfigured
from voicecrm.config import Settings
from voicecrm.crm.import_runner import ImportRunner
from voicecrm.errors import ScenarioInvalid
from voicecrm.integrations.http_client import AiohttpClient
from voicecrm.metrics.turns import TurnMetrics
from voicecrm.recordings.store import RecordingStore
from voicecrm.scenarios.library import ScenarioRegistry
from voicecrm.scenarios.ports import HttpClient, LanguageModel
from voicecrm.speech.factory import speech_to_text, text_to_speech
from voicecrm.storage import Database
from voicecrm.storage.migrate import upgrade
from voicecrm.telephony.ari import AriClient, AriEvents, played_media
from voicecrm.telephony.ari.dialling import check_dial_template, check_sip_dial_template
from voicecrm.telephony.ari.played_media import PLAYED_MEDIA, PlayedMedia
from voicecrm.telephony.ari.stasis import AriApplication, AriServices
from voicecrm.telephony.twilio import media_stream as twilio_media
from voicecrm.telephony.twilio import webhooks as twilio_webhooks
from voicecrm.telephony.twilio.outbound import TwilioOutbound, rest_client
from voicecrm.telephony.twilio.services import TWILIO, TwilioServices
from voicecrm.telephony.voice_calls import SpeechProviders
from voicecrm.voice.call import TurnObserver
from voicecrm.voice.ports import MediaFetcher, RecordingSink, SpeechToText, TextToSpeech

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
TURN_METRICS = web.AppKey("turn_metrics", TurnMetrics)


@dataclass(frozen=True, slots=True)
class CallResources:
    """What the calls of every carrier share, built once per process."""

    actor: Actor
    providers: SpeechProviders
    llm: LanguageModel | None
    http: HttpClient
    media: MediaFetcher
    on_turn: TurnObserver
    recordings: RecordingSink


CALL_RESOURCES = web.AppKey("call_resources", CallResources)
ARI = web.AppKey("ari", AriApplication)


@dataclass(frozen=True, slots=True)
class FirstStart:
    """What the first start created; the token's secret exists only here."""

    team_id: int
    admin_email: str
    token: str


async def bootstrap(database: Database, settings: Settings) -> FirstStart | None:
    """Create the first team, its admin and a token when the database has no team yet."""
    async with database.transaction() as session:
        if await accounts.first_team(session) is not None:
            return None
        team = await accounts.create_team(
            session,
            settings.bootstrap_team,
            default_region=settings.default_region,
            timezone=settings.timezone,
        )
        admin = await accounts.create_user(
            session, team.id, email=settings.bootstrap_admin_email, name="Admin", role=Role.ADMIN
        )
        issued = await accounts.create_token(session, admin, "first start")
        return FirstStart(team_id=team.id, admin_email=admin.email, token=issued.secret)


async def prepare_database(database: Database, settings: Settings) -> FirstStart | None:
    if settings.migrate_on_start:
        await upgrade(database)
    return await bootstrap(database, settings)


def speech_providers(settings: Settings) -> SpeechProviders:
    """The speech providers calls use: the service's choice, or a scenario's own."""
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None

    def stt(provider: str, model: str | None) -> SpeechToText:
        return speech_to_text(
            settings.stt_provider if provider == "default" else provider,
            base_url=settings.llm_base_url,
            api_key=key,
            model=model or settings.stt_model,
        )

    def tts(provider: str, model: str | None) -> TextToSpeech:
        return text_to_speech(
            settings.tts_provider if provider == "default" else provider,
            base_url=settings.llm_base_url,
            api_key=key,
            model=model or settings.tts_model,
            voice=settings.tts_voice,
        )

    return SpeechProviders(build_stt=stt, build_tts=tts)


async def _freeze_startup_objects(_: web.Application) -> None:
    """Move everything built before serving (modules, settings, the app) out of the
    collector's sight: a full collection over them stalls every call at once for tens of
    milliseconds (measured in bench/audio.py)."""
    gc.collect()
    gc.freeze()


def twilio_outbound(
    settings: Settings, database: Database, actor: Actor, scenarios: ScenarioRegistry
) -> TwilioOutbound:
    """Outbound calls through Twilio; `OutboundNotConfigured` says which setting is unset.

    Call inside the running loop: the REST client opens its connection pool here.
    """
    token = settings.twilio_auth_token
    client = rest_client(
        settings.twilio_account_sid,
        token.get_secret_value() if token else None,
        settings.public_url,
        api_base_url=settings.twilio_api_base_url,
    )
    assert settings.public_url is not None  # rest_client refuses without it
    return TwilioOutbound(
        database,
        actor,
        scenarios,
        client,
        settings.public_url,
        default_from=settings.twilio_from_number,
    )


def build_app(
    settings: Settings,
    *,
    on_first_start: Callable[[FirstStart], None] | None = None,
    freeze_gc: bool = False,
) -> web.Application:
    """`freeze_gc` is for the serving process only; tests build many apps in one process."""
    app = web.Application(middlewares=[problem_middleware])
    app[SETTINGS] = settings
    app[MAX_IMPORT_BYTES] = settings.max_import_bytes
    app[RECORDINGS] = RecordingStore(Path(settings.recordings_dir))
    registry = CollectorRegistry()
    app[METRICS_REGISTRY] = registry
    app[TURN_METRICS] = TurnMetrics(registry)

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        database = Database(settings.database_url)
        try:
            first = await prepare_database(database, settings)
            if first is not None and on_first_start is not None:
                on_first_start(first)
            app[DATABASE] = database
            yield
        finally:
            await database.close()

    async def scenarios_ctx(app: web.Application) -> AsyncIterator[None]:
        """Load the scenarios (refusing to start on any problem) and reload them on SIGHUP."""
        registry = ScenarioRegistry([Path(settings.scenarios_dir)])
        registry.reload()
        app[SCENARIOS] = registry
        log.info("scenarios: %s", ", ".join(sorted(registry.library.scenarios)) or "none")

        def on_sighup() -> None:
            try:
                registry.reload()
                log.info("scenarios reloaded: %s", ", ".join(sorted(registry.library.scenarios)))
            except ScenarioInvalid as err:
                log.error("scenarios not reloaded, the running ones stay:\n%s", err.detail)

        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        try:
            yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGHUP)

    async def calls_ctx(app: web.Application) -> AsyncIterator[None]:
        """What every carrier's calls share: speech providers, the language model,
        outbound HTTP, the actor. Opened before the carriers and closed after them."""
        providers = speech_providers(settings)
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        llm = language_model_from_settings(settings.llm_base_url, key)
        async with aiohttp.ClientSession() as http_session:
            try:
                async with app[DATABASE].transaction(read_only=True) as session:
                    team = await accounts.first_team(session)
                    assert team is not None, "bootstrap creates the first team"
                    actor = Actor.system(accounts.team_settings(team))
                client = AiohttpClient(http_session)
                app[CALL_RESOURCES] = CallResources(
                    actor=actor,
                    providers=providers,
                    llm=llm,
                    http=client,
                    media=client,
                    on_turn=app[TURN_METRICS].observe,
                    recordings=app[RECORDINGS],
                )
                yield
            finally:
                await providers.aclose()
                if llm is not None:
                    await llm.aclose()

    async def twilio_ctx(app: web.Application) -> AsyncIterator[None]:
        shared = app[CALL_RESOURCES]
        token = settings.twilio_auth_token
        outbound: TwilioOutbound | None = None
        try:
            if token is None:
                log.info("twilio: VOICECRM_TWILIO_AUTH_TOKEN is not set; /twilio answers 503")
            try:
                outbound = twilio_outbound(settings, app[DATABASE], shared.actor, app[SCENARIOS])
            except OutboundNotConfigured as err:
                log.info("twilio: no outbound calls: %s", err.detail)
            app[TWILIO] = TwilioServices(
                database=app[DATABASE],
                actor=shared.actor,
                scenarios=app[SCENARIOS],
                providers=shared.providers,
                validator=RequestValidator(token.get_secret_value()) if token else None,
                public_url=settings.public_url,
                llm=shared.llm,
                http=shared.http,
                media=shared.media,
                on_turn=shared.on_turn,
                recordings=shared.recordings,
                blocked_callers=settings.blocked_callers,
                mode=settings.twilio_mode,
                outbound=outbound,
            )
            yield
        finally:
            if outbound is not None:
                await outbound.aclose()

    async def ari_ctx(app: web.Application) -> AsyncIterator[None]:
        """The Stasis application, when Asterisk is configured; its calls end before the
        shared resources they use are closed."""
        if settings.ari_url is None:
            log.info("asterisk: VOICECRM_ARI_URL is not set; no calls from Asterisk")
            yield
            return
        if settings.ari_password is None:
            log.warning("asterisk: VOICECRM_ARI_PASSWORD is not set; no calls from Asterisk")
            yield
            return
        shared = app[CALL_RESOURCES]
        password = settings.ari_password.get_secret_value()
        dial_template = settings.ari_dial_template
        if dial_template is not None:
            check_dial_template(dial_template)  # refuses to start on one that cannot dial
        sip_dial_template = settings.ari_sip_dial_template
        if sip_dial_template is not None:
            check_sip_dial_template(sip_dial_template)
        async with aiohttp.ClientSession() as session:
            client = AriClient(
                settings.ari_url, settings.ari_user, password, settings.ari_app, session
            )
            events = AriEvents(
                settings.ari_url, settings.ari_user, password, settings.ari_app, session=session
            )
            application = AriApplication(
                AriServices(
                    database=app[DATABASE],
                    actor=shared.actor,
                    scenarios=app[SCENARIOS],
                    providers=shared.providers,
                    llm=shared.llm,
                    http=shared.http,
                    media=shared.media,
                    on_turn=shared.on_turn,
                    recordings=shared.recordings,
                    blocked_callers=settings.blocked_callers,
                ),
                client,
                events,
                media_host=settings.ari_media_host,
                media_bind=settings.ari_media_bind,
                dial_template=dial_template,
                sip_dial_template=sip_dial_template,
                played_media=app[PLAYED_MEDIA],
            )
            app[ARI] = application
            application.start()
            log.info(
                "asterisk: Stasis application %r on %s, media on %s",
                settings.ari_app,
                settings.ari_url,
                settings.ari_media_host,
            )
            try:
                yield
            finally:
                await application.aclose()
                await client.aclose()

    async def imports_ctx(app: web.Application) -> AsyncIterator[None]:
        """Background CSV imports: cancelled and recorded as stopped before the database
        closes (cleanup runs in reverse order)."""
        runner = ImportRunner(app[DATABASE])
        app[IMPORTS] = runner
        try:
            yield
        finally:
            await runner.close()

    app.cleanup_ctx.append(scenarios_ctx)
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(imports_ctx)
    app.cleanup_ctx.append(calls_ctx)
    app.cleanup_ctx.append(twilio_ctx)
    app.cleanup_ctx.append(ari_ctx)
    app[PLAYED_MEDIA] = PlayedMedia(settings.ari_http_url)
    app.add_routes(played_media.routes())
    twilio_app = web.Application()
    twilio_app.add_routes([*twilio_webhooks.routes(), *twilio_media.routes()])
    app.add_subapp("/twilio", twilio_app)
    app.add_subapp(API_PREFIX, build_api(all_routes(), max_body_bytes=settings.max_body_bytes))

    async def index(_: web.Request) -> web.Response:
        return web.json_response(
            {"service": "voicecrm", "api": API_PREFIX, "openapi": f"{API_PREFIX}/openapi.json"}
        )

    async def metrics(_: web.Request) -> web.Response:
        """Prometheus text format; no secrets in it, so no token (as Prometheus expects)."""
        body = generate_latest(app[METRICS_REGISTRY])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    if freeze_gc:
        app.on_startup.append(_freeze_startup_objects)
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    return app
