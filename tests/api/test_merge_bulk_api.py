"""Merge and bulk actions over HTTP: what they change, what they refuse, and how they say it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.api.conftest import Api
from tests.conftest import TeamWorld
from voicecrm.crm.merge import merge_contacts
from voicecrm.storage import Database

PROBLEM = "application/problem+json"


async def raw(api: Api, method: str, path: str, json: Any = None) -> tuple[int, str, Any]:
    response = await api.client.request(method, "/api/v1" + path, json=json, headers=api.headers())
    return response.status, response.content_type, await response.json(content_type=None)


async def create(api: Api, name: str, **fields: Any) -> dict[str, Any]:
    status, body = await api.post("/contacts", {"name": name, **fields})
    assert status == 201, body
    return dict(body)


async def names(api: Api, **params: Any) -> list[str]:
    status, page = await api.get("/contacts", sort="name", limit="500", **params)
    assert status == 200, page
    return [c["name"] for c in page["items"]]


async def test_a_merge_returns_the_survivor_with_everything_and_records_itself(
    api: Api, agent_api: Api, world: TeamWorld
) -> None:
    jane = await create(api, "Jane Roe", phones=[{"number": "+14155550123"}], tags=["vip"])
    dup = await create(
        api,
        "J Roe",
        phones=[{"number": "+14155550999", "label": "home"}],
        emails=[{"email": "jane@roe.example"}],
        tags=["lead"],
        company="Roe Co",
    )
    await api.post(f"/contacts/{dup['id']}/notes", {"content": "from the duplicate"})
    status, merged = await agent_api.post(
        "/contacts/merge", {"survivor_id": jane["id"], "merged_ids": [dup["id"]]}
    )
    assert status == 200, merged
    assert (merged["id"], merged["name"], merged["company"]) == (jane["id"], "Jane Roe", "Roe Co")
    assert [p["e164"] for p in merged["phones"]] == ["+14155550123", "+14155550999"]
    assert [e["email"] for e in merged["emails"]] == ["jane@roe.example"]
    assert merged["tags"] == ["lead", "vip"]
    assert (await api.get(f"/contacts/{dup['id']}"))[0] == 404
    _, notes = await api.get(f"/contacts/{jane['id']}/notes")
    assert [n["content"] for n in notes["items"]] == ["from the duplicate"]
    _, history = await api.get(f"/contacts/{jane['id']}/timeline")
    kinds = [e["kind"] for e in history["items"]]
    assert kinds[0] == "merged" and kinds.count("contact_created") == 2
    assert history["items"][0]["actor_user_id"] == world.agent.user_id
    assert history["items"][0]["data"]["merged_names"] == ["J Roe"]
    _, found = await api.get("/contacts", phone="415 555 0999")
    assert [c["id"] for c in found["items"]] == [jane["id"]]


async def test_a_merge_request_must_name_real_contacts(api: Api) -> None:
    jane = await create(api, "Jane")
    cases = [
        ({"survivor_id": jane["id"], "merged_ids": []}, 422, ["body", "merged_ids"]),
        ({"survivor_id": jane["id"], "merged_ids": [jane["id"]]}, 422, None),
        ({"survivor_id": 0, "merged_ids": [jane["id"]]}, 422, ["body", "survivor_id"]),
        ({"survivor_id": jane["id"], "merged_ids": [2**63]}, 422, ["body", "merged_ids", 0]),
        ({"survivor_id": 2**63, "merged_ids": [jane["id"]]}, 422, ["body", "survivor_id"]),
        (
            {"survivor_id": jane["id"], "merged_ids": list(range(1, 102))},
            422,
            ["body", "merged_ids"],
        ),
        ({"survivor_id": jane["id"], "merged_ids": [999_999]}, 404, None),
        ({"survivor_id": 999_999, "merged_ids": [jane["id"]]}, 404, None),
    ]
    for body, expected, loc in cases:
        status, media_type, problem = await raw(api, "POST", "/contacts/merge", body)
        assert (status, media_type) == (expected, PROBLEM), body
        if loc is not None:
            assert problem["errors"][0]["loc"] == loc, body
    assert await names(api) == ["Jane"]


async def test_tags_one_contact_at_a_time_and_the_tag_cloud(api: Api) -> None:
    jane = await create(api, "Jane")
    await create(api, "John", tags=["lead"])
    status, tagged = await api.post(f"/contacts/{jane['id']}/tags", {"tags": ["VIP", "lead"]})
    assert (status, tagged["tags"]) == (200, ["lead", "vip"])
    status, untagged = await api.post(f"/contacts/{jane['id']}/tags/remove", {"tags": ["vip"]})
    assert (status, untagged["tags"]) == (200, ["lead"])
    assert await api.get("/tags") == (200, {"items": [{"tag": "lead", "count": 2}]})
    assert await names(api, tag="LEAD") == ["Jane", "John"]
    status, problem = await api.post(f"/contacts/{jane['id']}/tags", {"tags": []})
    assert (status, problem["errors"][0]["loc"]) == (422, ["body", "tags"])
    _, history = await api.get(f"/contacts/{jane['id']}/timeline", kind="tags_changed")
    assert [e["data"] for e in history["items"]] == [
        {"added": [], "removed": ["vip"]},
        {"added": ["lead", "vip"], "removed": []},
    ]


async def test_bulk_over_a_filter_changes_every_page_of_matches(api: Api) -> None:
    for i in range(12):
        await create(api, f"Lead {i:02d}", tags=["lead"])
    await create(api, "Customer")
    status, result = await api.post(
        "/contacts/bulk",
        {"action": "tag", "tags": ["Spring Campaign"], "selection": {"filter": {"tag": "lead"}}},
    )
    assert (status, result) == (200, {"action": "tag", "affected": 12})
    assert len(await names(api, tag="spring campaign")) == 12
    _, page = await api.get("/contacts", tag="lead", limit="5")
    assert page["next_cursor"] is not None  # the selection spanned several pages
    status, result = await api.post(
        "/contacts/bulk",
        {"action": "set_status", "status": "lost", "selection": {"filter": {"q": "lead 0"}}},
    )
    assert result == {"action": "set_status", "affected": 10}
    assert await names(api, status="lost") == [f"Lead {i:02d}" for i in range(10)]


async def test_bulk_over_explicit_ids_and_its_records(api: Api, world: TeamWorld) -> None:
    _, stage = await api.post("/stages", {"name": "Qualified"})
    ids = [(await create(api, f"C{i}"))["id"] for i in range(3)]
    for request, affected in (
        ({"action": "set_stage", "stage_id": stage["id"]}, 3),
        ({"action": "set_responsible", "user_id": world.agent.user_id}, 3),
        ({"action": "untag", "tags": ["nothing"]}, 0),
        ({"action": "delete"}, 3),
    ):
        status, result = await api.post("/contacts/bulk", {**request, "selection": {"ids": ids}})
        assert (status, result["affected"]) == (200, affected), request
        if request["action"] == "set_responsible":
            _, history = await api.get(f"/contacts/{ids[0]}/timeline")
            assert [e["kind"] for e in history["items"]][:2] == ["contact_updated", "stage_changed"]
    assert await names(api) == []


async def test_an_agent_may_not_delete_in_bulk(api: Api, agent_api: Api) -> None:
    kept = await create(api, "Kept")
    status, media_type, problem = await raw(
        agent_api,
        "POST",
        "/contacts/bulk",
        {"action": "delete", "selection": {"ids": [kept["id"]]}},
    )
    assert (status, media_type, problem["detail"]) == (403, PROBLEM, "this action needs an admin")
    assert await names(api) == ["Kept"]


async def test_a_bulk_request_that_does_not_say_what_to_do_is_refused(api: Api) -> None:
    await create(api, "Kept")
    for body in (
        {"action": "tag", "selection": {"ids": [1]}},
        {"action": "tag", "tags": ["x"], "selection": {}},
        {"action": "tag", "tags": ["x"], "selection": {"ids": [1], "filter": {}}},
        {"action": "set_status", "selection": {"filter": {}}},
        {"action": "explode", "selection": {"filter": {}}},
        {"action": "delete", "selection": {"filter": {"stage_id": 2**63}}},
        {"action": "delete", "selection": {"ids": [2**63]}},
    ):
        status, media_type, problem = await raw(api, "POST", "/contacts/bulk", body)
        assert (status, media_type, problem["title"]) == (422, PROBLEM, "Invalid input"), body
    assert await names(api) == ["Kept"]


async def test_one_tag_added_by_many_requests_at_once_is_added_once(api: Api) -> None:
    jane = await create(api, "Jane")
    results = await asyncio.gather(
        *(api.post(f"/contacts/{jane['id']}/tags", {"tags": ["vip"]}) for _ in range(6))
    )
    assert [status for status, _ in results] == [200] * 6
    assert all(body["tags"] == ["vip"] for _, body in results)
    _, history = await api.get(f"/contacts/{jane['id']}/timeline", kind="tags_changed")
    assert [e["data"] for e in history["items"]] == [{"added": ["vip"], "removed": []}]
    results = await asyncio.gather(
        *(api.post(f"/contacts/{jane['id']}/tags/remove", {"tags": ["vip"]}) for _ in range(6))
    )
    assert [status for status, _ in results] == [200] * 6
    _, history = await api.get(f"/contacts/{jane['id']}/timeline", kind="tags_changed")
    assert [e["data"]["removed"] for e in history["items"]] == [["vip"], []]


async def test_tags_for_a_contact_being_merged_away_are_refused_not_lost(
    api: Api, database: Database, world: TeamWorld, until_blocked: Callable[[], Awaitable[None]]
) -> None:
    survivor = await create(api, "Survivor")
    doomed = await create(api, "Doomed", tags=["old"])
    async with database.transaction() as merging:
        await merge_contacts(merging, world.admin, survivor["id"], [doomed["id"]])
        racing = asyncio.create_task(api.post(f"/contacts/{doomed['id']}/tags", {"tags": ["late"]}))
        await until_blocked()
    status, problem = await racing
    assert (status, problem["detail"]) == (404, f"contact {doomed['id']} does not exist")
    assert (await api.get(f"/contacts/{survivor['id']}"))[1]["tags"] == ["old"]


async def test_bulk_racing_a_merge_skips_the_merged_contact_and_fails_nothing(
    api: Api, database: Database, world: TeamWorld, until_blocked: Callable[[], Awaitable[None]]
) -> None:
    survivor = await create(api, "Survivor")
    doomed = await create(api, "Doomed")
    async with database.transaction() as merging:
        await merge_contacts(merging, world.admin, survivor["id"], [doomed["id"]])
        racing = asyncio.create_task(
            api.post(
                "/contacts/bulk",
                {
                    "action": "set_status",
                    "status": "won",
                    "selection": {"ids": [survivor["id"], doomed["id"]]},
                },
            )
        )
        await until_blocked()
    status, result = await racing
    assert (status, result) == (200, {"action": "set_status", "affected": 1})
    assert (await api.get(f"/contacts/{survivor['id']}"))[1]["status"] == "won"
