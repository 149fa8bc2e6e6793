"""Who is acting, and the team settings every CRM rule needs to know.

An `Actor` is built once per request (from its token) or per call (for the
team that owns the dialled number) and passed to every domain function, so
that team scoping and access rules are applied in one place, not remembered
in each query.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from voicecrm.errors import PermissionDenied


class Role(StrEnum):
    ADMIN = "admin"
    AGENT = "agent"
    # The service itself: a call, the dialer, a migration. Sees everything of its team.
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class TeamSettings:
    id: int
    default_region: str = "US"
    timezone: str = "UTC"
    allow_duplicate_phones: bool = False
    agents_see_own_contacts_only: bool = False


@dataclass(frozen=True, slots=True)
class Actor:
    team: TeamSettings
    role: Role
    user_id: int | None = None

    @property
    def team_id(self) -> int:
        return self.team.id

    @property
    def is_admin(self) -> bool:
        return self.role in (Role.ADMIN, Role.SYSTEM)

    @property
    def sees_only_own_contacts(self) -> bool:
        return self.role is Role.AGENT and self.team.agents_see_own_contacts_only

    def require_admin(self) -> None:
        if not self.is_admin:
            raise PermissionDenied("this action needs an admin")

    @classmethod
    def system(cls, team: TeamSettings) -> Actor:
        return cls(team=team, role=Role.SYSTEM)
