"""The OpenAPI 3.1 document, made from the declared routes and their pydantic models.

Because the server parses requests with exactly these models, the document is
true by construction; a schemathesis test checks the server against it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from voicecrm import __version__
from voicecrm.api.problems import PROBLEM_JSON, Problem
from voicecrm.api.routing import Route, RouteTable
from voicecrm.storage import MAX_ID

_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")

_ERROR_TEXT = {
    400: "Malformed request (for example a body that is not JSON).",
    401: "Missing, unknown or revoked bearer token.",
    403: "The token's user may not do this.",
    404: "No such resource in the token's team.",
    409: "Conflicts with the stored state.",
    413: "The body is larger than allowed.",
    415: "The body is not of a supported media type.",
    422: "The input is well-formed but invalid; `errors` lists each problem.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _model_name(model: type[BaseModel], mode: str, names: Mapping[Any, Any]) -> str:
    ref: str = names[(model, mode)]["$ref"]
    return ref.rsplit("/", 1)[1]


def _error_codes(route: Route) -> list[int]:
    codes = set(route.errors)
    if route.auth:
        codes |= {401}
    if route.admin_only:
        codes |= {403}
    if _PATH_PARAM.search(route.path):
        codes |= {404}
    if route.body or route.request_content:
        codes |= {400, 413, 415, 422}
    if route.query:
        codes |= {422}
    return sorted(codes)


def openapi_document(table: RouteTable, *, server_prefix: str) -> dict[str, Any]:
    pairs: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
    for route in table.routes:
        if route.body:
            pairs.append((route.body, "validation"))
        if route.query:
            pairs.append((route.query, "validation"))
        if isinstance(route.response, type) and issubclass(route.response, BaseModel):
            pairs.append((route.response, "serialization"))
    unique = list(dict.fromkeys(pairs))
    names, top = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = top.get("$defs", {})

    paths: dict[str, dict[str, Any]] = {}
    for route in table.routes:
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        op: dict[str, Any] = {
            "operationId": route.handler.__name__,
            "summary": route.summary,
            "tags": [route.tag],
            "parameters": [],
            "responses": {},
        }
        if route.description:
            op["description"] = route.description
        for name in _PATH_PARAM.findall(route.path):
            op["parameters"].append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                }
            )
        if route.query:
            qname = _model_name(route.query, "validation", names)
            qschema = schemas[qname]
            required = set(qschema.get("required", []))
            for pname, pschema in qschema.get("properties", {}).items():
                param: dict[str, Any] = {
                    "name": pname,
                    "in": "query",
                    "required": pname in required,
                    "schema": {k: v for k, v in pschema.items() if k != "description"},
                }
                if "description" in pschema:
                    param["description"] = pschema["description"]
                if pschema.get("type") == "array":
                    param["style"], param["explode"] = "form", True
                op["parameters"].append(param)
        if route.body:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _ref(_model_name(route.body, "validation", names))
                    }
                },
            }
        elif route.request_content:
            op["requestBody"] = {"required": True, "content": route.request_content}
        if route.auth:
            op["security"] = [{"bearerAuth": []}]
        else:
            op["security"] = []
        if route.response_content:
            op["responses"][str(route.status)] = {
                "description": "Success.",
                "content": route.response_content,
            }
        elif route.response is None:
            op["responses"][str(route.status)] = {"description": "Done; no content."}
        else:
            op["responses"][str(route.status)] = {
                "description": "Success.",
                "content": {
                    "application/json": {
                        "schema": _ref(_model_name(route.response, "serialization", names))
                    }
                },
            }
        for code in _error_codes(route):
            op["responses"][str(code)] = {
                "description": _ERROR_TEXT.get(code, "Error."),
                "content": {PROBLEM_JSON: {"schema": _ref("Problem")}},
            }
        paths.setdefault(path, {})[route.method.lower()] = op

    # The document describes itself too, so that it lists every route the API serves.
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This OpenAPI 3.1 document",
            "tags": ["health"],
            "parameters": [],
            "security": [],
            "responses": {
                "200": {
                    "description": "Success.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voicecrm admin API",
            "version": __version__,
            "description": "The CRM behind the voicecrm AI phone receptionist: contacts, "
            "notes, stages, tags, the timeline, merge, bulk actions and CSV.",
        },
        "servers": [{"url": server_prefix}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
