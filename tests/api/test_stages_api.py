"""Stages over HTTP: list, add, rename, reorder, remove one or all; a ninth is a 409 problem."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api.conftest import Api

PROBLEM = "application/problem+json"


async def raw(api: Api, method: str, path: str, json: Any = None) -> tuple[int, str, Any]:
    """Status, media type and body, for asserting on problem documents."""
    response = await api.client.request(method, "/api/v1" + path, json=json, headers=api.headers())
    body = await response.json(content_type=None) if response.status != 204 else None
    return response.status, response.content_type, body


async def add(api: Api, *names: str) -> list[int]:
    ids = []
    for name in names:
        status, stage = await api.post("/stages", {"name": name})
        assert status == 201, stage
        ids.append(stage["id"])
    return ids


async def test_stages_are_listed_in_order_with_the_limit(api: Api, agent_api: Api) -> None:
    assert await api.get("/stages") == (200, {"items": [], "limit": 8})
    first, second = await add(api, " New ", "Qualified")
    status, listed = await agent_api.get("/stages")
    assert status == 200
    assert listed == {
        "items": [
            {"id": first, "name": "New", "position": 0},
            {"id": second, "name": "Qualified", "position": 1},
        ],
        "limit": 8,
    }


async def test_a_ninth_stage_is_a_conflict_explained_as_problem_json(api: Api) -> None:
    await add(api, *(f"Stage {i}" for i in range(8)))
    status, media_type, problem = await raw(api, "POST", "/stages", {"name": "Ninth"})
    assert (status, media_type) == (409, PROBLEM)
    assert problem == {
        "type": "about:blank",
        "title": "Stage limit reached",
        "status": 409,
        "detail": "a team has at most 8 stages; remove one before adding 'Ninth'",
        "limit": 8,
    }
    assert len((await api.get("/stages"))[1]["items"]) == 8


async def test_nine_concurrent_requests_make_exactly_eight_stages(api: Api) -> None:
    results = await asyncio.gather(*(api.post("/stages", {"name": f"S{i}"}) for i in range(9)))
    assert sorted(status for status, _ in results) == [201] * 8 + [409]
    _, listed = await api.get("/stages")
    assert sorted(s["position"] for s in listed["items"]) == list(range(8))


async def test_a_stage_name_is_used_once(api: Api) -> None:
    await add(api, "New")
    status, media_type, problem = await raw(api, "POST", "/stages", {"name": "New"})
    assert (status, media_type, problem["title"]) == (409, PROBLEM, "Name already taken")
    assert problem["field"] == "name"


async def test_a_stage_name_must_be_one_to_a_hundred_characters(api: Api) -> None:
    for body in (
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {},
        {"name": 3},
        {"name": "ok", "colour": "red"},
    ):
        status, media_type, problem = await raw(api, "POST", "/stages", body)
        assert (status, media_type) == (422, PROBLEM), body
        assert problem["errors"][0]["loc"][0] == "body"


async def test_rename_and_reorder(api: Api) -> None:
    a, b, c = await add(api, "A", "B", "C")
    status, renamed = await api.patch(f"/stages/{b}", {"name": "Bee"})
    assert (status, renamed) == (200, {"id": b, "name": "Bee", "position": 1})
    status, ordered = await api.put("/stages/order", {"stage_ids": [c, a, b]})
    assert status == 200
    assert [(s["name"], s["position"]) for s in ordered["items"]] == [
        ("C", 0),
        ("A", 1),
        ("Bee", 2),
    ]
    status, problem = await api.put("/stages/order", {"stage_ids": [c, a]})
    assert (status, problem["field"]) == (422, "stage_ids")
    status, problem = await api.patch(f"/stages/{a}", {"name": "C"})
    assert status == 409


async def test_removing_a_stage_records_it_on_its_contacts_timelines(api: Api) -> None:
    doomed, kept = await add(api, "Doomed", "Kept")
    _, contact = await api.post("/contacts", {"name": "Jane", "stage_id": doomed})
    assert (await api.delete(f"/stages/{doomed}"))[0] == 204
    _, listed = await api.get("/stages")
    assert listed["items"] == [{"id": kept, "name": "Kept", "position": 0}]
    _, again = await api.get(f"/contacts/{contact['id']}")
    assert again["stage_id"] is None
    _, history = await api.get(f"/contacts/{contact['id']}/timeline", kind="stage_changed")
    assert [e["data"] for e in history["items"]] == [
        {
            "from_stage_id": doomed,
            "from_stage": "Doomed",
            "to_stage_id": None,
            "to_stage": None,
            "reason": "stage removed",
        }
    ]


async def test_removing_every_stage_reports_how_many(api: Api) -> None:
    first, _ = await add(api, "One", "Two")
    _, contact = await api.post("/contacts", {"name": "Jane", "stage_id": first})
    assert await api.delete("/stages") == (200, {"removed": 2})
    assert (await api.get("/stages"))[1]["items"] == []
    _, history = await api.get(f"/contacts/{contact['id']}/timeline", kind="stage_changed")
    assert [e["data"]["from_stage"] for e in history["items"]] == ["One"]
    assert await api.delete("/stages") == (200, {"removed": 0})


async def test_moving_a_contact_between_stages_is_on_its_timeline(api: Api, agent_api: Api) -> None:
    new, won = await add(api, "New", "Won")
    _, contact = await agent_api.post("/contacts", {"name": "Jane", "stage_id": new})
    status, moved = await agent_api.patch(f"/contacts/{contact['id']}", {"stage_id": won})
    assert (status, moved["stage_id"]) == (200, won)
    status, cleared = await agent_api.patch(f"/contacts/{contact['id']}", {"clear_stage": True})
    assert (status, cleared["stage_id"]) == (200, None)
    _, history = await agent_api.get(f"/contacts/{contact['id']}/timeline", kind="stage_changed")
    assert [(e["data"]["from_stage"], e["data"]["to_stage"]) for e in history["items"]] == [
        ("Won", None),
        ("New", "Won"),
    ]
    status, problem = await agent_api.patch(f"/contacts/{contact['id']}", {"stage_id": 999_999})
    assert (status, problem["field"]) == (422, "stage_id")


async def test_agents_read_the_stages_but_only_admins_change_them(api: Api, agent_api: Api) -> None:
    (stage,) = await add(api, "New")
    for method, path, body in (
        ("POST", "/stages", {"name": "Mine"}),
        ("PATCH", f"/stages/{stage}", {"name": "Mine"}),
        ("PUT", "/stages/order", {"stage_ids": [stage]}),
        ("DELETE", f"/stages/{stage}", None),
        ("DELETE", "/stages", None),
    ):
        status, media_type, problem = await raw(agent_api, method, path, body)
        assert (status, media_type, problem["title"]) == (403, PROBLEM, "Permission denied"), path
    assert (await agent_api.get("/stages"))[1]["items"] == [
        {"id": stage, "name": "New", "position": 0}
    ]


async def test_an_unknown_stage_is_a_404(api: Api) -> None:
    for method, path, body in (
        ("PATCH", "/stages/999999", {"name": "X"}),
        ("DELETE", "/stages/999999", None),
        ("DELETE", "/stages/0", None),
        ("DELETE", "/stages/abc", None),
        ("DELETE", "/stages/\u00b2", None),
        ("DELETE", f"/stages/{2**63}", None),
    ):
        status, media_type, problem = await raw(api, method, path, body)
        assert (status, media_type, problem["status"]) == (404, PROBLEM, 404), path
