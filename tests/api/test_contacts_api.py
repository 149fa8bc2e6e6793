"""Contacts over HTTP: create, read, change, search, delete, and clear refusals."""

from __future__ import annotations

import io

from tests.api.conftest import Api


async def test_create_and_read_a_contact(api: Api) -> None:
    status, body = await api.post(
        "/contacts",
        {
            "name": "Jane Roe",
            "company": "Roe & Co",
            "phones": [{"number": "(415) 555-0123", "label": "work"}],
            "emails": [{"email": "Jane@Example.com"}],
            "tags": ["VIP", "lead"],
            "rating": 2,
            "custom_fields": {"plan": "gold"},
        },
    )
    assert status == 201, body
    assert body["phones"] == [
        {"e164": "+14155550123", "original": "(415) 555-0123", "label": "work", "region": "US"}
    ]
    assert body["emails"] == [{"email": "jane@example.com", "label": "work"}]
    assert body["tags"] == ["lead", "vip"]
    assert body["source"] == "api"
    status, again = await api.get(f"/contacts/{body['id']}")
    assert status == 200 and again == body


async def test_an_invalid_phone_is_refused_with_a_problem(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/contacts", headers=api.headers(), json={"name": "X", "phones": [{"number": "12"}]}
    )
    assert response.status == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    problem = await response.json(content_type=None)
    assert problem["title"] == "Invalid phone number"
    assert "'12' is not a valid phone number" in problem["detail"]
    status, page = await api.get("/contacts")
    assert status == 200 and page["items"] == []  # nothing half-written


async def test_one_number_belongs_to_one_contact(api: Api) -> None:
    status, first = await api.post(
        "/contacts", {"name": "A", "phones": [{"number": "+14155550123"}]}
    )
    assert status == 201
    status, problem = await api.post(
        "/contacts", {"name": "B", "phones": [{"number": "415-555-0123"}]}
    )
    assert status == 409
    assert problem["contact_id"] == first["id"]
    assert "+14155550123 already belongs to contact" in problem["detail"]


async def test_duplicates_are_allowed_when_the_team_says_so(api: Api) -> None:
    await api.post("/contacts", {"name": "A", "phones": [{"number": "+14155550123"}]})
    status, _ = await api.patch("/team", {"allow_duplicate_phones": True})
    assert status == 200
    status, _ = await api.post("/contacts", {"name": "B", "phones": [{"number": "+14155550123"}]})
    assert status == 201
    status, problem = await api.patch("/team", {"allow_duplicate_phones": False})
    assert status == 409 and "merge those contacts" in problem["detail"]


async def test_patch_changes_only_what_it_names_and_records_it(api: Api) -> None:
    _, contact = await api.post("/contacts", {"name": "Jane", "company": "Acme"})
    status, body = await api.patch(
        f"/contacts/{contact['id']}", {"name": "Jane Roe", "status": "won"}
    )
    assert status == 200
    assert (body["name"], body["company"], body["status"]) == ("Jane Roe", "Acme", "won")
    _, reopened = await api.patch(f"/contacts/{contact['id']}", {"status": "open"})
    assert reopened["status"] == "open"
    _, timeline = await api.get(f"/contacts/{contact['id']}/timeline")
    kinds = [e["kind"] for e in timeline["items"]]
    assert kinds == ["status_changed", "status_changed", "contact_updated", "contact_created"]
    assert timeline["items"][0]["data"] == {"from_status": "won", "to_status": "open"}


async def test_search_finds_a_contact_by_any_form_of_its_number(api: Api) -> None:
    _, jane = await api.post(
        "/contacts", {"name": "Jane Roe", "phones": [{"number": "+14155550123"}]}
    )
    await api.post("/contacts", {"name": "John Doe", "phones": [{"number": "+14155550999"}]})
    for form in ["415 555 0123", "+1 (415) 555-0123", "14155550123", "0123"]:
        status, page = await api.get("/contacts", phone=form)
        assert status == 200, page
        assert [c["id"] for c in page["items"]] == [jane["id"]], form
    _, page = await api.get("/contacts", q="jane")
    assert [c["name"] for c in page["items"]] == ["Jane Roe"]


async def test_pages_walk_every_contact_once(api: Api) -> None:
    for i in range(7):
        await api.post("/contacts", {"name": f"Person {i}"})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", "sort": "name"}
        if cursor:
            params["cursor"] = cursor
        status, page = await api.get("/contacts", **params)
        assert status == 200
        seen += [c["name"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Person {i}" for i in range(7)]


async def test_a_forged_cursor_is_a_clear_error(api: Api) -> None:
    status, problem = await api.get("/contacts", cursor="bm9wZQ")
    assert status == 422 and problem["field"] == "cursor"


async def test_delete_removes_the_contact(api: Api) -> None:
    _, contact = await api.post("/contacts", {"name": "Gone"})
    assert (await api.delete(f"/contacts/{contact['id']}"))[0] == 204
    status, problem = await api.get(f"/contacts/{contact['id']}")
    assert status == 404 and problem["status"] == 404


async def test_bad_bodies_get_clear_4xx(api: Api) -> None:
    raw = await api.client.post(
        "/api/v1/contacts",
        data=b"{not json",
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    assert raw.status == 400
    assert (await raw.json(content_type=None))["detail"].startswith("the body is not valid JSON")
    status, problem = await api.post("/contacts", {"name": "X", "rating": 9})
    assert status == 422 and problem["errors"][0]["loc"] == ["body", "rating"]
    status, problem = await api.post("/contacts", {"nam": "typo"})
    assert status == 422 and "nam" in problem["detail"]
    big = {"name": "X", "custom_fields": {f"k{i}": "v" * 1000 for i in range(90)}}
    huge = await api.client.post(
        "/api/v1/contacts",
        headers={**api.headers(), "Content-Type": "application/json"},
        data=io.BytesIO(b'{"name": "' + b"x" * 2_000_000 + b'"}'),
    )
    assert huge.status == 413
    status, _ = await api.post("/contacts", big)
    assert status == 201
    text = await api.client.post("/api/v1/contacts", headers=api.headers(), data=b"name=x")
    assert text.status == 415


async def test_without_a_token_nothing_is_served(api: Api) -> None:
    for token in (None, "vcrm_wrong", "not-even-a-token"):
        status, problem = await api.as_(token).get("/contacts")
        assert status == 401, token
        assert problem["title"] == "Authentication required"


async def test_health_and_openapi_need_no_token(api: Api) -> None:
    status, health = await api.as_(None).get("/health")
    assert status == 200 and health["status"] == "ok"
    status, doc = await api.as_(None).get("/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    assert "/contacts/{contact_id}" in doc["paths"]
