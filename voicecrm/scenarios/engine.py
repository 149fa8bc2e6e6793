"""The scenario engine: runs one call through its scenario, step by step.

It drives the channel-agnostic `Call`, writes CRM changes through
`ScenarioCRM`, keeps all progress in a serialisable `CallState`, and never
lets a failure drop the call: a failing step goes to its `on_error` step, or
the caller hears the scenario's error message and the call ends cleanly.
Loops are bounded by the scenario's `max_steps` and `max_duration_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as monotonic_time
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from voicecrm.calls.interface import (
    Call,
    CallEnded,
    CallSuspended,
    GatherResult,
    Recording,
    ResumeAnswer,
    Spoken,
)
from voicecrm.errors import VoiceCRMError
from voicecrm.scenarios import models as m
from voicecrm.scenarios.crm_actions import ScenarioCRM
from voicecrm.scenarios.ports import HttpClient, LanguageModel
from voicecrm.scenarios.state import CallState
from voicecrm.scenarios.templates import evaluate, render, render_value
from voicecrm.storage import utcnow

log = logging.getLogger(__name__)

NEXT = "\x00next"  # a handler's answer meaning "the step's `next`, or the one below it"
END = "\x00end"  # a handler's answer meaning "the call is over"

StepHandler = Callable[["Engine", str, Any], Awaitable[str]]


class StepFailed(VoiceCRMError):
    """A step could not do its work; the scenario's error path takes over."""

    title = "Step failed"


class Engine:
    """Runs one call. Create one per call (or per webhook), give it the saved state."""

    def __init__(
        self,
        scenario: m.Scenario,
        call: Call,
        crm: ScenarioCRM,
        *,
        llm: LanguageModel | None = None,
        http: HttpClient | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.scenario = scenario
        self.call = call
        self.crm = crm
        self.llm = llm
        self.http = http
        self.clock = clock
        self._contact: dict[str, Any] | None = None
        self._order = list(scenario.steps)
        self.state = CallState(scenario=scenario.name, step=scenario.first_step)
        self.step_seconds: list[float] = []  # engine time per step, for the benchmark
        self.agent_overhead: list[float] = []  # agent turn time minus model time
        self._later: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------- lifecycle
    def new_state(self, *, call_id: int | None = None, contact_id: int | None = None) -> CallState:
        return CallState(
            scenario=self.scenario.name,
            step=self.scenario.first_step,
            call_id=call_id,
            contact_id=contact_id,
            started_at=self.clock().isoformat(),
        )

    async def run(self, state: CallState, *, answer: ResumeAnswer | None = None) -> CallState:
        """Run until the call ends or suspends; returns the state to save.

        What steps left to finish off the call's path (`after`) is done before it
        returns, so that the state and the timeline have it.
        """
        try:
            return await self._run_steps(state, answer)
        finally:
            await self._settle()

    def after(self, work: Coroutine[Any, Any, None]) -> None:
        """Finish `work` while the call goes on: a voicemail's words take seconds to
        transcribe, which the caller would otherwise wait through in silence before
        the goodbye. `run` awaits it before it returns."""
        self._later.append(asyncio.create_task(work))

    async def _settle(self) -> None:
        later, self._later = self._later, []
        for outcome in await asyncio.gather(*later, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error(
                    "work left by a step of %s failed after the call",
                    self.scenario.name,
                    exc_info=outcome,
                )

    async def _run_steps(self, state: CallState, answer: ResumeAnswer | None) -> CallState:
        self.state = state
        if not state.started_at:
            state.started_at = self.clock().isoformat()
        if isinstance(answer, Recording):
            state.pending_input = {
                "recording_url": answer.url,
                "recording_seconds": answer.duration_seconds,
            }
            state.awaiting = None
        elif answer is not None:
            state.pending_input = {
                "digits": answer.digits,
                "speech": answer.speech,
                "confidence": answer.confidence,
            }
            state.awaiting = None
        if state.steps_run == 0 and state.awaiting is None and answer is None:
            greeting = self.scenario.settings.greeting
            if greeting:
                try:
                    await self.say(await self.render_now(greeting))
                except CallEnded:
                    state.outcome = "caller_hung_up"
                    return state
                except VoiceCRMError as err:
                    log.warning("the greeting of %s failed: %s", self.scenario.name, err.detail)
                    await self.fail_call()
                    return state
        try:
            while state.step is not None and state.outcome is None:
                if self.over_limits():
                    break
                await self._run_step(state.step)
        except CallEnded:
            state.outcome = state.outcome or "caller_hung_up"
        except CallSuspended:
            state.awaiting = "gather"
            return state
        if state.outcome is None:
            state.outcome = "completed"
            with contextlib.suppress(CallEnded):
                await self.call.hangup("completed")
        return state

    def over_limits(self) -> bool:
        """Whether the call hit max_steps or max_duration_seconds (and records which)."""
        limits = self.scenario.settings.limits
        if self.state.steps_run >= limits.max_steps:
            log.warning(
                "scenario %s hit max_steps (%d): ending the call",
                self.scenario.name,
                limits.max_steps,
            )
            self.state.outcome = "step_limit"
            return True
        started = datetime.fromisoformat(self.state.started_at)
        if self.clock() - started > timedelta(seconds=limits.max_duration_seconds):
            self.state.outcome = "duration_limit"
            return True
        return False

    async def _run_step(self, name: str) -> None:
        from voicecrm.scenarios.steps import HANDLERS

        step = self.scenario.steps[name]
        kind = m.step_kind(step)
        assert kind is not None
        self.state.steps_run += 1
        began = monotonic_time.perf_counter()
        try:
            outcome = await HANDLERS[kind](self, name, step)
        except (CallEnded, CallSuspended):
            raise
        except VoiceCRMError as err:
            log.info("step %s of %s failed: %s", name, self.scenario.name, err.detail)
            self.state.variables["error"] = err.detail
            self.state.attempts = 0
            if step.on_error:
                self.state.step = step.on_error
                return
            await self.fail_call()
            return
        finally:
            self.step_seconds.append(monotonic_time.perf_counter() - began)
        if outcome != name:
            self.state.attempts = 0
        if outcome == END:
            self.state.step = None
        elif outcome == NEXT:
            self.state.step = step.next or self._below(name)
        else:
            self.state.step = outcome

    def _below(self, name: str) -> str | None:
        index = self._order.index(name)
        return self._order[index + 1] if index + 1 < len(self._order) else None

    async def fail_call(self) -> None:
        """The error path when a step has none: apologise and hang up cleanly."""
        self.state.outcome = "error"
        self.state.step = None
        try:
            await self.say(self.scenario.settings.error_message)
        except CallEnded:
            return
        except VoiceCRMError as err:  # the voice itself failed: hang up without a word
            log.warning("could not say the error message: %s", err.detail)
        with contextlib.suppress(CallEnded):
            await self.call.hangup("error")

    # ------------------------------------------------------------- helpers for steps
    async def contact(self) -> dict[str, Any]:
        if self._contact is None:
            if self.state.contact_id is None:
                self.state.contact_id = await self.crm.ensure_contact(self.call.info)
            self._contact = await self.crm.contact_view(self.state.contact_id)
        return self._contact

    async def contact_id(self) -> int:
        if self.state.contact_id is None:
            await self.contact()
        assert self.state.contact_id is not None
        return self.state.contact_id

    def contact_changed(self) -> None:
        self._contact = None

    async def variables(self) -> dict[str, Any]:
        """Everything a template or condition can name."""
        info = self.call.info
        now = self.clock()
        tz = ZoneInfo(self.scenario.settings.timezone)
        values: dict[str, Any] = dict(self.state.variables)
        values.update(
            {
                "contact": await self.contact(),
                "call": {
                    "id": info.call_id,
                    "from": info.from_number,
                    "to": info.to_number,
                    "direction": info.direction.value,
                    "caller_name": info.caller_name or "",
                },
                "business": self.scenario.business.model_dump(),
                "now": now.astimezone(tz),
                "open": is_open(self.scenario.settings.business_hours, now.astimezone(tz)),
                "vars": dict(self.state.variables),
            }
        )
        return values

    async def render_now(self, template: str) -> str:
        return render(template, await self.variables())

    async def render_value(self, value: Any) -> Any:
        return render_value(value, await self.variables())

    async def condition(self, expression: str) -> bool:
        return bool(evaluate(expression, await self.variables()))

    async def say(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> Spoken:
        """Say `text`; the transcript keeps what the caller heard of it."""
        if not text.strip():
            return Spoken(heard="")
        settings = self.scenario.settings
        self.state.say("agent", text, self.clock())
        line = self.state.transcript[-1]
        spoken = await self.call.say(
            text, voice=voice or settings.voice, language=language or settings.language
        )
        if spoken.interrupted:
            line["text"] = spoken.heard or "[interrupted]"
        return spoken

    async def speak(self, sentences: AsyncIterable[str]) -> Spoken:
        """Speak sentences as they are written; the transcript keeps what was heard."""
        settings = self.scenario.settings
        spoken = await self.call.speak(sentences, voice=settings.voice, language=settings.language)
        if spoken.heard:
            self.state.say("agent", spoken.heard, self.clock())
        return spoken

    def heard(self, text: str) -> dict[str, str] | None:
        """Add the caller's words to the transcript; the line, for words known later."""
        if text:
            return self.state.say("caller", text, self.clock())
        return None

    def take_pending_recording(self) -> Recording | None:
        """The message a suspended voicemail step resumes with (url "" when the caller
        left none); None when it did not suspend, and must record now."""
        pending = self.state.pending_input
        if pending is None or "recording_url" not in pending:
            return None
        self.state.pending_input = None
        return Recording(
            url=pending["recording_url"] or "",
            duration_seconds=float(pending.get("recording_seconds") or 0),
        )

    def take_pending_input(self) -> GatherResult | None:
        pending = self.state.pending_input
        self.state.pending_input = None
        if pending is None:
            return None
        return GatherResult(
            digits=pending.get("digits") or "",
            speech=pending.get("speech") or "",
            confidence=pending.get("confidence"),
        )


def is_open(hours: m.BusinessHours | None, local: datetime) -> bool:
    """Whether `local` falls in the opening hours; no hours given means always open."""
    if hours is None:
        return True
    ranges: list[str] = getattr(hours, m.DAYS[local.weekday()])
    clock = local.strftime("%H:%M")
    return any(start <= clock < end for start, end in (r.split("-") for r in ranges))
