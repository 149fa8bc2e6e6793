"""A team's pipeline stages: an ordered list of at most eight.

Every change first bumps the team row's `stages_version`. That UPDATE takes the
row's write lock (PostgreSQL) or the database write lock (SQLite), so two
instances adding a stage at once are serialised by the database and the
eight-stage limit cannot be overrun by a race.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.accounts.models import Team
from voicecrm.crm import timeline
from voicecrm.crm.models import Contact, Stage
from voicecrm.crm.schemas import MAX_STAGES
from voicecrm.errors import DuplicateName, InvalidInput, NotFound, StageLimitReached
from voicecrm.storage import MAX_ID


async def _lock_team_stages(session: AsyncSession, actor: Actor) -> None:
    await session.execute(
        update(Team).where(Team.id == actor.team_id).values(stages_version=Team.stages_version + 1)
    )


async def list_stages(session: AsyncSession, team_id: int) -> list[Stage]:
    return list(
        await session.scalars(
            select(Stage).where(Stage.team_id == team_id).order_by(Stage.position, Stage.id)
        )
    )


async def get_stage(
    session: AsyncSession, actor: Actor, stage_id: int, *, for_update: bool = False
) -> Stage:
    query = select(Stage).where(Stage.id == stage_id, Stage.team_id == actor.team_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    stage = (await session.scalars(query)).first() if 0 < stage_id <= MAX_ID else None
    if stage is None:
        raise NotFound(f"stage {stage_id} does not exist")
    return stage


async def _flush_name(session: AsyncSession, name: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as err:
        raise DuplicateName(f"a stage named {name!r} already exists", field="name") from err


async def add_stage(session: AsyncSession, actor: Actor, name: str) -> Stage:
    actor.require_admin()
    await _lock_team_stages(session, actor)
    count = await session.scalar(select(func.count()).where(Stage.team_id == actor.team_id))
    if (count or 0) >= MAX_STAGES:
        raise StageLimitReached(
            f"a team has at most {MAX_STAGES} stages; remove one before adding {name!r}",
            limit=MAX_STAGES,
        )
    stage = Stage(team_id=actor.team_id, name=name, position=count or 0)
    session.add(stage)
    await _flush_name(session, name)
    return stage


async def rename_stage(session: AsyncSession, actor: Actor, stage_id: int, name: str) -> Stage:
    actor.require_admin()
    await _lock_team_stages(session, actor)
    stage = await get_stage(session, actor, stage_id)
    stage.name = name
    await _flush_name(session, name)
    return stage


async def reorder_stages(
    session: AsyncSession, actor: Actor, ordered_ids: Sequence[int]
) -> list[Stage]:
    """Set the order; the list must name every stage of the team exactly once."""
    actor.require_admin()
    await _lock_team_stages(session, actor)
    stages = await list_stages(session, actor.team_id)
    if sorted(ordered_ids) != sorted(s.id for s in stages) or len(set(ordered_ids)) != len(
        ordered_ids
    ):
        raise InvalidInput(
            "the new order must list every stage of the team exactly once", field="stage_ids"
        )
    by_id = {s.id: s for s in stages}
    for position, stage_id in enumerate(ordered_ids):
        by_id[stage_id].position = position
    await session.flush()
    return await list_stages(session, actor.team_id)


async def _record_removal(session: AsyncSession, actor: Actor, stage: Stage) -> None:
    """Contacts on a removed stage lose it; each of them gets a timeline entry saying so."""
    contact_ids = list(
        await session.scalars(
            select(Contact.id).where(Contact.team_id == actor.team_id, Contact.stage_id == stage.id)
        )
    )
    rows = [
        timeline.event_row(
            actor,
            cid,
            "stage_changed",
            timeline.StageChanged(
                from_stage_id=stage.id,
                from_stage=stage.name,
                to_stage_id=None,
                to_stage=None,
                reason="stage removed",
            ),
        )
        for cid in contact_ids
    ]
    await timeline.append_many(session, rows)
    await session.execute(
        update(Contact)
        .where(Contact.team_id == actor.team_id, Contact.stage_id == stage.id)
        .values(stage_id=None)
    )


async def remove_stage(session: AsyncSession, actor: Actor, stage_id: int) -> None:
    actor.require_admin()
    await _lock_team_stages(session, actor)
    # Locked before its contacts are read: a contact being moved onto it (which holds a
    # share lock, see `contacts.check_stage`) commits first and is then seen and recorded.
    stage = await get_stage(session, actor, stage_id, for_update=True)
    await _record_removal(session, actor, stage)
    await session.delete(stage)
    await session.flush()
    for position, remaining in enumerate(await list_stages(session, actor.team_id)):
        remaining.position = position


async def remove_all_stages(session: AsyncSession, actor: Actor) -> int:
    actor.require_admin()
    await _lock_team_stages(session, actor)
    stages = list(
        await session.scalars(
            select(Stage)
            .where(Stage.team_id == actor.team_id)
            .order_by(Stage.id)
            .with_for_update()  # as in `remove_stage`
            .execution_options(populate_existing=True)
        )
    )
    for stage in stages:
        await _record_removal(session, actor, stage)
        await session.delete(stage)
    await session.flush()
    return len(stages)
