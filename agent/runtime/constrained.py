"""Grammar-constrained JSON: llama.cpp turns a JSON schema into a grammar, so even the 135M
default model can only emit text of the requested shape; the result is parsed and validated."""

import json
from typing import Any

import jsonschema

from agent.runtime.llm import LLM, Messages

ROUTE_SCHEMA = {
    "type": "object",
    "properties": {
        "route": {"type": "string", "enum": ["docs", "tool", "chat"]},
        "reason": {"type": "string", "maxLength": 80},
    },
    "required": ["route", "reason"],
}
ROUTE_SYSTEM = (
    "Decide how to handle the user's message. Reply in JSON. route is 'docs' when the answer "
    "should come from the user's documents, 'tool' when it needs a calculation or another "
    "tool, 'chat' for small talk."
)


class ConstrainedOutputError(ValueError):
    """The model's output did not parse or validate (should not happen under a grammar)."""


def generate_json(llm: LLM, messages: Messages, schema: dict, max_tokens: int = 192) -> Any:
    text = llm.chat(messages, max_tokens, schema=schema)
    try:
        value = json.loads(text)
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        raise ConstrainedOutputError(f"{exc}; output was {text[:200]!r}") from None
    return value


def route(llm: LLM, message: str) -> dict:
    """{"route": "docs"|"tool"|"chat", "reason": str} for a user message."""
    messages = [{"role": "system", "content": ROUTE_SYSTEM}, {"role": "user", "content": message}]
    return generate_json(llm, messages, ROUTE_SCHEMA)
