"""Caller lookup for integrations: the contact behind a number, created if new."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from voicecrm.accounts.actor import Actor
from voicecrm.api.routing import Ctx, Route
from voicecrm.crm import contacts as service
from voicecrm.crm.callers import resolve_caller
from voicecrm.crm.schemas import ContactOut


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="As the carrier sent it: E.164, national, tel: or sip: URI."
    )
    caller_name: Annotated[str, StringConstraints(max_length=200)] | None = None


class ResolveOut(BaseModel):
    contact: ContactOut
    created: bool
    e164: str


async def resolve(ctx: Ctx) -> ResolveOut:
    data = ctx.body(ResolveIn)
    # Resolution sees the whole team, as a call does; the agent rule applies to reading only.
    resolved = await resolve_caller(
        ctx.session, Actor.system(ctx.actor.team), data.number, data.caller_name
    )
    if resolved.created and ctx.actor.sees_only_own_contacts:
        # As with POST /contacts, an agent who sees only their own contacts keeps the one
        # they create; otherwise they could never resolve a new number (a 404, rolled back).
        resolved.contact.responsible_user_id = ctx.actor.user_id
    await service.get_contact(ctx.session, ctx.actor, resolved.contact.id)
    return ResolveOut(
        contact=await service.one_out(ctx.session, resolved.contact),
        created=resolved.created,
        e164=resolved.phone.e164,
    )


ROUTES = [
    Route(
        "POST",
        "/callers/resolve",
        resolve,
        "Resolve a caller ID to a contact, creating an 'Unknown Caller' if new",
        "contacts",
        body=ResolveIn,
        response=ResolveOut,
        # An agent who sees only their own contacts gets a 404 for anyone else's number.
        errors=(404,),
    ),
]
