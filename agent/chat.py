"""`bitrag chat`: a conversation over the notes that keeps the model and index loaded.

The evidence and its sources appear as soon as they are chosen; the answer streams
under them as the model writes it. Slash
commands change the session, retriever or model without leaving. Ctrl-C stops
the answer being written and keeps the conversation; Ctrl-D or /exit leaves.
"""

import readline
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.assemble import make_agent
from agent.graph import Agent
from agent.render import answer_live
from retrieval.errors import UserError
from retrieval.paths import bitrag_home
from retrieval.store import RETRIEVERS, Index

HELP = """commands:
  /sources            evidence and sources of the last answer
  /retriever NAME     search with bm25, dense, faiss or hybrid
  /model NAME|PATH    answer with another GGUF model
  /session NAME       continue (or start) a named, saved conversation
  /new                start a fresh conversation
  /help               this list
  /exit               leave (Ctrl-D also works)"""


@dataclass
class Chat:
    index: Index
    model: str | None
    llm_url: str | None
    session: str | None
    echo: Callable[[str], None]
    tools: list = field(default_factory=list)  # MCP tools, started once for the whole chat
    lora: str | None = None  # a LoRA adapter GGUF on the model (not kept by /model)
    agent: Agent = field(init=False)
    thread: str = field(init=False)
    last: dict | None = None

    def __post_init__(self) -> None:
        self.agent = self._agent(self.model, self.llm_url, self.session, self.lora)
        self.thread = self.session or f"chat-{uuid.uuid4().hex[:8]}"

    def _agent(
        self, model: str | None, llm_url: str | None, session: str | None, lora: str | None
    ) -> Agent:
        return make_agent(self.index, model, llm_url, session, self.tools, lora)

    def ask(self, question: str, write: Callable[[str], None]) -> None:
        """The evidence as soon as it is chosen, then the answer streamed under it."""
        self.last = answer_live(
            lambda on_token, on_evidence: self.agent.ask(
                question, self.thread, on_token, on_evidence
            ),
            self.echo,
            write,
        )

    def command(self, line: str) -> bool:
        """Run a slash command; False when the chat should end."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        if name in ("exit", "quit"):
            return False
        if name == "help":
            self.echo(HELP)
        elif name == "sources":
            self._sources()
        elif name == "retriever" and arg in RETRIEVERS:
            self.agent.context.retriever = arg
            self.echo(f"retriever: {arg}")
        elif name == "model" and arg:
            self.agent = self._agent(arg, None, self.session, None)  # an adapter fits one model
            self.model, self.lora = arg, None
            self.echo(f"model: {self.agent.context.llm.name}")
        elif name == "session" and arg:
            self.session = self.thread = arg
            self.agent = self._agent(self.model, self.llm_url, arg, self.lora)
            self.echo(f"session: {arg}")
        elif name == "new":
            self.thread = f"chat-{uuid.uuid4().hex[:8]}"
            self.echo("new conversation")
        else:
            self.echo(f"unknown or incomplete command: {line} (try /help)")
        return True

    def _sources(self) -> None:
        if not self.last or not self.last["evidence"]:
            self.echo("no sources yet")
            return
        for n, item in enumerate(self.last["evidence"], 1):
            self.echo(f"[{n}] {item.get('where') or item['chunk_id']}")


def _history_file() -> Path:
    return bitrag_home() / "chat_history"


def run_chat(chat: Chat, write: Callable[[str], None]) -> None:
    """The read-answer loop; input history is kept under BITRAG_HOME."""
    history = _history_file()
    history.parent.mkdir(parents=True, exist_ok=True)
    if history.is_file():
        readline.read_history_file(history)
    chat.echo("bitrag chat: ask about your notes; /help lists commands, /exit leaves.")
    try:
        _loop(chat, write)
    finally:
        readline.write_history_file(history)


def _read(prompt: str) -> str | None:
    """The user's next line; None at the end of the input: Ctrl-D, or a stdin that is empty,
    closed or missing (`bitrag chat <&-`)."""
    if sys.stdin is None or sys.stdin.closed:
        return None
    try:
        return input(prompt)
    except EOFError:
        return None


def _loop(chat: Chat, write: Callable[[str], None]) -> None:
    while True:
        try:
            line = _read("you> ")
        except KeyboardInterrupt:
            chat.echo("\n(use /exit or Ctrl-D to leave)")
            continue
        if line is None:
            chat.echo("")
            return
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not chat.command(line):
                return
            continue
        try:
            chat.ask(line, write)
        except KeyboardInterrupt:
            chat.echo("\n(stopped)")
        except UserError as exc:
            chat.echo(f"error: {' '.join(str(exc).split())}")
        except Exception as exc:  # one line, and the conversation goes on
            chat.echo(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}")
