"""Where a message goes: the notes ("docs"), a tool ("tool") or small talk ("chat").

Rules decide, from the user's message alone, never from retrieved text: a message
holding an arithmetic expression goes to the tools (a word like "calculate" or
"계산" alone does not: notes questions use it, "BM25 노트의 계산 예시"),
a unit conversion ("16 GB in GiB") goes there too when a conversion tool is offered,
a bare greeting or thanks to chat, everything else to the notes. The tool's
arguments are then chosen by rule or by grammar-constrained JSON (agent/toolcall.py).
"""

import re
from typing import Literal

Route = Literal["docs", "tool", "chat"]
_OPERATOR = r"(?:\*\*|[-+*/×÷^%])"
# not inside a name: "Llama-3-8B" and "GPT-3.5" hold no arithmetic
_EXPRESSION = re.compile(
    rf"(?<![A-Za-z_-])[\d.(][\d.,\s()]*{_OPERATOR}[\s(]*[\d.][\d.,\s()*/+\-×÷^%]*(?![A-Za-z_])"
)
_SMALL_TALK = re.compile(
    r"^\s*(hi|hello|hey|thanks|thank you|good (morning|evening)|안녕|고마워|감사)\b", re.IGNORECASE
)


def expression_in(message: str) -> str | None:
    """The longest arithmetic expression written in the message, if any."""
    found = [m.group(0).strip(" ,") for m in _EXPRESSION.finditer(message)]
    return max(found, key=len) if found else None


# units a conversion tool (the `tools` MCP server's convert_units) reads; case matters (b/B)
_UNIT = r"(?:[kKMGTP]i?B|[kKMGTP]i?bit|[kKMGTP]b|bits?|bytes?|B)"
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_CONVERSIONS = (
    # "16 GB in GiB", "convert 4 GiB to MB"
    re.compile(
        rf"(?P<value>{_NUMBER})\s*(?P<from_unit>{_UNIT})\s+(?:in|to|into|as)\s+"
        rf"(?P<to_unit>{_UNIT})(?![\w-])"
    ),
    # "how many MiB is 4 GB", "how many bits are in 3 bytes"
    re.compile(
        rf"(?i:how many)\s+(?P<to_unit>{_UNIT})\s+(?:is|are|make|in|fit in)\s+(?:in\s+)?"
        rf"(?P<value>{_NUMBER})\s*(?P<from_unit>{_UNIT})(?![\w-])",
        re.IGNORECASE,
    ),
)


def conversion_in(message: str) -> dict | None:
    """{"value", "from_unit", "to_unit"} when the message asks to convert bits/bytes units."""
    for pattern in _CONVERSIONS:
        if found := pattern.search(message):
            value = float(found["value"].replace(",", ""))
            return {"value": value, "from_unit": found["from_unit"], "to_unit": found["to_unit"]}
    return None


def route(message: str, can_convert: bool = False) -> Route:
    """`can_convert`: a unit-conversion tool is available (from an MCP server)."""
    if expression_in(message) or (can_convert and conversion_in(message)):
        return "tool"
    if _SMALL_TALK.match(message) and len(message.split()) <= 6:
        return "chat"
    return "docs"
