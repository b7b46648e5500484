"""Checks a response against ``token_server/openapi.yaml``: the status is documented (or
covered by ``default``), the content type is one the spec lists, the JSON body matches
the schema (JSON Schema 2020-12, as OpenAPI 3.1 uses) and required headers are present
and valid. Used by the token server's unit tests and tests/e2e/test_security.py; the fuzz
job (scripts/fuzz-token-server) uses schemathesis' own checks."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import yaml
from jsonschema import Draft202012Validator


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI document the token server serves, parsed."""
    return yaml.safe_load(resources.files("token_server").joinpath("openapi.yaml").read_text())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _validate(instance: Any, schema: dict[str, Any], where: str) -> None:
    root = {**schema, "components": spec()["components"]}
    errors = sorted(Draft202012Validator(root).iter_errors(instance), key=str)
    assert not errors, f"{where}: {errors[0].message}"


def problems(path: str, method: str, status: int, headers: Any, mimetype: str, body: bytes) -> None:
    """Assert that one response conforms to the spec.

    Raises:
        AssertionError: naming the first mismatch.
    """
    operation = spec()["paths"][path][method.lower()]
    responses = operation["responses"]
    documented = responses.get(str(status)) or responses.get("default")
    assert documented is not None, f"{method} {path}: status {status} is not documented"
    documented = _resolve(documented)
    if not (200 <= status < 300) and str(status) not in responses:
        assert status >= 400, f"{method} {path}: {status} only matches default"
    for name, header in documented.get("headers", {}).items():
        header = _resolve(header)
        value = headers.get(name)
        if header.get("required"):
            assert value is not None, f"{method} {path} {status}: header {name} missing"
        if value is not None:
            _validate(value, header["schema"], f"{method} {path} {status} header {name}")
    content = documented.get("content")
    if not content:
        assert body == b"", f"{method} {path} {status}: body where none is documented"
        return
    assert mimetype in content, f"{method} {path} {status}: content type {mimetype} not in {list(content)}"
    if mimetype == "application/json":
        _validate(json.loads(body), content[mimetype]["schema"], f"{method} {path} {status} body")
