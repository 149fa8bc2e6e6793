"""The scenario format, as pydantic models: the loader, the engine and the JSON Schema share them.

A scenario is a mapping of named steps. Each step is a mapping with exactly one
action key (`say`, `gather`, `agent`, ...) and optional flow keys: `next` (the
step after this one; by default the one written below it), `on_error` (where
to go when the step fails) and, for `branch`, `else`. Strings shown to callers
or written to the CRM are Jinja templates; `if` conditions are Jinja
expressions. The models check shapes; `voicecrm.scenarios.checks` checks what
spans steps (targets that exist, reachable steps, templates that parse).
"""

from __future__ import annotations

from datetime import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
)

from voicecrm.calls.interface import VOICEMAIL_SILENCE_SECONDS, InputKind

StepName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$", max_length=100)]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
Template = Annotated[str, Field(description="Text with Jinja {{ placeholders }}.")]
Expression = Annotated[
    str, Field(description="A Jinja expression, e.g. \"'vip' in contact.tags\".")
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ----------------------------------------------------------------- settings
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HoursRange = Annotated[str, StringConstraints(pattern=r"^\d\d:\d\d-\d\d:\d\d$")]


class BusinessHours(Model):
    """Opening hours per weekday in the scenario's timezone.

    For example `mon: ["09:00-12:00", "13:00-17:00"]`; a day left out is closed.
    """

    mon: list[HoursRange] = []
    tue: list[HoursRange] = []
    wed: list[HoursRange] = []
    thu: list[HoursRange] = []
    fri: list[HoursRange] = []
    sat: list[HoursRange] = []
    sun: list[HoursRange] = []

    @field_validator(*DAYS)
    @classmethod
    def _ranges_are_times(cls, ranges: list[str]) -> list[str]:
        for item in ranges:
            start, end = item.split("-")
            try:
                opens, closes = time.fromisoformat(start), time.fromisoformat(end)
            except ValueError:
                raise ValueError(f"{item!r} is not HH:MM-HH:MM with real times") from None
            if closes <= opens:
                raise ValueError(f"{item!r} closes before it opens")
        return ranges


class Limits(Model):
    max_duration_seconds: int = Field(1800, ge=10, le=4 * 3600)
    max_steps: int = Field(500, ge=1, le=100_000, description="Steps run per call: stops loops.")
    max_agent_turns: int = Field(30, ge=1, le=500)
    max_tool_calls_per_turn: int = Field(5, ge=1, le=50)


class LLMSettings(Model):
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.3, ge=0, le=2)
    timeout_seconds: float = Field(10, gt=0, le=120)


class TurnTaking(Model):
    """How the receptionist listens on an audio call (Media Streams, Asterisk)."""

    end_silence_ms: int = Field(
        700, ge=100, le=5000, description="Silence that ends the caller's utterance."
    )
    start_ms: int = Field(
        40, ge=20, le=500, description="Speech that counts as the caller talking (barge-in)."
    )
    min_speech_ms: int = Field(
        120, ge=0, le=2000, description="Shorter sounds (a cough, a click) are ignored."
    )
    max_utterance_seconds: float = Field(30, gt=0, le=120)
    barge_in: bool = Field(True, description="Stop talking when the caller talks or keys.")
    vad_aggressiveness: int = Field(
        2, ge=0, le=3, description="0 lets most sound count as speech, 3 only clear speech."
    )


SpeechProvider = Literal["default", "openai", "offline"]


class SpeechSettings(Model):
    """Speech in and out on audio calls; `default` is the service's configuration."""

    stt: SpeechProvider = Field("default", description="Speech-to-text provider.")
    stt_model: str | None = None
    tts: SpeechProvider = Field("default", description="Text-to-speech provider.")
    tts_model: str | None = None
    turn_taking: TurnTaking = TurnTaking()


class OutboundSettings(Model):
    """Calls this scenario places (the dialer, `voicecrm call`)."""

    on_machine: Literal["hangup", "continue"] = Field(
        "hangup",
        description="When answering machine detection hears a machine: hangup (the call "
        "ends, recorded as answered by a machine) or continue (the scenario runs, to leave "
        "a message; `answered_by` tells it who answered). A fax is always hung up on.",
    )


class Settings(Model):
    language: str = "en-US"
    voice: str | None = None
    greeting: Template | None = Field(None, description="Said when the call is answered.")
    error_message: str = Field(
        "Sorry, something went wrong on our side. Please call again later. Goodbye.",
        description="Said before hanging up when a step fails and has no on_error step.",
    )

    timezone: str = "UTC"
    business_hours: BusinessHours | None = None
    limits: Limits = Limits()
    llm: LLMSettings = LLMSettings()
    speech: SpeechSettings = SpeechSettings()
    twilio_mode: Literal["default", "stream", "twiml"] = Field(
        "default",
        description="Twilio calls: stream (Media Streams through the service's own speech) or "
        "twiml (Twilio's <Say> and <Gather>, no speech providers needed); default: the "
        "service's VOICECRM_TWILIO_MODE.",
    )
    outbound: OutboundSettings = OutboundSettings()


class Business(Model):
    """Facts the receptionist may tell callers (the `lookup_business_info` tool reads these)."""

    name: str = ""
    facts: dict[str, str] = {}


# ----------------------------------------------------------------- step arguments
class NoteType(StrEnum):
    GENERAL = "general"
    INFO = "info"
    WARNING = "warning"
    DANGER = "danger"


class SayArgs(Model):
    text: Template
    voice: str | None = None
    language: str | None = None


class PlayArgs(Model):
    url: str = Field(description="An http(s) URL or a file path relative to the scenario.")


class GatherArgs(Model):
    prompt: Template | None = None
    input: list[InputKind] = [InputKind.SPEECH, InputKind.DTMF]
    timeout: float = Field(5, gt=0, le=120, description="Seconds to wait for input.")
    num_digits: int | None = Field(None, ge=1, le=50)
    finish_on_key: Literal["#", "*", ""] | None = "#"
    hints: list[str] = []
    save_as: VarName = "answer"
    valid: str | None = Field(None, description="A regular expression the answer must match.")
    choices: dict[str, StepName] | None = Field(
        None, description="Answer (digits or a keyword) -> step. Anything else is no match."
    )
    retries: int = Field(2, ge=0, le=10)
    retry_prompt: Template | None = None
    no_input: StepName | None = Field(None, description="Step when the caller says nothing.")
    no_match: StepName | None = Field(None, description="Step when the answer is not valid.")


class BranchCase(Model):
    if_: Expression = Field(alias="if")
    goto: StepName


class NoteArgs(Model):
    content: Template
    type: NoteType = NoteType.GENERAL
    pinned: bool = False

    @field_validator("type", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class UpdateContactArgs(Model):
    name: Template | None = None
    company: Template | None = None
    email: Template | None = None
    custom_fields: dict[str, Template] = {}


class TaskArgs(Model):
    title: Template
    description: Template | None = None
    due_in_minutes: int = Field(60, ge=0, le=60 * 24 * 365)
    assign_to: str | None = Field(
        None, description="A user's email; default: the contact's responsible user."
    )


class HttpRequestArgs(Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: Template
    headers: dict[str, Template] = {}
    json_body: Any = Field(None, alias="json", description="Sent as JSON; strings are templates.")
    timeout: float = Field(5, gt=0, le=60)
    save_as: VarName | None = None


class TransferArgs(Model):
    to: Template = Field(description="E.164 number or SIP URI.")
    whisper: Template | None = Field(None, description="Said to the person who answers.")
    timeout: float = Field(30, gt=0, le=300)
    caller_id: str | None = None
    no_answer: StepName | None = Field(None, description="Step when nobody answers.")


class VoicemailArgs(Model):
    prompt: Template | None = "Please leave a message after the tone."
    max_seconds: int = Field(120, ge=1, le=3600)
    beep: bool = True
    # Silence that ends the message; shorter pauses are part of it.
    silence_seconds: int = Field(VOICEMAIL_SILENCE_SECONDS, ge=1, le=60)


class HangupArgs(Model):
    reason: str = "completed"


class EchoArgs(Model):
    seconds: float = Field(10, gt=0, le=120)


BUILTIN_TOOLS = (
    "create_crm_note",
    "set_stage",
    "update_contact",
    "add_tag",
    "create_task",
    "transfer_call",
    "end_call",
    "lookup_business_info",
)


class AgentArgs(Model):
    instructions: Template
    greeting: Template | None = None
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    tools: list[str] = Field(default_factory=lambda: list(BUILTIN_TOOLS))
    max_turns: int | None = Field(None, ge=1, le=500)
    transfer_targets: dict[str, str] = Field(
        {}, description="Names the model may transfer to -> number or SIP URI."
    )


class HttpTool(Model):
    """A scenario's own tool for the agent: an HTTP request whose JSON answer the model reads."""

    description: str
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments the model passes.",
    )
    request: HttpRequestArgs


# ----------------------------------------------------------------- steps
class StepBase(Model):
    next: StepName | None = None
    on_error: StepName | None = None


class SayStep(StepBase):
    say: Template | SayArgs


class PlayStep(StepBase):
    play: str | PlayArgs


class GatherStep(StepBase):
    gather: GatherArgs


class BranchStep(StepBase):
    branch: Annotated[list[BranchCase], Field(min_length=1)]
    else_: StepName | None = Field(None, alias="else")


class SetStep(StepBase):
    set: dict[VarName, Any]


class GotoStep(StepBase):
    goto: StepName


class CreateNoteStep(StepBase):
    create_crm_note: Template | NoteArgs


class SetStageStep(StepBase):
    set_stage: Template | None


class SetStatusStep(StepBase):
    set_status: Literal["open", "won", "lost"]


class AddTagStep(StepBase):
    add_tag: str | list[str]


class RemoveTagStep(StepBase):
    remove_tag: str | list[str]


class UpdateContactStep(StepBase):
    update_contact: UpdateContactArgs


class CreateTaskStep(StepBase):
    create_task: TaskArgs


class HttpRequestStep(StepBase):
    http_request: HttpRequestArgs


class TransferStep(StepBase):
    transfer: Template | TransferArgs


class VoicemailStep(StepBase):
    voicemail: VoicemailArgs | None = VoicemailArgs()


class HangupStep(StepBase):
    hangup: HangupArgs | None = None


class EchoStep(StepBase):
    echo: EchoArgs | None = EchoArgs()


class AgentStep(StepBase):
    agent: AgentArgs


STEP_TYPES: dict[str, type[StepBase]] = {
    "say": SayStep,
    "play": PlayStep,
    "gather": GatherStep,
    "branch": BranchStep,
    "set": SetStep,
    "goto": GotoStep,
    "create_crm_note": CreateNoteStep,
    "set_stage": SetStageStep,
    "set_status": SetStatusStep,
    "add_tag": AddTagStep,
    "remove_tag": RemoveTagStep,
    "update_contact": UpdateContactStep,
    "create_task": CreateTaskStep,
    "http_request": HttpRequestStep,
    "transfer": TransferStep,
    "voicemail": VoicemailStep,
    "hangup": HangupStep,
    "echo": EchoStep,
    "agent": AgentStep,
}


def step_kind(value: Any) -> str | None:
    """The action key of a step mapping: the tag that picks its model."""
    if isinstance(value, StepBase):
        return next(k for k in STEP_TYPES if k in type(value).model_fields)
    if not isinstance(value, dict):
        return None
    found = [key for key in value if key in STEP_TYPES]
    return found[0] if len(found) == 1 else None


Step = Annotated[
    Annotated[SayStep, Tag("say")]
    | Annotated[PlayStep, Tag("play")]
    | Annotated[GatherStep, Tag("gather")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[SetStep, Tag("set")]
    | Annotated[GotoStep, Tag("goto")]
    | Annotated[CreateNoteStep, Tag("create_crm_note")]
    | Annotated[SetStageStep, Tag("set_stage")]
    | Annotated[SetStatusStep, Tag("set_status")]
    | Annotated[AddTagStep, Tag("add_tag")]
    | Annotated[RemoveTagStep, Tag("remove_tag")]
    | Annotated[UpdateContactStep, Tag("update_contact")]
    | Annotated[CreateTaskStep, Tag("create_task")]
    | Annotated[HttpRequestStep, Tag("http_request")]
    | Annotated[TransferStep, Tag("transfer")]
    | Annotated[VoicemailStep, Tag("voicemail")]
    | Annotated[HangupStep, Tag("hangup")]
    | Annotated[EchoStep, Tag("echo")]
    | Annotated[AgentStep, Tag("agent")],
    Discriminator(
        step_kind,
        custom_error_type="unknown_step",
        custom_error_message="a step needs exactly one action: " + ", ".join(STEP_TYPES),
    ),
]


class Scenario(Model):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=100)]
    description: str = ""
    default: bool = Field(False, description="Used for calls to numbers no scenario names.")
    numbers: list[str] = Field([], description="Dialled numbers (or extensions) it answers.")
    settings: Settings = Settings()
    business: Business = Business()
    tools: dict[VarName, HttpTool] = Field({}, description="HTTP tools the agent may call.")
    start: StepName | None = Field(None, description="First step; default: the first written.")
    steps: Annotated[dict[StepName, Step], Field(min_length=1)]

    @property
    def first_step(self) -> str:
        return self.start or next(iter(self.steps))
