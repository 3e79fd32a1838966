"""How an answer reads on a terminal: the answer, how it was made, and its evidence."""

from collections.abc import Callable
from pathlib import Path

MODE_LABELS = {
    "generated": "",
    "quoted": "(quoted from your notes)",
    "abstained": "",
}


def show_answer(
    result: dict,
    echo: Callable[[str], None],
    answer_shown: bool = False,
    evidence_shown: bool = False,
) -> None:
    """Print `result` (an `ask` result); `answer_shown` when the answer was streamed already,
    `evidence_shown` when its evidence was printed before the answer."""
    if not answer_shown:
        echo(result["answer"])
    if label := MODE_LABELS.get(result["mode"]):
        echo(label)
    if result["note"]:
        echo(f"note: {result['note']}")
    if not evidence_shown:
        show_evidence(result["evidence"], echo)
    if tool := result.get("tool"):
        where = f" [MCP server {tool['server']}]" if tool.get("server") else ""
        echo(f"tool: {tool['name']}({tool['args']}){where} -> {tool['output']}")


# Said under a streamed draft that the check did not keep, by what the turn ended with.
TAKEN_BACK = {
    "quoted": "(that answer was not supported by the notes; quoting them instead)",
    "abstained": "(that answer was not supported by the notes, so bitrag does not answer)",
}
NOT_STATED = "(the model read these passages: none of them states the answer)"
READ_ON = "(that answer was not supported by the notes; reading further passages)"
ELSEWHERE = "(the model read the passages and answers from this evidence instead:)"


def answer_live(
    ask: Callable[[Callable[[str], None], Callable[[list[dict]], None]], dict],
    echo: Callable[[str], None],
    write: Callable[[str], None],
) -> dict:
    """Run `ask(on_token, on_evidence)` and print as it goes: the evidence as soon as it is
    chosen (once, however often it is offered), the answer streamed under it, then what the
    finished result adds."""
    streamed: list[str] = []
    shown: list[list[dict]] = []

    def on_token(piece: str) -> None:
        streamed.append(piece)
        write(piece)

    def on_evidence(evidence: list[dict]) -> None:
        if streamed:  # a draft the check refused: the model reads on, deeper
            write("\n")
            echo(READ_ON)
            streamed.clear()
        if shown and shown[-1] != evidence:  # the model read and found it elsewhere
            echo(ELSEWHERE)
        if not shown or shown[-1] != evidence:  # shown before the model read, then again
            show_evidence(evidence, echo)
        shown.append(evidence)

    result = ask(on_token, on_evidence)
    if streamed:
        write("\n")
        if result["mode"] != "generated":
            echo(TAKEN_BACK[result["mode"]])
    elif shown and result["mode"] == "abstained":
        echo(NOT_STATED)
    answer_shown = result["mode"] == "generated" and bool(streamed)
    evidence_shown = bool(shown) and shown[-1] == result["evidence"]
    show_answer(result, echo, answer_shown, evidence_shown)
    return result


def show_evidence(evidence: list[dict], echo: Callable[[str], None]) -> None:
    for n, item in enumerate(evidence, 1):
        echo(f'[{n}] "{item["quote"]}"')
        echo(f"    {item.get('where') or item['chunk_id']}")


def where(chunk_id: str, source: str, root: Path | None) -> str:
    """`chunk_id` as a reader wants it: the source relative to the indexed root, or to ~, or
    whole, whichever is shortest, then `#chunk`, once."""
    suffix = chunk_id[len(source) :] if chunk_id.startswith(source) else ""
    path = Path(source)
    shown = [source]
    for base, prefix in ((root, ""), (Path.home(), "~/")):
        if base is not None and base != Path(base.anchor) and path.is_relative_to(base):
            shown.append(prefix + str(path.relative_to(base)))
    return min(shown, key=len) + suffix


def label_sources(result: dict, root: Path | None) -> dict:
    """Add `where` (the short label above) to every evidence item and citation of `result`."""
    for item in [*result["evidence"], *result["citations"]]:
        item["where"] = where(item["chunk_id"], item["source"], root)
    return result
