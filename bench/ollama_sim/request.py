"""Request bodies as Ollama decodes them: JSON into Go structs, so a wrongly typed field is HTTP 400.

Ollama answers ``{"error": "json: cannot unmarshal number into Go struct field ChatRequest.messages of
type []api.Message"}`` for ``"messages": 1.5``; ``null`` is every field's zero value. Only the fields
the emulators read (and their common siblings) are checked.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# field -> (accepted Python types, Go type named in the error)
_STR = ((str,), "string")
_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "model": _STR,
    "name": _STR,
    "prompt": _STR,
    "system": _STR,
    "suffix": _STR,
    "template": _STR,
    "stream": ((bool,), "bool"),
    "raw": ((bool,), "bool"),
    "options": ((dict,), "map[string]interface {}"),
    "messages": ((list,), "[]api.Message"),
    "context": ((list,), "[]int"),
    "keep_alive": ((str, int, float), "api.Duration"),
}
_MESSAGE_FIELDS = {"role": _STR, "content": _STR}


def _json_kind(value: Any) -> str:
    """The JSON type name Go's decoder uses in its error."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _unmarshal_error(value: Any, where: str, go_type: str) -> web.HTTPBadRequest:
    message = f"json: cannot unmarshal {_json_kind(value)} into Go {where} of type {go_type}"
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _check(value: Any, accepted: tuple[type, ...]) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) and bool not in accepted:
        return False
    return isinstance(value, accepted)


async def read_body(request: web.Request, struct: str) -> dict[str, Any]:
    """The JSON body of an ``api.<struct>`` request; 400 (as Ollama) when it is not JSON or mistyped."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "invalid request body"}), content_type="application/json"
        ) from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise _unmarshal_error(body, "value", f"api.{struct}")
    for name, (accepted, go_type) in _FIELDS.items():
        if not _check(body.get(name), accepted):
            raise _unmarshal_error(body[name], f"struct field {struct}.{name}", go_type)
    for message in body.get("messages") or []:
        if not _check(message, (dict,)):
            raise _unmarshal_error(message, f"struct field {struct}.messages", "api.Message")
        for name, (accepted, go_type) in _MESSAGE_FIELDS.items():
            if isinstance(message, dict) and not _check(message.get(name), accepted):
                raise _unmarshal_error(message[name], f"struct field Message.messages.{name}", go_type)
    return body
