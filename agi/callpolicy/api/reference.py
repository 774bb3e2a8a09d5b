"""The API reference in Markdown, generated from the OpenAPI document (docs/api.md;
`callpolicy api openapi --markdown`; a test keeps docs/api.md current)."""

from __future__ import annotations

from typing import Any

from ..service.config import Settings
from .app import create_app
from .auth import TokenSource

__all__ = ["openapi_document", "render_reference"]


def openapi_document(settings: Settings) -> dict[str, Any]:
    from pathlib import Path

    tokens = TokenSource(Path("/nonexistent/callpolicy-api-tokens.toml"), missing_ok=True)
    return create_app(settings, tokens).openapi()


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else kind


def _line(text: str | None) -> str:
    return " ".join((text or "").split())


def _parameters(operation: dict[str, Any]) -> list[str]:
    rows = []
    for p in operation.get("parameters", []):
        required = "yes" if p.get("required") else ""
        rows.append(f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} | {required} | "
                    f"{_line(p.get('description') or p.get('schema', {}).get('description'))} |")
    if not rows:
        return []
    return ["| parameter | in | type | required | |", "|---|---|---|---|---|", *rows, ""]


def _operation(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", _line(operation.get("description")), ""]
    scope = operation.get("x-required-scope")
    lines += [f"Scope: `{scope}`." if scope else "No token needed.", ""]
    lines += _parameters(operation)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body:
        lines += [f"Body: {_type(body['schema'])}.", ""]
    responses = ", ".join(_response(code, r)
                          for code, r in sorted(operation.get("responses", {}).items()))
    lines += [f"Responses: {responses}.", ""]
    return lines


def _response(code: str, response: dict[str, Any]) -> str:
    """`200 CustomerView` for a success, the bare code for a problem."""
    if not code.startswith("2"):
        return code
    content: dict[str, Any] = next(iter(response.get("content", {}).values()), {})
    return f"{code} {_type(content.get('schema', {}))}"


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", "", _line(schema.get("description")), ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", ()))
        lines += ["| field | type | required | |", "|---|---|---|---|"]
        lines += [f"| `{key}` | {_type(value)} | {'yes' if key in required else ''} | "
                  f"{_line(value.get('description'))} |" for key, value in properties.items()]
        lines.append("")
    return lines


def render_reference(document: dict[str, Any]) -> str:
    lines = [f"# {document['info']['title']} reference (v{document['info']['version']})", "",
             "Generated from the OpenAPI document by `callpolicy api openapi --markdown` "
             "(tests/unit/test_api_cli.py checks it is current). The document itself: "
             "`GET /v1/openapi.json` or `callpolicy api openapi`.", "",
             _line(document["info"].get("description")), "", "## Operations", ""]
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            lines += _operation(path, method, operation)
    lines += ["## Schemas", ""]
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        lines += _schema(name, schema)
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"
