"""Who reaches what over HTTP, and how the edge answers everything else.

A token of one team can never read or change another team's data; agents are refused
admin routes; a team can show agents only their own contacts; every refusal is
problem+json; bodies above the configured limit are refused; health says when the
database is gone.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp import web

from tests.api.conftest import Api, ClientFactory
from tests.conftest import TeamWorld, make_team
from voicecrm.api.problems import problem_middleware
from voicecrm.api.resources import all_routes
from voicecrm.api.server import API_PREFIX, DATABASE, build_api
from voicecrm.app import build_app
from voicecrm.config import Settings
from voicecrm.storage import Database

PROBLEM = "application/problem+json"


async def raw(api: Api, method: str, path: str, json: Any = None) -> tuple[int, str, Any]:
    response = await api.client.request(method, "/api/v1" + path, json=json, headers=api.headers())
    if response.status == 204:
        return 204, "", None
    return response.status, response.content_type, await response.json(content_type=None)


class TheirWorld:
    """Another team with one of everything, to aim this team's tokens at."""

    def __init__(self, world: TeamWorld, ids: dict[str, int]) -> None:
        self.world = world
        self.ids = ids


@pytest.fixture
async def theirs(api: Api, database: Database) -> TheirWorld:
    other = await make_team(database, "Other")
    them = api.as_(other.admin_token)
    _, stage = await them.post("/stages", {"name": "Their stage"})
    _, contact = await them.post(
        "/contacts",
        {
            "name": "Their contact",
            "phones": [{"number": "+14155550123"}],
            "emails": [{"email": "their@example.com"}],
            "tags": ["theirs"],
            "stage_id": stage["id"],
        },
    )
    _, spare = await them.post("/contacts", {"name": "Their spare"})
    _, note = await them.post(f"/contacts/{contact['id']}/notes", {"content": "private"})
    _, tokens = await them.get(f"/users/{other.agent.user_id}/tokens")
    return TheirWorld(
        other,
        {
            "contact_id": contact["id"],
            "spare_id": spare["id"],
            "note_id": note["id"],
            "stage_id": stage["id"],
            "user_id": other.agent.user_id or 0,
            "token_id": tokens["items"][0]["id"],
        },
    )


async def their_state(api: Api, theirs: TheirWorld) -> Any:
    them = api.as_(theirs.world.admin_token)
    contact_id = theirs.ids["contact_id"]
    return [
        await them.get(f"/contacts/{contact_id}"),
        await them.get("/contacts"),
        await them.get(f"/contacts/{contact_id}/notes"),
        await them.get("/stages"),
        await them.get(f"/users/{theirs.ids['user_id']}/tokens"),
        await them.get("/team"),
        await them.get(f"/contacts/{contact_id}/timeline"),
    ]


async def test_a_token_never_reads_or_changes_another_teams_data(
    api: Api, theirs: TheirWorld
) -> None:
    before = await their_state(api, theirs)
    ids = theirs.ids
    c, n, s, u, t = (
        ids["contact_id"],
        ids["note_id"],
        ids["stage_id"],
        ids["user_id"],
        ids["token_id"],
    )
    not_found = [
        ("GET", f"/contacts/{c}", None),
        ("PATCH", f"/contacts/{c}", {"name": "Mine now"}),
        ("DELETE", f"/contacts/{c}", None),
        ("POST", f"/contacts/{c}/tags", {"tags": ["x"]}),
        ("POST", f"/contacts/{c}/tags/remove", {"tags": ["theirs"]}),
        ("GET", f"/contacts/{c}/notes", None),
        ("POST", f"/contacts/{c}/notes", {"content": "x"}),
        ("GET", f"/contacts/{c}/timeline", None),
        ("GET", f"/notes/{n}", None),
        ("PATCH", f"/notes/{n}", {"content": "x"}),
        ("DELETE", f"/notes/{n}", None),
        ("PATCH", f"/stages/{s}", {"name": "x"}),
        ("DELETE", f"/stages/{s}", None),
        ("GET", f"/users/{u}/tokens", None),
        ("POST", f"/users/{u}/tokens", {"name": "x"}),
        ("DELETE", f"/tokens/{t}", None),
        ("POST", "/contacts/merge", {"survivor_id": c, "merged_ids": [ids["spare_id"]]}),
    ]
    for method, path, body in not_found:
        status, media_type, problem = await raw(api, method, path, body)
        assert (status, media_type, problem["status"]) == (404, PROBLEM, 404), (method, path)
    _, mine = await api.post("/contacts", {"name": "Mine"})
    refused = [
        ("POST", "/contacts/merge", {"survivor_id": mine["id"], "merged_ids": [c]}, 404),
        ("PATCH", f"/contacts/{mine['id']}", {"stage_id": s}, 422),
        ("PATCH", f"/contacts/{mine['id']}", {"responsible_user_id": u}, 422),
        ("POST", "/contacts", {"name": "X", "stage_id": s}, 422),
        ("PUT", "/stages/order", {"stage_ids": [s]}, 422),
        (
            "POST",
            "/contacts/bulk",
            {"action": "set_stage", "stage_id": s, "selection": {"ids": [mine["id"]]}},
            422,
        ),
        (
            "POST",
            "/contacts/bulk",
            {"action": "set_responsible", "user_id": u, "selection": {"ids": [mine["id"]]}},
            422,
        ),
    ]
    for method, path, body, expected in refused:
        status, media_type, _ = await raw(api, method, path, body)
        assert (status, media_type) == (expected, PROBLEM), (method, path, body)
    for action in (
        {"action": "delete"},
        {"action": "tag", "tags": ["x"]},
        {"action": "set_status", "status": "lost"},
    ):
        selections: list[dict[str, Any]] = [{"ids": [c, ids["spare_id"]]}, {"filter": {}}]
        for selection in selections:
            status, result = await api.post("/contacts/bulk", {**action, "selection": selection})
            assert status == 200 and result["affected"] <= 1, (action, selection)
    assert await their_state(api, theirs) == before


async def test_nothing_of_another_team_shows_up_in_lists_or_searches(
    api: Api, theirs: TheirWorld
) -> None:
    await api.post("/contacts", {"name": "Mine", "tags": ["mine"]})
    for params in (
        {},
        {"q": "their"},
        {"phone": "+14155550123"},
        {"q": "4155550123"},
        {"email": "their@example.com"},
        {"tag": "theirs"},
        {"stage_id": str(theirs.ids["stage_id"])},
        {"responsible_user_id": str(theirs.ids["user_id"])},
    ):
        status, page = await api.get("/contacts", **params)
        assert status == 200
        assert [c["name"] for c in page["items"]] == ([] if params else ["Mine"]), params
    assert (await api.get("/tags"))[1] == {"items": [{"tag": "mine", "count": 1}]}
    assert (await api.get("/stages"))[1]["items"] == []
    _, users = await api.get("/users")
    assert theirs.ids["user_id"] not in [u["id"] for u in users["items"]]
    status, resolved = await api.post("/callers/resolve", {"number": "+14155550123"})
    assert (status, resolved["created"]) == (200, True)
    assert resolved["contact"]["id"] != theirs.ids["contact_id"]


async def test_a_team_can_show_agents_only_the_contacts_they_are_responsible_for(
    api: Api, agent_api: Api, world: TeamWorld
) -> None:
    _, mine = await api.post(
        "/contacts", {"name": "Mine", "tags": ["vip"], "responsible_user_id": world.agent.user_id}
    )
    _, not_mine = await api.post("/contacts", {"name": "Not mine", "tags": ["vip", "secret"]})

    def names(page: Any) -> list[str]:
        return [c["name"] for c in page["items"]]

    assert names((await agent_api.get("/contacts", sort="name"))[1]) == ["Mine", "Not mine"]

    assert (await api.patch("/team", {"agents_see_own_contacts_only": True}))[0] == 200
    assert names((await agent_api.get("/contacts", sort="name"))[1]) == ["Mine"]
    assert names((await api.get("/contacts", sort="name"))[1]) == ["Mine", "Not mine"]
    assert (await agent_api.get("/tags"))[1] == {"items": [{"tag": "vip", "count": 1}]}
    hidden = not_mine["id"]
    for method, path, body in (
        ("GET", f"/contacts/{hidden}", None),
        ("PATCH", f"/contacts/{hidden}", {"name": "x"}),
        ("GET", f"/contacts/{hidden}/notes", None),
        ("POST", f"/contacts/{hidden}/notes", {"content": "x"}),
        ("GET", f"/contacts/{hidden}/timeline", None),
        ("POST", f"/contacts/{hidden}/tags", {"tags": ["x"]}),
        ("POST", "/contacts/merge", {"survivor_id": mine["id"], "merged_ids": [hidden]}),
    ):
        assert (await agent_api.call(method, path, json=body))[0] == 404, (method, path)
    status, result = await agent_api.post(
        "/contacts/bulk", {"action": "set_status", "status": "won", "selection": {"filter": {}}}
    )
    assert (status, result["affected"]) == (200, 1)
    assert (await api.get(f"/contacts/{hidden}"))[1]["status"] == "open"
    status, created = await agent_api.post("/contacts", {"name": "Fresh lead"})
    assert (status, created["responsible_user_id"]) == (201, world.agent.user_id)
    assert names((await agent_api.get("/contacts", sort="name"))[1]) == ["Fresh lead", "Mine"]

    status, resolved = await agent_api.post("/callers/resolve", {"number": "+14155550777"})
    assert (status, resolved["created"]) == (200, True)
    assert resolved["contact"]["responsible_user_id"] == world.agent.user_id
    await api.patch(f"/contacts/{hidden}", {"phones": [{"number": "+14155550888"}]})
    status, media_type, _ = await raw(
        agent_api, "POST", "/callers/resolve", {"number": "+14155550888", "caller_name": "Peeker"}
    )
    assert (status, media_type) == (404, PROBLEM)
    assert (await api.get(f"/contacts/{hidden}"))[1]["caller_id_name"] is None

    assert (await api.patch("/team", {"agents_see_own_contacts_only": False}))[0] == 200
    assert len((await agent_api.get("/contacts"))[1]["items"]) == 4


def _concrete(path: str) -> str:
    return re.sub(r"\{\w+\}", "1", path)


async def test_every_route_but_health_and_the_document_needs_a_token(api: Api) -> None:
    anonymous = api.as_(None)
    routes = [r for r in all_routes().routes if r.auth]
    assert len(routes) > 25
    for route in routes:
        response = await api.client.request(
            route.method, API_PREFIX + _concrete(route.path), json={}
        )
        assert response.status == 401, (route.method, route.path)
        assert response.content_type == PROBLEM
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="voicecrm"'
    assert (await anonymous.get("/health"))[0] == 200
    assert (await anonymous.get("/openapi.json"))[0] == 200


async def test_agents_are_refused_every_admin_route_before_anything_happens(agent_api: Api) -> None:
    routes = [r for r in all_routes().routes if r.admin_only]
    assert {(r.method, r.path) for r in routes} >= {
        ("POST", "/stages"),
        ("PATCH", "/team"),
        ("POST", "/users"),
        ("DELETE", "/stages"),
    }
    for route in routes:
        body = {"name": "x", "stage_ids": [1], "email": "x@example.com"}
        accepted = {
            k: v for k, v in body.items() if route.body is not None and k in route.body.model_fields
        }
        status, media_type, problem = await raw(
            agent_api, route.method, _concrete(route.path), accepted if route.body else None
        )
        assert (status, media_type, problem["title"]) == (403, PROBLEM, "Permission denied"), (
            route.method,
            route.path,
        )


async def test_unknown_paths_and_methods_are_problems_too(api: Api) -> None:
    status, media_type, problem = await raw(api, "GET", "/nothing/here")
    assert (status, media_type, problem["title"]) == (404, PROBLEM, "Not Found")
    response = await api.client.request("PUT", "/api/v1/contacts", headers=api.headers())
    assert (response.status, response.content_type) == (405, PROBLEM)
    assert set(response.headers["Allow"].split(",")) >= {"GET", "POST"}


async def test_a_body_must_be_json_and_present(api: Api) -> None:
    headers = {**api.headers(), "Content-Type": "application/json"}
    cases = [
        (b"", headers, 400),
        (b"{not json", headers, 400),
        (b"\xff\xfe\x00", headers, 400),
        (b'{"name": "x"}', {**api.headers(), "Content-Type": "text/plain"}, 415),
        (b"[1, 2]", headers, 422),
        (b'{"name": "x", "rating": NaN}', headers, 400),
        (b"[" * 100_000 + b"]" * 100_000, headers, 400),
        (b"null", headers, 422),
    ]
    for data, sent_headers, expected in cases:
        response = await api.client.post("/api/v1/contacts", data=data, headers=sent_headers)
        assert (response.status, response.content_type) == (expected, PROBLEM), data
    assert (await api.get("/contacts"))[1]["items"] == []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param('{"name": "a\\u0000b"}', id="nul-in-a-name"),
        pytest.param('{"name": "x", "tags": ["a\\u0000"]}', id="nul-in-a-tag"),
        pytest.param('{"name": "\\ud800"}', id="lone-surrogate"),
        pytest.param('{"name": "x", "custom_fields": {"k\\u0000": "v"}}', id="nul-in-a-key"),
        pytest.param('{"name": "x", "custom_fields": {"k": NaN}}', id="not-a-number"),
        pytest.param('{"name": "x", "custom_fields": {"k": Infinity}}', id="infinity"),
    ],
)
async def test_text_no_database_can_store_is_refused_as_invalid_input(
    api: Api, payload: str
) -> None:
    """PostgreSQL refuses NUL characters and lone surrogates cannot be encoded, and JSON
    has no NaN: each would otherwise fail in the driver, a 500 on one engine only."""
    response = await api.client.post(
        "/api/v1/contacts",
        data=payload.encode(),
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    assert response.status in (400, 422), await response.text()
    assert response.content_type == PROBLEM
    assert (await api.get("/contacts"))[1]["items"] == []


@pytest.mark.parametrize("params", [{"q": "a\x00b"}, {"name": "\x00"}, {"cursor": "\x00"}])
async def test_query_text_no_database_can_store_is_refused(
    api: Api, params: dict[str, str]
) -> None:
    status, media_type, problem = await raw(
        api, "GET", "/contacts?" + "&".join(f"{k}=%00" for k in params)
    )
    assert (status, media_type, problem["status"]) == (422, PROBLEM, 422)


async def test_ids_no_database_can_hold_are_refused_as_invalid_input(
    api: Api, world: TeamWorld
) -> None:
    """Beyond a BIGINT the drivers refuse to bind a number: that must be a 422, not a 500."""
    _, mine = await api.post("/contacts", {"name": "Mine"})
    huge = 2**63
    for method, path, body, field in (
        ("POST", "/contacts", {"name": "X", "stage_id": huge}, "stage_id"),
        ("POST", "/contacts", {"name": "X", "responsible_user_id": huge}, "responsible_user_id"),
        ("PATCH", f"/contacts/{mine['id']}", {"stage_id": -1}, "stage_id"),
        ("PATCH", f"/contacts/{mine['id']}", {"responsible_user_id": huge}, "responsible_user_id"),
        (
            "POST",
            "/contacts/bulk",
            {"action": "set_stage", "stage_id": huge, "selection": {"ids": [mine["id"]]}},
            "stage_id",
        ),
        (
            "POST",
            "/contacts/bulk",
            {"action": "set_responsible", "user_id": huge, "selection": {"ids": [mine["id"]]}},
            "responsible_user_id",
        ),
    ):
        status, media_type, problem = await raw(api, method, path, body)
        assert (status, media_type, problem.get("field")) == (422, PROBLEM, field), (path, body)
    for params in ({"stage_id": str(huge)}, {"responsible_user_id": "-1"}):
        status, problem = await api.get("/contacts", **params)
        assert (status, problem["errors"][0]["loc"][0]) == (422, "query"), params
    assert (await api.get(f"/contacts/{mine['id']}"))[1]["stage_id"] is None


@pytest.mark.parametrize("letter", ["a", "\u00e9", "\u4e2d", "\U0001f600"])
async def test_every_page_is_reachable_whatever_the_names(api: Api, letter: str) -> None:
    """A name-sorted cursor carries the last name: at the longest name in any script it
    must still be a cursor the list accepts back."""
    for i in range(3):
        status, _ = await api.post("/contacts", {"name": f"{i}" + letter * 199})
        assert status == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"sort": "name", "limit": "1", **({"cursor": cursor} if cursor else {})}
        status, page = await api.get("/contacts", **params)
        assert status == 200, page
        seen += [c["name"][0] for c in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == ["0", "1", "2"]


async def test_bodies_above_the_configured_limit_are_refused(
    aiohttp_client: ClientFactory, database_url: str, world: TeamWorld
) -> None:
    settings = Settings(database_url=database_url, migrate_on_start=False, max_body_bytes=2048)
    client = await aiohttp_client(build_app(settings))
    headers = {"Authorization": f"Bearer {world.admin_token}"}
    small = {"name": "Small", "custom_fields": {f"k{i}": "v" * 100 for i in range(15)}}
    big = {
        "name": "Big",
        "company": "x" * 150,
        "custom_fields": {f"k{i}": "v" * 100 for i in range(30)},
    }
    assert len(json.dumps(small)) < 2048 < len(json.dumps(big))
    assert (await client.post("/api/v1/contacts", json=small, headers=headers)).status == 201
    response = await client.post("/api/v1/contacts", json=big, headers=headers)
    assert (response.status, response.content_type) == (413, PROBLEM)
    problem = await response.json(content_type=None)
    assert problem["detail"] == "the request body is larger than this endpoint accepts"


async def test_health_says_503_when_the_database_cannot_be_reached(
    aiohttp_client: ClientFactory,
) -> None:
    gone = Database("postgresql+asyncpg://nobody:nothing@127.0.0.1:1/nowhere")
    app = web.Application(middlewares=[problem_middleware])
    app[DATABASE] = gone
    app.add_subapp(API_PREFIX, build_api(all_routes(), max_body_bytes=1_048_576))
    try:
        client = await aiohttp_client(app)
        response = await client.get("/api/v1/health")
        assert (response.status, response.content_type) == (503, PROBLEM)
        problem = await response.json(content_type=None)
        assert problem["title"] == "Service Unavailable"
        assert "database" in problem["detail"]
    finally:
        await gone.close()


async def test_health_reports_the_engine_without_a_token(api: Api, database: Database) -> None:
    status, health = await api.as_(None).get("/health")
    assert (status, health["status"], health["database"]) == (200, "ok", database.dialect)
