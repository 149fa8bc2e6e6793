"""Notes over HTTP: add, list (pinned first), read, edit, delete, each on the timeline."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api
from tests.conftest import TeamWorld

PROBLEM = "application/problem+json"


async def raw(api: Api, method: str, path: str, json: Any = None) -> tuple[int, str, Any]:
    response = await api.client.request(method, "/api/v1" + path, json=json, headers=api.headers())
    body = await response.json(content_type=None) if response.status != 204 else None
    return response.status, response.content_type, body


async def contact(api: Api, name: str = "Jane Roe") -> int:
    status, body = await api.post("/contacts", {"name": name})
    assert status == 201, body
    return int(body["id"])


async def test_a_note_is_added_with_its_type_pin_and_author(
    api: Api, agent_api: Api, world: TeamWorld
) -> None:
    contact_id = await contact(api)
    status, note = await agent_api.post(
        f"/contacts/{contact_id}/notes",
        {"content": " Allergic to mornings ", "type": "danger", "pinned": True},
    )
    assert status == 201, note
    assert {k: note[k] for k in ("contact_id", "content", "type", "pinned", "author_user_id")} == {
        "contact_id": contact_id,
        "content": "Allergic to mornings",
        "type": "danger",
        "pinned": True,
        "author_user_id": world.agent.user_id,
    }
    assert await api.get(f"/notes/{note['id']}") == (200, note)


async def test_notes_are_listed_pinned_first_then_newest(api: Api) -> None:
    contact_id = await contact(api)
    ids = []
    for body in ({"content": "old"}, {"content": "pinned", "pinned": True}, {"content": "new"}):
        ids.append((await api.post(f"/contacts/{contact_id}/notes", body))[1]["id"])
    status, listed = await api.get(f"/contacts/{contact_id}/notes")
    assert status == 200
    assert [n["content"] for n in listed["items"]] == ["pinned", "new", "old"]


async def test_editing_and_deleting_a_note_are_on_the_contacts_timeline(api: Api) -> None:
    contact_id = await contact(api)
    _, note = await api.post(f"/contacts/{contact_id}/notes", {"content": "draft"})
    status, edited = await api.patch(f"/notes/{note['id']}", {"type": "info"})
    assert status == 200
    assert (edited["content"], edited["type"], edited["pinned"]) == ("draft", "info", False)
    assert await api.delete(f"/notes/{note['id']}") == (204, None)
    status, problem = await api.get(f"/notes/{note['id']}")
    assert (status, problem["detail"]) == (404, f"note {note['id']} does not exist")
    _, history = await api.get(
        f"/contacts/{contact_id}/timeline", kind=["note_added", "note_edited", "note_deleted"]
    )
    assert [(e["kind"], e["data"]) for e in history["items"]] == [
        ("note_deleted", {"note_id": note["id"]}),
        ("note_edited", {"note_id": note["id"], "type": "info", "content": "draft"}),
        ("note_added", {"note_id": note["id"], "type": "general", "content": "draft"}),
    ]


async def test_a_bad_note_is_refused_with_a_problem_naming_the_field(api: Api) -> None:
    contact_id = await contact(api)
    cases = [
        ({"content": ""}, ["body", "content"]),
        ({"content": "x", "type": "urgent"}, ["body", "type"]),
        ({"content": "x", "pinned": "maybe"}, ["body", "pinned"]),
        ({"content": "x", "author_user_id": 1}, ["body", "author_user_id"]),
        ({}, ["body", "content"]),
    ]
    for body, loc in cases:
        status, media_type, problem = await raw(api, "POST", f"/contacts/{contact_id}/notes", body)
        assert (status, media_type) == (422, PROBLEM), body
        assert problem["errors"][0]["loc"] == loc
        assert problem["title"] == "Invalid input"
    status, media_type, problem = await raw(api, "PATCH", "/notes/1", {"content": "  "})
    assert (status, problem["errors"][0]["loc"]) == (422, ["body", "content"])
    assert (await api.get(f"/contacts/{contact_id}/notes"))[1]["items"] == []


async def test_a_note_on_an_unknown_contact_is_a_404(api: Api) -> None:
    status, media_type, problem = await raw(api, "POST", "/contacts/999999/notes", {"content": "x"})
    assert (status, media_type, problem["detail"]) == (
        404,
        PROBLEM,
        "contact 999999 does not exist",
    )
    for method, path, body in (
        ("GET", "/notes/999999", None),
        ("PATCH", "/notes/999999", {"content": "x"}),
        ("DELETE", "/notes/999999", None),
        ("GET", "/contacts/999999/notes", None),
    ):
        status, media_type, _ = await raw(api, method, path, body)
        assert (status, media_type) == (404, PROBLEM), path


async def test_deleting_a_contact_takes_its_notes_with_it(api: Api) -> None:
    contact_id = await contact(api)
    _, note = await api.post(f"/contacts/{contact_id}/notes", {"content": "bye"})
    assert (await api.delete(f"/contacts/{contact_id}"))[0] == 204
    assert (await api.get(f"/notes/{note['id']}"))[0] == 404
