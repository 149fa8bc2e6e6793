"""CSV over HTTP: streamed exports, imports answered with a report, and clear refusals."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.conftest import Api, ClientFactory
from tests.conftest import TeamWorld
from voicecrm.app import build_app
from voicecrm.config import Settings

GOOGLE = (Path(__file__).parent.parent / "fixtures" / "csv" / "google.csv").read_bytes()


async def upload(
    api: Api, body: bytes, content_type: str = "text/csv", **params: str
) -> tuple[int, Any]:
    response = await api.client.post(
        "/api/v1/contacts/import",
        data=body,
        params=params,
        headers={**api.headers(), "Content-Type": content_type},
    )
    return response.status, await response.json(content_type=None)


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


async def test_an_import_answers_with_its_report(api: Api) -> None:
    status, report = await upload(api, GOOGLE, file_name="google.csv")
    assert status == 200, report
    assert {k: report[k] for k in ("total_rows", "created", "updated", "failed")} == {
        "total_rows": 4,
        "created": 3,
        "updated": 0,
        "failed": 1,
    }
    assert report["errors"] == [
        {
            "row": 3,
            "line": 5,
            "field": "phones",
            "column": "Phone 1 - Value",
            "message": report["errors"][0]["message"],
        }
    ]
    _, page = await api.get("/contacts", sort="name")
    assert [c["name"] for c in page["items"]] == ["Jane Roe", "Kim Lee", "Only Email"]
    _, events = await api.get(f"/contacts/{page['items'][0]['id']}/timeline")
    assert [(e["kind"], e["data"].get("file")) for e in events["items"]] == [
        ("note_added", None),  # the file's "Notes" column
        ("imported", "google.csv"),
    ]


async def test_a_dry_run_over_http_writes_nothing(api: Api) -> None:
    status, report = await upload(api, GOOGLE, dry_run="true")
    assert status == 200 and report["dry_run"] and report["created"] == 3
    _, page = await api.get("/contacts")
    assert page["items"] == []


async def test_a_mapping_and_skip_are_given_as_query_parameters(api: Api) -> None:
    _, jane = await api.post("/contacts", {"name": "Jane", "phones": [{"number": "4155550123"}]})
    body = b"Person,Cell\nJane Roe,415 555 0123\nKim,415 555 0124\n"
    mapping = json.dumps({"Person": "name", "Cell": "phone.cell"})
    status, report = await upload(api, body, mapping=mapping, on_match="skip")
    assert status == 200, report
    assert (report["created"], report["skipped"]) == (1, 1)
    _, same = await api.get(f"/contacts/{jane['id']}")
    assert same["name"] == "Jane"


async def test_a_file_that_cannot_be_read_is_a_problem_and_nothing_is_written(api: Api) -> None:
    status, problem = await upload(api, b"Colour,Size\nred,XL\n")
    assert status == 422
    assert problem["title"] == "Invalid CSV" and "'Colour', 'Size'" in problem["detail"]
    status, problem = await upload(api, b"name\n\xff\xfe\n")
    assert status == 422 and "not valid utf-8" in problem["detail"]
    status, problem = await upload(api, b"name\nAnn\n", mapping="[1]")
    assert status == 422 and problem["field"] == "mapping"
    status, problem = await upload(api, b"")
    assert status == 422 and "the body is empty" in problem["detail"]
    _, page = await api.get("/contacts")
    assert page["items"] == []


async def test_an_import_must_be_csv_in_a_known_charset(api: Api) -> None:
    status, problem = await upload(api, b"{}", content_type="application/json")
    assert status == 415 and "text/csv" in problem["detail"]
    status, problem = await upload(api, b"name\nAnn\n", content_type="text/csv; charset=klingon")
    assert status == 415 and "klingon" in problem["detail"]
    status, report = await upload(
        api, "name\nBéa\n".encode("cp1252"), content_type="text/csv; charset=windows-1252"
    )
    assert status == 200 and report["created"] == 1


async def test_agents_may_not_import(agent_api: Api) -> None:
    status, problem = await upload(agent_api, GOOGLE)
    assert status == 403 and problem["title"] == "Permission denied"


async def test_a_body_over_the_limit_is_refused_while_it_streams(
    aiohttp_client: ClientFactory, database_url: str, world: TeamWorld
) -> None:
    app = build_app(
        Settings(database_url=database_url, migrate_on_start=False, max_import_bytes=4096)
    )

    client: TestClient[Any, Any] = await aiohttp_client(app)
    api = Api(client, world.admin_token)

    async def chunked() -> Any:  # no Content-Length: only counting the stream can stop it
        yield b"name,phone\n"
        for i in range(1000):
            yield f"Person {i},415555{i:04d}\n".encode()

    response = await client.post(
        "/api/v1/contacts/import",
        data=chunked(),
        headers={**api.headers(), "Content-Type": "text/csv"},
    )
    assert response.status == 413
    status, report = await upload(api, b"name\nAnn\n")
    assert status == 200 and report["created"] == 1


async def test_the_export_of_a_filter_streams_csv(api: Api) -> None:
    await upload(api, GOOGLE)
    await api.post("/contacts", {"name": "Zed", "tags": ["vip"]})
    response = await api.client.get(
        "/api/v1/contacts/export.csv", params={"tag": "vip"}, headers=api.headers()
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["Content-Disposition"]
    assert [r["name"] for r in rows(await response.text())] == ["Jane Roe", "Zed"]


async def test_the_export_of_a_selection_streams_csv(api: Api) -> None:
    await upload(api, GOOGLE)
    _, page = await api.get("/contacts", sort="name")
    ids = [c["id"] for c in page["items"]][1:]
    status, text = await api.post("/contacts/export", {"ids": ids})
    assert status == 200
    assert [r["name"] for r in rows(text)] == ["Kim Lee", "Only Email"]
    status, text = await api.post("/contacts/export", {"filter": {"q": "jane"}})
    assert [r["name"] for r in rows(text)] == ["Jane Roe"]


async def test_a_bad_export_filter_is_a_problem_not_a_cut_off_file(api: Api) -> None:
    status, problem = await api.get("/contacts/export.csv", phone="1")
    assert status == 422 and problem["field"] == "phone"
    status, problem = await api.post("/contacts/export", {"ids": [1], "filter": {}})
    assert status == 422


UTF8_BOM = b"\xef\xbb\xbf"


async def export_bytes(api: Api, **params: str) -> bytes:
    response = await api.client.get(
        "/api/v1/contacts/export.csv", params=params, headers=api.headers()
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    return await response.read()


async def test_an_export_has_no_byte_order_mark_unless_asked_for_excel(api: Api) -> None:
    await api.post("/contacts", {"name": "Zoë Müller", "phones": [{"number": "4155550123"}]})
    await api.post("/contacts", {"name": "José", "tags": ["vip"]})
    plain = await export_bytes(api)
    assert plain.startswith(b"id,name,") and UTF8_BOM not in plain
    assert await export_bytes(api, bom="false") == plain
    excel = await export_bytes(api, bom="true")
    assert excel == UTF8_BOM + plain and excel.count(UTF8_BOM) == 1
    assert "Zoë Müller".encode() in excel
    vip = await export_bytes(api, tag="vip", bom="true")
    assert vip.startswith(UTF8_BOM + b"id,") and [r["name"] for r in rows(vip.decode())] == ["José"]


async def test_an_export_of_a_selection_for_excel_starts_with_a_byte_order_mark(
    api: Api,
) -> None:
    _, zoe = await api.post("/contacts", {"name": "Zoë"})
    for bom, start in (("true", UTF8_BOM + b"id,"), ("false", b"id,")):
        response = await api.client.post(
            "/api/v1/contacts/export",
            json={"ids": [zoe["id"]]},
            params={"bom": bom},
            headers=api.headers(),
        )
        assert response.status == 200
        body = await response.read()
        assert body.startswith(start) and body.count(UTF8_BOM) == (bom == "true")
        assert "Zoë".encode() in body


async def test_an_export_for_excel_imports_back_unchanged(api: Api) -> None:
    await upload(api, GOOGLE)
    excel = await export_bytes(api, bom="true")
    assert excel.startswith(UTF8_BOM)
    status, report = await upload(api, excel)
    assert status == 200, report
    assert (report["created"], report["updated"], report["unchanged"]) == (0, 0, 3)
    assert report["ignored_columns"][0] == "id"


async def test_a_bom_that_is_not_a_boolean_is_a_problem(api: Api) -> None:
    response = await api.client.get(
        "/api/v1/contacts/export.csv", params={"bom": "maybe"}, headers=api.headers()
    )
    assert response.status == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    problem = await response.json(content_type=None)
    assert problem["detail"].startswith("bom: ")
    assert [e["loc"] for e in problem["errors"]] == [["query", "bom"]]
    response = await api.client.post(
        "/api/v1/contacts/export",
        json={"ids": [1]},
        params={"bom": "maybe"},
        headers=api.headers(),
    )
    assert response.status == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")


async def test_openapi_documents_the_csv_routes(api: Api) -> None:
    _, doc = await api.as_(None).get("/openapi.json")
    export = doc["paths"]["/contacts/export.csv"]["get"]
    assert "text/csv" in export["responses"]["200"]["content"]
    for operation in (export, doc["paths"]["/contacts/export"]["post"]):
        [bom] = [p for p in operation["parameters"] if p["name"] == "bom"]
        assert bom["in"] == "query" and bom["required"] is False
        assert bom["schema"] == {"type": "boolean", "default": False, "title": "Bom"}
        assert "byte-order mark" in bom["description"] and "Excel" in bom["description"]
        assert "422" in operation["responses"]
    imp = doc["paths"]["/contacts/import"]["post"]
    assert "text/csv" in imp["requestBody"]["content"]
    assert {p["name"] for p in imp["parameters"]} == {"dry_run", "on_match", "mapping", "file_name"}
    assert {"403", "413", "415", "422"} <= set(imp["responses"])
