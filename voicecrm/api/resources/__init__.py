"""One module per API resource; `all_routes()` is the whole `/api/v1` table."""

from __future__ import annotations

from voicecrm.api.resources import (
    callers,
    contacts,
    csv_io,
    health,
    imports,
    notes,
    recordings,
    scenarios,
    stages,
    tags,
    team,
    timeline,
)
from voicecrm.api.routing import RouteTable


def all_routes() -> RouteTable:
    table = RouteTable()
    for module in (
        health,
        team,
        contacts,
        csv_io,
        imports,
        callers,
        notes,
        recordings,
        stages,
        tags,
        timeline,
        scenarios,
    ):
        table.extend(module.ROUTES)
    return table
