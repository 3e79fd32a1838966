"""Where a message goes: the notes ("docs"), a tool ("tool") or small talk ("chat").

Rules decide, from the user's message alone, never from retrieved text: a message
holding an arithmetic expression goes to the tools (a word like "calculate" or
"계산" alone does not: notes questions use it, "BM25 노트의 계산 예시"),
a bare greeting or thanks to chat, everything else to the notes. The tool's
arguments are then chosen by rule or by grammar-constrained JSON (agent/toolcall.py).
"""

import re
from typing import Literal

Route = Literal["docs", "tool", "chat"]
_OPERATOR = r"(?:\*\*|[-+*/×÷^%])"
_EXPRESSION = re.compile(rf"[\d.(][\d.,\s()]*{_OPERATOR}[\s(]*[\d.][\d.,\s()*/+\-×÷^%]*")
_SMALL_TALK = re.compile(
    r"^\s*(hi|hello|hey|thanks|thank you|good (morning|evening)|안녕|고마워|감사)\b", re.IGNORECASE
)


def expression_in(message: str) -> str | None:
    """The longest arithmetic expression written in the message, if any."""
    found = [m.group(0).strip(" ,") for m in _EXPRESSION.finditer(message)]
    return max(found, key=len) if found else None


def route(message: str) -> Route:
    if expression_in(message):
        return "tool"
    if _SMALL_TALK.match(message) and len(message.split()) <= 6:
        return "chat"
    return "docs"
