"""The agent graph's nodes: each a small function from the state to a partial update.

The run context (index, model, tools) arrives as `runtime.context`; see
agent/state.py. Routing decisions between nodes live in agent/graph.py.
"""

import os
import re

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from agent import evidence as ev
from agent import followup, prompts, reader, routing, semantic, toolcall
from agent.read import headings, read_texts
from agent.render import where
from agent.runtime.context import fit
from agent.state import Context, State
from agent.verify import MAX_SENTENCES, finished, said, unsupported, verify
from retrieval.store import Hit
from retrieval.tokenize import language, tokenize

MIN_COVERAGE = 0.55  # share of the question's term weight one chunk must hold (dev split)
MAX_ANSWER_TOKENS = 96
STOP = ["\n\n", "Question:", "<notes>"]
CONTEXT_CHUNKS = 0  # chunk text shown after the evidence (more costs prompt time, not accuracy)
LEXICAL_ENOUGH = 0.8  # BM25 coverage above which hybrid retrieval skips the dense ranker
REWRITE_DEPTH = 2  # the rewritten query looks twice as deep
PICKED_EVIDENCE = 2  # sentences from the passage the reader picked; one more from the others
KOREAN_HINT = "`make install-qwen-1.5b` adds a model that reads and answers Korean."
_PASSAGE_MARKS = re.compile(r"\s*\[\d+\]")  # the write job cites passages, not evidence


def start(state: State, runtime: Runtime[Context]) -> State:
    """A new question: resolve follow-ups against the last turn, pick the route, note
    the numbers and codes it names that the notes never do."""
    history = state.get("history") or []
    previous = history[-1]["query"] if history else None
    question = state["question"]
    return {
        "route": routing.route(question, toolcall.can_convert(runtime.context.tools)),
        "query": followup.resolve(question, previous),
        "searched": [],
        "hits": [],
        "examined": [],
        "evidence": [],
        "passages": [],
        "picked": 0,
        "named": None,
        "judged": [],
        "confirmed": {},
        "coverage": 0.0,
        "similarity": 0.0,
        "unknown": ev.unknown_specifics(question, runtime.context.weights),
        "draft": "",
        "citations": [],
        "tool": None,
        "note": "",
    }


def retrieve(state: State, runtime: Runtime[Context]) -> State:
    """Hybrid retrieval starts lexical: when the BM25 chunks already hold nearly all of
    the question, the dense ranker (and the seconds it takes to load) is not consulted."""
    ctx = runtime.context
    query = state["query"]
    k = ctx.k * (REWRITE_DEPTH if state["searched"] else 1)
    hits = ctx.index.search(query, k, "bm25") if ctx.retriever == "hybrid" else []
    settled = state["unknown"] or ev.coverage(query, hits, ctx.weights) >= LEXICAL_ENOUGH
    if not hits or not settled:
        hits = ctx.index.search(query, k, ctx.retriever)
    return {"hits": hits, "searched": [*state["searched"], query]}


def select_evidence(state: State, runtime: Runtime[Context]) -> State:
    """The best sentences by the question's terms; when the terms are not covered (a
    paraphrase, another language), the sentences closest in meaning instead. `similarity`,
    how close in meaning the closest retrieved sentence is, decides whether to answer."""
    ctx = runtime.context
    query, hits = state["query"], state["hits"]
    focus = state["question"] if query != state["question"] else None
    coverage = 0.0 if state["unknown"] else ev.coverage(query, hits, ctx.weights)
    lexical = {"evidence": ev.select(query, hits, ctx.weights, focus), "coverage": coverage}
    if state["unknown"] or not ctx.semantic:
        return lexical | {"similarity": 0.0}
    asked = state["searched"][0]  # meaning is read from the question, not a rewrite's terms
    if len(state["searched"]) > 1:  # the first search's sentences all fell short already
        hits = [h for h in hits if h.chunk.chunk_id not in state["examined"]]
    if coverage >= MIN_COVERAGE:
        return lexical | {"similarity": semantic.reaches(asked, hits, lexical["evidence"])}
    found = semantic.match(asked, hits)
    if found.similarity < semantic.MIN_SIMILARITY:
        return lexical | {"similarity": found.similarity}
    return {"evidence": found.evidence, "coverage": coverage, "similarity": found.similarity}


def rewrite(state: State) -> State:
    """Search once more with the question's content terms only, looking deeper. What was
    examined is left out: the passages the reader model read, else every hit (the cut-off
    measured them all)."""
    terms = dict.fromkeys(tokenize(state["query"]))
    examined = [h.chunk.chunk_id for h in state["passages"] or state["hits"]]
    return {"query": " ".join(terms) or state["query"], "examined": examined}


def readable(state: State, runtime: Runtime[Context]) -> bool:
    """Whether the model reads the question and the best evidence."""
    languages = runtime.context.model_languages
    if languages is None:
        return True
    texts = [state["question"], state["evidence"][0].quote]
    return all(language(t) in languages for t in texts)


def judge(state: State, runtime: Runtime[Context]) -> State:
    """The model reads the retrieved passages and names the one that states the answer, or
    none (agent/reader.py); after a rewrite it reads only passages it has not read yet, and
    names one only when none is clearly unlikely (reader.AGAIN_NONE_SHARE). On
    the first search the top passage's evidence is shown before the model reads (reading
    takes seconds on a CPU; most often that passage is the one it picks)."""
    hits = [h for h in state["hits"] if h.chunk.chunk_id not in state["examined"]]
    if not hits:
        return {"picked": 0}  # nothing new to read: what it read before stays on record
    ctx = runtime.context
    again = len(state["searched"]) > 1  # the second, deeper search
    if not again:
        shown = _evidence_in(state, ctx, hits[0], hits[1 : reader.MAX_PASSAGES])
        get_stream_writer()({"evidence": [e.as_dict() for e in shown]})
    share = reader.AGAIN_NONE_SHARE if again else reader.NONE_SHARE
    question, earlier = state["question"], _earlier(state)
    verdict = reader.judge(ctx.llm, question, hits, earlier=earlier, none_share=share)
    judged = list(verdict.likelihood)
    update = {"passages": list(verdict.hits), "picked": verdict.passage, "judged": judged}
    named = verdict.picked.chunk.chunk_id if verdict.picked else state.get("named")
    return update | {"named": named}


def _earlier(state: State) -> str | None:
    """The question a follow-up follows (None for a question of its own)."""
    history = state.get("history") or []
    follows = history and state["searched"][0] != state["question"]  # resolved against it
    return history[-1]["question"] if follows else None


def pick(state: State, runtime: Runtime[Context]) -> State:
    """Evidence sentences chosen inside the passage the model picked, then the best of the
    others it read, which its answer may draw on."""
    ctx = runtime.context
    chosen = state["passages"][state["picked"] - 1]
    others = [h for h in state["passages"] if h is not chosen]
    return {
        "evidence": _evidence_in(state, ctx, chosen, others),
        "coverage": ev.coverage(state["query"], [chosen], ctx.weights),
    }


def _evidence_in(state: State, ctx: Context, chosen: Hit, others: list[Hit]) -> list[ev.Evidence]:
    """PICKED_EVIDENCE sentences of `chosen` by the question's terms (else by meaning, else
    its opening), then the best one of `others`."""
    query = state["query"]
    focus = state["question"] if query != state["question"] else None
    evidence = ev.select(query, [chosen], ctx.weights, focus, PICKED_EVIDENCE)
    if evidence:
        evidence += ev.select(query, others, ctx.weights, focus, 1)
    if not evidence and ctx.semantic:
        evidence = semantic.match(state["searched"][0], [chosen]).evidence
    return evidence or ev.opening(chosen)


def _draft(state: State, ctx: Context, messages) -> str:
    """The model's answer. Each sentence reaches whoever listens once it has ended and the
    evidence backs it (`unsupported`, agent/verify.py): a sentence that states what the
    notes do not is never shown, and ends the draft, as MAX_SENTENCES do."""
    quotes, read = [e.quote for e in state["evidence"]], read_texts(state)
    sections = headings(state)
    emit = get_stream_writer()
    emit({"evidence": [e.as_dict() for e in state["evidence"]]})  # shown while the model writes

    def backed(text: str) -> bool:
        return not unsupported(text, state["question"], quotes, ctx.weights, read, sections)

    draft = shown = ""
    for piece in ctx.llm.stream(messages, MAX_ANSWER_TOKENS, STOP):
        draft += piece
        if (done := finished(draft)) == shown:
            continue
        if not backed(done):
            return done
        emit({"token": _after(shown, done)})
        shown = done
        if said(done) >= MAX_SENTENCES:
            return done
    whole = " ".join(ev.sentences(draft))
    if whole != shown and backed(whole):
        emit({"token": _after(shown, whole)})
    return draft


def _after(shown: str, text: str) -> str:
    """What `text` adds to what was shown already (it grows by whole sentences)."""
    return text[len(os.path.commonprefix([shown, text])) :]


def generate(state: State, runtime: Runtime[Context]) -> State:
    """A short answer from the numbered evidence."""
    ctx = runtime.context
    lang = language(state["question"])

    def build(kept):
        return prompts.answer_messages(state["question"], state["evidence"], kept, lang)

    messages, _, _ = fit(ctx.llm, build, state["hits"][:CONTEXT_CHUNKS], MAX_ANSWER_TOKENS)
    return {"draft": _draft(state, ctx, messages)}


def write(state: State, runtime: Runtime[Context]) -> State:
    """A short answer from the passages the judge read, the picked one first, asked over the
    prompt the judge read (so the model evaluates only the new job's tokens)."""
    question = state["question"]
    shown, picked = state["passages"], state["picked"]
    messages = reader.write_messages(question, shown, picked, language(question), _earlier(state))
    return {"draft": _draft(state, runtime.context, messages)}


def check(state: State, runtime: Runtime[Context]) -> State:
    """Keep a supported draft (the picked passage backs it too) that the reader model
    confirms. Otherwise answer with the quote and say why; after a draft the evidence did not
    back, only when the cut-off backs the quote and the reader confirms it (else abstain)."""
    quotes = [e.quote for e in state["evidence"]]
    draft = _PASSAGE_MARKS.sub("", state["draft"]) if state["picked"] else state["draft"]
    weights, read, sections = runtime.context.weights, read_texts(state), headings(state)
    verdict = verify(draft, state["question"], quotes, weights, read, sections)
    reads = runtime.context.reader and state["picked"]
    reason, confirmed = ("" if verdict.ok else verdict.reason), {}
    if verdict.ok and reads:
        confirmed["draft"] = _confirm(state, runtime, verdict.answer)
        if confirmed["draft"] < reader.CONFIRM_DRAFT:
            reason = f"the model did not confirm it: yes {confirmed['draft']:.2f}"
    if not reason:
        return {
            "answer": verdict.answer,
            "mode": "generated",
            "citations": _citations(state, verdict.cited),
            "note": _meaning_note(state),
            "confirmed": confirmed,
        }
    fallback = state | _best_read(state, runtime)
    note = f"the evidence is quoted instead of the model's answer ({reason})"
    if not verdict.ok and state["picked"]:
        if not _gate(fallback, runtime):  # neither the model nor the cut-off backs a quote
            return _unbacked(state, runtime, note) | {"confirmed": confirmed}
        if reads:
            confirmed["quote"] = _confirm(fallback, runtime, fallback["evidence"][0].quote, True)
            if confirmed["quote"] < reader.CONFIRM_QUOTE_UNBACKED:
                return _unbacked(state, runtime, note) | {"confirmed": confirmed}
    return quote(fallback, note) | {"confirmed": confirmed}


def _unbacked(state: State, runtime: Runtime[Context], note: str) -> State:
    """After a draft the evidence did not back and a quote of what the reader read that
    nothing backs: the cut-off path's own quote (`select_evidence` over every hit) when its
    closest sentence is clearly close in meaning (reader.CLEAR_SIMILARITY), else abstain."""
    cut = select_evidence(state, runtime)  # without the meaning check, its similarity is 0
    if not cut["evidence"] or cut["similarity"] < reader.CLEAR_SIMILARITY:
        return abstain(state, runtime)
    clear = f"the closest sentence is clearly close in meaning ({cut['similarity']:.2f})"
    return quote(state | cut, f"{note}; {clear}")


def _confirm(state: State, runtime: Runtime[Context], answer: str, quoted: bool = False) -> float:
    """How likely the reader says yes to `answer` (its draft, or the quote) over the passages
    it read (agent/reader.py `confirm`)."""
    question, shown = state["question"], state["passages"]
    earlier = _earlier(state)
    return reader.confirm(runtime.context.llm, question, shown, answer, quoted, earlier)


def _best_read(state: State, runtime: Runtime[Context]) -> State:
    """The evidence a quote falls back on when the reader's draft fails its check: the best
    sentences by the question's terms over every passage it read, not only the one it
    picked (on dev its pick held the answer less often than the best sentence did)."""
    if not state["picked"]:
        return {}
    query = state["query"]
    focus = state["question"] if query != state["question"] else None
    weights = runtime.context.weights
    best = ev.select(query, state["passages"], weights, focus)
    if not best:
        return {}
    return {
        "evidence": best,
        "coverage": ev.coverage(query, _quoted(state | {"evidence": best}), weights),
    }


def _quoted(state: State) -> list[Hit]:
    """The passage the best evidence comes from."""
    first = state["evidence"][0].chunk_id
    return [h for h in state["passages"] if h.chunk.chunk_id == first]


def _gate(state: State, runtime: Runtime[Context]) -> bool:
    """The cut-off's verdict on the passage a quote would come from: close in meaning to the
    question (or, without the meaning check, covering its terms)."""
    ctx = runtime.context
    if not ctx.semantic:
        return state["coverage"] >= MIN_COVERAGE
    found = semantic.reaches(state["searched"][0], _quoted(state), state["evidence"])
    return found >= semantic.MIN_SIMILARITY


def quote(state: State, note: str = "") -> State:
    """The best evidence passage, verbatim, as the answer (a table row: only its cells the
    question names); when the question asks two things and the next passage comes from the
    same note, that one too."""
    best, *others = state["evidence"]
    two = ev.asks_two_things(state["question"])
    second = [e for e in others[:1] if two and e.source == best.source]
    quoted = list(enumerate([best, *second], 1))
    note = "; ".join(n.rstrip(".") for n in (note, _meaning_note(state)) if n)
    question = state["question"]
    answer = " ".join(f"{ev.named_cells(e.cells, question) or e.quote} [{n}]" for n, e in quoted)
    citations = _citations(state, [n for n, _ in quoted])
    update = {"answer": answer, "mode": "quoted", "citations": citations, "note": note}
    return update | {"evidence": state["evidence"]}


def _meaning_note(state: State) -> str:
    """Said whenever the evidence was found by meaning rather than by the question's words:
    such a passage is about the question, and the user should check it answers it."""
    if state["coverage"] >= MIN_COVERAGE or state["similarity"] < semantic.MIN_SIMILARITY:
        return ""
    return (
        f"found by meaning, not by your question's words (similarity "
        f"{state['similarity']:.2f}): check that the passage answers the question"
    )


def quote_unreadable(state: State) -> State:
    note = "the model does not read this language, so the answer is quoted from the notes"
    if language(state["question"]) == "ko":
        note += f"; {KOREAN_HINT}"
    return quote(state, note)


def abstain(state: State, runtime: Runtime[Context]) -> State:
    searched = " | ".join(f'"{q}"' for q in state["searched"])
    answer = f"The notes do not answer this. Searched for {searched}."
    if state["unknown"]:
        answer += f" The notes never mention {', '.join(state['unknown'])}."
    if state["hits"]:
        closest = state["hits"][0].chunk
        shown = where(closest.chunk_id, closest.source, runtime.context.index.root)
        answer += f" Closest source: {shown}."
    return {"answer": answer, "mode": "abstained", "citations": [], "evidence": []}


def use_tool(state: State, runtime: Runtime[Context]) -> State:
    ctx = runtime.context
    call = toolcall.choose(state["question"], ctx.tools, lambda: ctx.llm)
    result = toolcall.run(call, ctx.tools)
    return {"answer": result.answer, "mode": "generated", "tool": result.as_dict()}


def chat(state: State, runtime: Runtime[Context]) -> State:
    reply = runtime.context.llm.chat(prompts.chat_messages(state["question"]), 64, STOP)
    return {"answer": reply.strip(), "mode": "generated"}


def remember(state: State) -> State:
    turn = {"question": state["question"], "query": state["query"], "answer": state["answer"]}
    return {"history": [turn]}


def _citations(state: State, numbers: list[int]) -> list[dict]:
    given = state["evidence"]
    return [
        {"n": n, "source": given[n - 1].source, "chunk_id": given[n - 1].chunk_id} for n in numbers
    ]
