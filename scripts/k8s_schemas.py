"""Kubernetes JSON schemas for `kubeconform -strict`, from the API server's own OpenAPI document.

    python scripts/k8s_schemas.py SWAGGER_JSON OUT_DIR

SWAGGER_JSON is `api/openapi-spec/swagger.json` of the `k8s.io/kubernetes` Go module (the
OpenAPI v2 document the API server serves, for that release). OUT_DIR receives one
stand-alone schema per kind and version, named as kubeconform looks them up with
`-schema-location 'OUT_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'`:
`deployment-apps-v1.json`, `service-v1.json`, `horizontalpodautoscaler-autoscaling-v2.json`.

Each schema is made strict the way kubectl's client-side validation is: every `$ref` is
inlined, an object that lists its properties refuses any other (`additionalProperties:
false`), `int-or-string` accepts both, and a `Quantity` accepts a string or a number. A
misspelled or misplaced field in a manifest then fails validation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REF_PREFIX = "#/definitions/"
#: Definitions that accept more than their OpenAPI type says (the API server's JSON decoding).
LOOSE_TYPES: dict[str, dict[str, Any]] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"oneOf": [{"type": "string"}, {"type": "number"}]},
}


def strict_schema(node: Any, definitions: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """`node` with every `$ref` inlined and objects closed (see the module docstring).

    A reference back into a definition being expanded (recursive types such as
    `JSONSchemaProps`) becomes `{}`: anything is accepted there.
    """
    if isinstance(node, list):
        return [strict_schema(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("$ref"), str):
        name = node["$ref"].removeprefix(REF_PREFIX)
        if name in LOOSE_TYPES:
            return LOOSE_TYPES[name]
        if name in seen:
            return {}
        return strict_schema(definitions[name], definitions, (*seen, name))
    if node.get("format") == "int-or-string":
        return LOOSE_TYPES["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    out = {key: strict_schema(value, definitions, seen) for key, value in node.items()
           if not key.startswith("x-kubernetes-") and key != "properties"}
    if isinstance(node.get("properties"), dict):  # a map of names to schemas, not a schema
        out["properties"] = {name: strict_schema(value, definitions, seen) for name, value in node["properties"].items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def schema_file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's file name for a kind: `{kind}-{first label of group}-{version}.json`,
    or `{kind}-{version}.json` for the core group (its registry's KindSuffix)."""
    prefix = f"-{group.split('.')[0]}" if group else ""
    return f"{kind.lower()}{prefix}-{version}.json".lower()


def generate(swagger: dict[str, Any], out_dir: Path) -> int:
    """Write one schema per group/version/kind in `swagger`; returns how many were written."""
    definitions = swagger["definitions"]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            schema = strict_schema(definition, definitions, (name,))
            schema["$schema"] = "http://json-schema.org/schema#"
            path = out_dir / schema_file_name(gvk["group"], gvk["version"], gvk["kind"])
            path.write_text(json.dumps(schema, separators=(",", ":")), encoding="utf-8")
            written += 1
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: k8s_schemas.py SWAGGER_JSON OUT_DIR", file=sys.stderr)
        return 2
    try:
        swagger = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"k8s_schemas: cannot read {argv[0]}: {exc}", file=sys.stderr)
        return 1
    count = generate(swagger, Path(argv[1]))
    print(f"k8s_schemas: {count} schemas in {argv[1]}")
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
