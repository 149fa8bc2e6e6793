"""Bulk actions over a selection that may span many pages.

A selection is either explicit ids or "everything this filter matches"; it is
resolved to ids in id order and worked through in batches, each contact going
through the same domain function a single edit uses, so the timeline records
a bulk change exactly as it records one made by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm import contacts as contacts_service
from voicecrm.crm import timeline
from voicecrm.crm.models import Contact
from voicecrm.crm.schemas import ContactStatus, TagName
from voicecrm.crm.search import ContactFilter, matching_ids
from voicecrm.errors import InvalidInput
from voicecrm.storage import MAX_ID, utcnow

MAX_EXPLICIT_IDS = 100_000
BATCH = 500


class Selection(BaseModel):
    """Either `ids` or `filter` (an empty filter selects every visible contact)."""

    model_config = ConfigDict(extra="forbid")
    # Bounded like path ids: a number beyond a BIGINT would fail in the driver, not here.
    ids: (
        Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Field(max_length=MAX_EXPLICIT_IDS)]
        | None
    ) = None
    filter: ContactFilter | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Selection:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of 'ids' or 'filter'")
        return self


class BulkAction(StrEnum):
    TAG = "tag"
    UNTAG = "untag"
    SET_RESPONSIBLE = "set_responsible"
    SET_STAGE = "set_stage"
    SET_STATUS = "set_status"
    DELETE = "delete"


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: BulkAction
    selection: Selection
    tags: Annotated[list[TagName], Field(max_length=50)] = []
    user_id: int | None = Field(None, description="For set_responsible; null clears it.")
    stage_id: int | None = Field(None, description="For set_stage; null clears it.")
    status: ContactStatus | None = None

    @model_validator(mode="after")
    def _arguments(self) -> BulkRequest:
        if self.action in (BulkAction.TAG, BulkAction.UNTAG) and not self.tags:
            raise ValueError(f"'{self.action}' needs 'tags'")
        if self.action is BulkAction.SET_STATUS and self.status is None:
            raise ValueError("'set_status' needs 'status'")
        return self


async def selected_ids(
    session: AsyncSession, actor: Actor, selection: Selection
) -> AsyncIterator[list[int]]:
    """The visible ids of a selection, in batches, in id order."""
    if selection.ids is not None:
        wanted = sorted(set(selection.ids))
        for start in range(0, len(wanted), BATCH):
            found = await contacts_service.visible_ids(
                session, actor, wanted[start : start + BATCH]
            )
            if found:
                yield found
        return
    assert selection.filter is not None
    base = matching_ids(actor, selection.filter)
    last = 0
    while True:
        ids = list(
            await session.scalars(base.where(Contact.id > last).order_by(Contact.id).limit(BATCH))
        )
        if not ids:
            return
        yield ids
        last = ids[-1]


async def run_bulk(session: AsyncSession, actor: Actor, request: BulkRequest) -> int:
    """Apply the action; returns how many contacts it touched."""
    if request.action is BulkAction.DELETE:
        actor.require_admin()
    if request.action is BulkAction.SET_STAGE and request.stage_id is not None:
        await contacts_service.check_stage(session, actor, request.stage_id)
    if request.action is BulkAction.SET_RESPONSIBLE and request.user_id is not None:
        await contacts_service.check_user(session, actor, request.user_id)
    batches = [ids async for ids in selected_ids(session, actor, request.selection)]
    touched = 0
    for ids in batches:
        if request.action is BulkAction.DELETE:
            touched += await contacts_service.delete_contacts(session, actor, ids)
            continue
        # Locked in id order (as a merge locks), so a contact merged away meanwhile is
        # skipped instead of failing a foreign key, and concurrent edits are not lost.
        rows = list(
            await session.scalars(
                select(Contact)
                .where(Contact.id.in_(ids))
                .order_by(Contact.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        )
        for contact in rows:
            touched += await _apply(session, actor, request, contact)
        await session.flush()
    return touched


async def _apply(
    session: AsyncSession, actor: Actor, request: BulkRequest, contact: Contact
) -> int:
    match request.action:
        case BulkAction.TAG:
            return int(bool(await contacts_service.add_tags(session, actor, contact, request.tags)))
        case BulkAction.UNTAG:
            return int(
                bool(await contacts_service.remove_tags(session, actor, contact, request.tags))
            )
        case BulkAction.SET_STAGE:
            return int(
                await contacts_service.change_stage(session, actor, contact, request.stage_id)
            )
        case BulkAction.SET_STATUS:
            assert request.status is not None
            return int(
                await contacts_service.change_status(session, actor, contact, request.status)
            )
        case BulkAction.SET_RESPONSIBLE:
            if contact.responsible_user_id == request.user_id:
                return 0
            contact.responsible_user_id = request.user_id
            contact.updated_at = utcnow()
            await timeline.append(
                session,
                actor,
                contact.id,
                "contact_updated",
                timeline.ContactUpdated(fields=["responsible_user_id"]),
            )
            return 1
    raise InvalidInput(f"unknown action {request.action}", field="action")
