"""Tasks: things a user must do about a contact, such as calling back someone who asked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.accounts.service import find_user_by_email
from voicecrm.crm import timeline
from voicecrm.crm.call_log import TaskCreated
from voicecrm.crm.contacts import get_contact
from voicecrm.crm.models import Task
from voicecrm.errors import InvalidInput, NotFound
from voicecrm.storage import utcnow


async def create_task(
    session: AsyncSession,
    actor: Actor,
    contact_id: int,
    *,
    title: str,
    due_at: datetime,
    description: str | None = None,
    assignee_email: str | None = None,
    call_id: int | None = None,
) -> Task:
    """A task for the named user, or for the contact's responsible user when none is named."""
    contact = await get_contact(session, actor, contact_id)
    title = " ".join(title.split())[:300]
    if not title:
        raise InvalidInput("a task needs a title", field="title")
    assignee = contact.responsible_user_id
    if assignee_email:
        try:
            user = await find_user_by_email(session, assignee_email)
        except NotFound:
            raise InvalidInput(f"no user has email {assignee_email!r}", field="assign_to") from None
        if user.team_id != actor.team_id:
            raise InvalidInput(f"no user has email {assignee_email!r}", field="assign_to")
        assignee = user.id
    task = Task(
        team_id=actor.team_id,
        contact_id=contact.id,
        assignee_user_id=assignee,
        call_id=call_id,
        title=title,
        description=description,
        status="open",
        due_at=due_at,
        created_at=utcnow(),
    )
    session.add(task)
    await session.flush()
    await timeline.append(
        session,
        actor,
        contact.id,
        "task_created",
        TaskCreated(task_id=task.id, title=title, due_at=due_at, assignee_user_id=assignee),
    )
    return task
