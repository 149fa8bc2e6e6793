"""Contacts: list and search, read, create, change, delete, tag, merge, bulk actions."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from voicecrm.api.routing import Ctx, Route
from voicecrm.crm import contacts as service
from voicecrm.crm.bulk import BulkRequest, run_bulk
from voicecrm.crm.merge import merge_contacts
from voicecrm.crm.models import Contact
from voicecrm.crm.schemas import ContactCreate, ContactOut, ContactUpdate, TagName
from voicecrm.crm.search import MAX_CURSOR_LENGTH, ContactFilter, SortKey, search
from voicecrm.storage import MAX_ID


class ContactListQuery(ContactFilter):
    sort: SortKey = Field("-updated_at", description="Sort field; a leading '-' is descending.")
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(
        None,
        max_length=MAX_CURSOR_LENGTH,
        pattern=r"^[A-Za-z0-9_-]*$",
        description="The `next_cursor` of the previous page (URL-safe base64).",
    )


class ContactPage(BaseModel):
    items: list[ContactOut]
    next_cursor: str | None


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: Annotated[list[TagName], Field(min_length=1, max_length=50)]


ContactId = Annotated[int, Field(ge=1, le=MAX_ID)]


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    survivor_id: ContactId
    merged_ids: Annotated[list[ContactId], Field(min_length=1, max_length=100)]


class BulkResult(BaseModel):
    action: str
    affected: int


async def list_contacts(ctx: Ctx) -> ContactPage:
    query = ctx.query(ContactListQuery)
    flt = ContactFilter.model_validate(query.model_dump(include=set(ContactFilter.model_fields)))
    page = await search(
        ctx.session, ctx.actor, flt, sort=query.sort, limit=query.limit, cursor=query.cursor
    )
    return ContactPage(
        items=await service.to_out(ctx.session, page.contacts), next_cursor=page.next_cursor
    )


async def create_contact(ctx: Ctx) -> ContactOut:
    contact = await service.create_contact(
        ctx.session, ctx.actor, ctx.body(ContactCreate), default_source="api"
    )
    return await service.one_out(ctx.session, contact)


async def get_contact(ctx: Ctx) -> ContactOut:
    contact = await service.get_contact(ctx.session, ctx.actor, ctx.path_id("contact_id"))
    return await service.one_out(ctx.session, contact)


async def update_contact(ctx: Ctx) -> ContactOut:
    contact = await service.update_contact(
        ctx.session, ctx.actor, ctx.path_id("contact_id"), ctx.body(ContactUpdate)
    )
    return await service.one_out(ctx.session, contact)


async def delete_contact(ctx: Ctx) -> None:
    contact = await service.get_contact(ctx.session, ctx.actor, ctx.path_id("contact_id"))
    await service.delete_contacts(ctx.session, ctx.actor, [contact.id])


async def _locked_contact(ctx: Ctx) -> Contact:
    """The path's contact, row-locked for a change of its tags.

    Two requests adding one tag would otherwise both see it missing and both insert it
    (a primary-key failure), and a tag for a contact a merge is deleting would fail its
    foreign key: with the lock the second waits and sees the first's tag, or NotFound.
    """
    return await service.get_contact(
        ctx.session, ctx.actor, ctx.path_id("contact_id"), for_update=True
    )


async def add_tags(ctx: Ctx) -> ContactOut:
    contact = await _locked_contact(ctx)
    await service.add_tags(ctx.session, ctx.actor, contact, ctx.body(TagsIn).tags)
    return await service.one_out(ctx.session, contact)


async def remove_tags(ctx: Ctx) -> ContactOut:
    contact = await _locked_contact(ctx)
    await service.remove_tags(ctx.session, ctx.actor, contact, ctx.body(TagsIn).tags)
    return await service.one_out(ctx.session, contact)


async def merge(ctx: Ctx) -> ContactOut:
    data = ctx.body(MergeIn)
    survivor = await merge_contacts(ctx.session, ctx.actor, data.survivor_id, data.merged_ids)
    return await service.one_out(ctx.session, survivor)


async def bulk(ctx: Ctx) -> BulkResult:
    request = ctx.body(BulkRequest)
    affected = await run_bulk(ctx.session, ctx.actor, request)
    return BulkResult(action=request.action.value, affected=affected)


ROUTES = [
    Route(
        "GET",
        "/contacts",
        list_contacts,
        "Search and list contacts",
        "contacts",
        query=ContactListQuery,
        response=ContactPage,
        read_only=True,
    ),
    Route(
        "POST",
        "/contacts",
        create_contact,
        "Create a contact",
        "contacts",
        body=ContactCreate,
        response=ContactOut,
        status=201,
        errors=(409,),
    ),
    Route(
        "GET",
        "/contacts/{contact_id}",
        get_contact,
        "One contact",
        "contacts",
        response=ContactOut,
        read_only=True,
    ),
    Route(
        "PATCH",
        "/contacts/{contact_id}",
        update_contact,
        "Change a contact; lists given (phones, emails) replace the stored ones",
        "contacts",
        body=ContactUpdate,
        response=ContactOut,
        errors=(409,),
    ),
    Route(
        "DELETE",
        "/contacts/{contact_id}",
        delete_contact,
        "Delete a contact with its notes and timeline",
        "contacts",
        status=204,
    ),
    Route(
        "POST",
        "/contacts/{contact_id}/tags",
        add_tags,
        "Add tags to a contact",
        "tags",
        body=TagsIn,
        response=ContactOut,
    ),
    Route(
        "POST",
        "/contacts/{contact_id}/tags/remove",
        remove_tags,
        "Remove tags from a contact",
        "tags",
        body=TagsIn,
        response=ContactOut,
    ),
    Route(
        "POST",
        "/contacts/merge",
        merge,
        "Merge contacts into a survivor; nothing is lost",
        "contacts",
        body=MergeIn,
        response=ContactOut,
        errors=(404,),
    ),
    Route(
        "POST",
        "/contacts/bulk",
        bulk,
        "Apply an action to a selection (ids or a filter) spanning any number of pages",
        "contacts",
        body=BulkRequest,
        response=BulkResult,
        errors=(403,),
    ),
]
