"""What the reader model read, as the answer check needs it: the sentences of the passages
it wrote from, and the note section each sentence and evidence quote stands in."""

from agent import evidence as ev
from agent.state import State
from retrieval.chunking import Chunk


def read_texts(state: State) -> tuple[str, ...]:
    """The text of every passage the model read, when it wrote from them: what they state
    backs its answer (the model draws on all of them, the picked one first)."""
    if not state["picked"]:
        return ()
    return tuple(s for h in state["passages"] for s in ev.sentences(h.chunk.text))


def section(chunk: Chunk) -> str:
    """What a chunk's text is about: its heading path and the headings written inside it."""
    inside = [line for line in chunk.text.splitlines() if line.lstrip().startswith("#")]
    return " ".join([chunk.heading, *inside])


def headings(state: State) -> dict[str, str]:
    """The section (`section`) each evidence quote and read sentence stands in: a section
    about ColBERT says "32 tokens" without naming ColBERT again."""
    hits = [*state.get("hits", []), *state.get("passages", [])]
    chunks = {h.chunk.chunk_id: h.chunk for h in hits}
    found = {
        e.quote: section(chunks[e.chunk_id]) for e in state["evidence"] if e.chunk_id in chunks
    }
    if state.get("picked"):
        found |= {
            s: section(h.chunk) for h in state["passages"] for s in ev.sentences(h.chunk.text)
        }
    return found
