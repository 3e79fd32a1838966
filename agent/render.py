"""How an answer reads on a terminal: the answer, how it was made, and its evidence."""

from collections.abc import Callable

MODE_LABELS = {
    "generated": "",
    "quoted": "(quoted from your notes)",
    "abstained": "",
}


def show_answer(result: dict, echo: Callable[[str], None], answer_shown: bool = False) -> None:
    """Print `result` (an `ask` result); `answer_shown` when the answer was streamed already."""
    if not answer_shown:
        echo(result["answer"])
    if label := MODE_LABELS.get(result["mode"]):
        echo(label)
    if result["note"]:
        echo(f"note: {result['note']}")
    for n, item in enumerate(result["evidence"], 1):
        echo(f'[{n}] "{item["quote"]}"')
        echo(f"    {item['source']} ({item['chunk_id']})")
    if tool := result.get("tool"):
        where = f" [MCP server {tool['server']}]" if tool.get("server") else ""
        echo(f"tool: {tool['name']}({tool['args']}){where} -> {tool['output']}")
