"""Steps that write to the CRM: notes, stage, status, tags, contact fields, tasks.

Each write is committed at once, so it is on the contact's timeline while the
call is still going.
"""

from __future__ import annotations

from voicecrm.scenarios import models as m
from voicecrm.scenarios.engine import NEXT, Engine


async def create_crm_note(engine: Engine, name: str, step: m.CreateNoteStep) -> str:
    args = step.create_crm_note
    if not isinstance(args, m.NoteArgs):
        args = m.NoteArgs(content=args)
    content = (await engine.render_now(args.content)).strip()
    if content:
        await engine.crm.add_note(await engine.contact_id(), content, args.type.value, args.pinned)
        engine.contact_changed()
    return NEXT


async def set_stage(engine: Engine, name: str, step: m.SetStageStep) -> str:
    stage = await engine.render_now(step.set_stage) if step.set_stage else None
    await engine.crm.set_stage(await engine.contact_id(), stage or None)
    engine.contact_changed()
    return NEXT


async def set_status(engine: Engine, name: str, step: m.SetStatusStep) -> str:
    await engine.crm.set_status(await engine.contact_id(), step.set_status)
    engine.contact_changed()
    return NEXT


def _tags(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


async def add_tag(engine: Engine, name: str, step: m.AddTagStep) -> str:
    tags = [await engine.render_now(t) for t in _tags(step.add_tag)]
    await engine.crm.change_tags(await engine.contact_id(), tags, [])
    engine.contact_changed()
    return NEXT


async def remove_tag(engine: Engine, name: str, step: m.RemoveTagStep) -> str:
    tags = [await engine.render_now(t) for t in _tags(step.remove_tag)]
    await engine.crm.change_tags(await engine.contact_id(), [], tags)
    engine.contact_changed()
    return NEXT


async def update_contact(engine: Engine, name: str, step: m.UpdateContactStep) -> str:
    u = step.update_contact
    await engine.crm.update_contact(
        await engine.contact_id(),
        name=await engine.render_now(u.name) if u.name else None,
        company=await engine.render_now(u.company) if u.company else None,
        email=await engine.render_now(u.email) if u.email else None,
        custom_fields={k: await engine.render_now(v) for k, v in u.custom_fields.items()},
    )
    engine.contact_changed()
    return NEXT


async def create_task(engine: Engine, name: str, step: m.CreateTaskStep) -> str:
    t = step.create_task
    await engine.crm.create_task(
        await engine.contact_id(),
        title=await engine.render_now(t.title),
        description=await engine.render_now(t.description) if t.description else None,
        due_in_minutes=t.due_in_minutes,
        assign_to=t.assign_to,
        call_id=engine.state.call_id,
    )
    engine.contact_changed()
    return NEXT
