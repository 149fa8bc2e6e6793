"""The team over HTTP: its settings, users, API tokens (shown once) and contact sources."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from sqlalchemy import select

from tests.api.conftest import Api
from tests.conftest import TeamWorld
from voicecrm.accounts.models import ApiToken
from voicecrm.storage import Database

PROBLEM = "application/problem+json"


async def raw(api: Api, method: str, path: str, json: Any = None) -> tuple[int, str, Any]:
    response = await api.client.request(method, "/api/v1" + path, json=json, headers=api.headers())
    body = await response.json(content_type=None) if response.status != 204 else None
    return response.status, response.content_type, body


async def test_everyone_reads_the_team_and_only_admins_change_it(
    api: Api, agent_api: Api, world: TeamWorld
) -> None:
    expected = {
        "id": world.team_id,
        "name": "Acme",
        "default_region": "US",
        "timezone": "UTC",
        "allow_duplicate_phones": False,
        "agents_see_own_contacts_only": False,
    }
    assert await agent_api.get("/team") == (200, expected)
    status, changed = await api.patch(
        "/team", {"name": " Acme Ltd ", "default_region": "fr", "timezone": "Europe/Paris"}
    )
    assert (status, changed) == (
        200,
        {**expected, "name": "Acme Ltd", "default_region": "FR", "timezone": "Europe/Paris"},
    )
    status, media_type, problem = await raw(agent_api, "PATCH", "/team", {"name": "Mine"})
    assert (status, media_type, problem["detail"]) == (403, PROBLEM, "this action needs an admin")
    assert (await api.get("/team"))[1]["name"] == "Acme Ltd"


async def test_a_team_region_and_timezone_must_be_real(api: Api) -> None:
    for body, field in (
        ({"default_region": "XX"}, "default_region"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ):
        status, media_type, problem = await raw(api, "PATCH", "/team", body)
        assert (status, media_type, problem["field"]) == (422, PROBLEM, field)
    status, problem = await api.patch("/team", {"default_region": "USA"})
    assert (status, problem["errors"][0]["loc"]) == (422, ["body", "default_region"])


async def test_the_region_decides_how_new_national_numbers_are_read(api: Api) -> None:
    await api.patch("/team", {"default_region": "FR"})
    status, contact = await api.post(
        "/contacts", {"name": "Marie", "phones": [{"number": "06 12 34 56 78"}]}
    )
    assert status == 201
    assert contact["phones"][0] == {
        "e164": "+33612345678",
        "original": "06 12 34 56 78",
        "label": "mobile",
        "region": "FR",
    }


async def test_a_contacts_carrier_comes_from_its_first_number(api: Api) -> None:
    status, contact = await api.post(
        "/contacts",
        {
            "name": "Sam",
            "phones": [
                {"number": "+44 7912 345678", "label": "mobile"},
                {"number": "+14155550123"},
            ],
        },
    )
    assert (status, contact["carrier"]) == (201, "O2")
    assert [p["original"] for p in contact["phones"]] == ["+44 7912 345678", "+14155550123"]


async def test_changing_a_contacts_numbers_to_anothers_is_a_conflict(api: Api) -> None:
    _, first = await api.post("/contacts", {"name": "A", "phones": [{"number": "+14155550123"}]})
    _, second = await api.post("/contacts", {"name": "B", "phones": [{"number": "+14155550999"}]})
    status, media_type, problem = await raw(
        api,
        "PATCH",
        f"/contacts/{second['id']}",
        {"phones": [{"number": "+14155550777"}, {"number": "(415) 555-0123"}]},
    )
    assert (status, media_type) == (409, PROBLEM)
    assert (problem["contact_id"], problem["phone"]) == (first["id"], "+14155550123")
    _, unchanged = await api.get(f"/contacts/{second['id']}")
    assert [p["e164"] for p in unchanged["phones"]] == ["+14155550999"]


async def test_me_is_the_tokens_user(api: Api, agent_api: Api, world: TeamWorld) -> None:
    status, me = await agent_api.get("/me")
    assert status == 200
    assert (me["id"], me["role"], me["name"]) == (world.agent.user_id, "agent", "Al Agent")


async def test_admins_add_users_who_are_admins_or_agents(api: Api, agent_api: Api) -> None:
    status, user = await api.post("/users", {"email": " Bo@Example.com ", "name": "Bo"})
    assert status == 201, user
    assert (user["email"], user["name"], user["role"]) == ("bo@example.com", "Bo", "agent")
    status, _ = await api.post("/users", {"email": "cy@example.com", "role": "admin"})
    assert status == 201
    status, problem = await api.post("/users", {"email": "di@example.com", "role": "system"})
    assert (status, problem["errors"][0]["loc"]) == (422, ["body", "role"])
    status, problem = await api.post("/users", {"email": "BO@example.com"})
    assert status == 409 and "already exists" in problem["detail"]
    status, _ = await agent_api.post("/users", {"email": "ed@example.com"})
    assert status == 403
    _, users = await agent_api.get("/users")
    assert [u["email"].split("@")[0] for u in users["items"]][-2:] == ["bo", "cy"]
    assert len(users["items"]) == 4


async def test_a_token_is_shown_once_stored_hashed_and_works_at_once(
    api: Api, world: TeamWorld, database: Database
) -> None:
    status, issued = await api.post(f"/users/{world.agent.user_id}/tokens", {"name": "phone"})
    assert status == 201, issued
    secret = issued["token"]
    assert secret.startswith("vcrm_") and issued["prefix"] == secret[:12]
    status, listed = await api.get(f"/users/{world.agent.user_id}/tokens")
    assert status == 200
    assert secret not in str(listed)
    assert [t["name"] for t in listed["items"]] == ["default", "phone"]
    assert all("token" not in t for t in listed["items"])
    async with database.transaction(read_only=True) as session:
        hashes = set(await session.scalars(select(ApiToken.token_hash)))
    assert hashlib.sha256(secret.encode()).hexdigest() in hashes
    status, me = await api.as_(secret).get("/me")
    assert (status, me["id"]) == (200, world.agent.user_id)


async def test_a_revoked_token_is_refused_from_then_on(
    api: Api, agent_api: Api, world: TeamWorld
) -> None:
    _, issued = await agent_api.post(f"/users/{world.agent.user_id}/tokens", {"name": "temp"})
    assert (await api.as_(issued["token"]).get("/me"))[0] == 200
    assert (await agent_api.delete(f"/tokens/{issued['id']}"))[0] == 204
    response = await api.client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {issued['token']}"}
    )
    assert response.status == 401
    assert response.content_type == PROBLEM
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="voicecrm"'
    _, listed = await agent_api.get(f"/users/{world.agent.user_id}/tokens")
    assert [t["revoked_at"] is not None for t in listed["items"]] == [False, True]


async def test_agents_manage_only_their_own_tokens(
    api: Api, agent_api: Api, world: TeamWorld
) -> None:
    admin_id = world.admin.user_id
    assert (await agent_api.get(f"/users/{admin_id}/tokens"))[0] == 403
    assert (await agent_api.post(f"/users/{admin_id}/tokens", {"name": "x"}))[0] == 403
    _, admin_tokens = await api.get(f"/users/{admin_id}/tokens")
    assert (await agent_api.delete(f"/tokens/{admin_tokens['items'][0]['id']}"))[0] == 403
    assert (await api.get("/me"))[0] == 200
    assert (await api.get(f"/users/{world.agent.user_id}/tokens"))[0] == 200


async def test_sources_are_the_builtin_ones_plus_the_teams_own(api: Api, agent_api: Api) -> None:
    assert await agent_api.get("/sources") == (
        200,
        {"builtin": ["phone", "manual", "import", "web", "api"], "custom": []},
    )
    status, sources = await api.post("/sources", {"name": "trade show"})
    assert (status, sources["custom"]) == (201, ["trade show"])
    assert (await api.post("/sources", {"name": "trade show"}))[0] == 409
    status, problem = await api.post("/sources", {"name": "web"})
    assert (status, problem["detail"]) == (422, "'web' is a built-in source")
    assert (await agent_api.post("/sources", {"name": "mine"}))[0] == 403
    status, contact = await agent_api.post("/contacts", {"name": "Met", "source": "trade show"})
    assert (status, contact["source"]) == (201, "trade show")
    status, problem = await api.post("/contacts", {"name": "X", "source": "carrier pigeon"})
    assert (status, problem["field"]) == (422, "source")
    assert "unknown source 'carrier pigeon'" in problem["detail"]


async def test_concurrent_contacts_with_one_number_leave_it_on_one_contact(api: Api) -> None:
    """The unique index decides, on either engine, whichever request commits first."""
    forms = ["+14155550123", "(415) 555-0123", "415.555.0123", "14155550123", "4155550123"]
    results = await asyncio.gather(
        *(
            api.post("/contacts", {"name": f"Twin {i}", "phones": [{"number": form}]})
            for i, form in enumerate(forms)
        )
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 4
    (winner,) = [body for status, body in results if status == 201]
    assert all(body["contact_id"] == winner["id"] for status, body in results if status == 409)
    _, page = await api.get("/contacts")
    assert [c["id"] for c in page["items"]] == [winner["id"]]


async def test_a_team_may_allow_one_number_on_several_contacts(api: Api) -> None:
    _, first = await api.post("/contacts", {"name": "A", "phones": [{"number": "+14155550123"}]})
    assert (await api.post("/contacts", {"name": "B", "phones": [{"number": "4155550123"}]}))[
        0
    ] == 409
    assert (await api.patch("/team", {"allow_duplicate_phones": True}))[1][
        "allow_duplicate_phones"
    ] is True
    status, second = await api.post(
        "/contacts", {"name": "B", "phones": [{"number": "4155550123"}]}
    )
    assert status == 201
    _, page = await api.get("/contacts", phone="+14155550123", sort="name")
    assert [c["name"] for c in page["items"]] == ["A", "B"]
    status, media_type, problem = await raw(
        api, "PATCH", "/team", {"allow_duplicate_phones": False}
    )
    assert (status, media_type, problem["numbers"]) == (409, PROBLEM, 1)
    assert (await api.get("/team"))[1]["allow_duplicate_phones"] is True
    status, _ = await api.post(
        "/contacts/merge", {"survivor_id": first["id"], "merged_ids": [second["id"]]}
    )
    assert status == 200
    assert (await api.patch("/team", {"allow_duplicate_phones": False}))[0] == 200
    assert (await api.post("/contacts", {"name": "C", "phones": [{"number": "4155550123"}]}))[
        0
    ] == 409
