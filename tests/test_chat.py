"""`bitrag chat` for real: a subprocess in a pseudo-terminal, driven as a user would."""

import os
import sys
import time
from pathlib import Path

import pexpect
import pytest

PROMPT = "you> "


@pytest.fixture
def chat(home_with_sample_index: Path):
    env = os.environ | {"BITRAG_HOME": str(home_with_sample_index), "TERM": "dumb"}
    child = pexpect.spawn(
        sys.executable, ["-m", "agent", "chat"], env=env, encoding="utf-8", timeout=240
    )
    child.expect_exact(PROMPT)
    yield child
    child.close(force=True)


def test_chat_streams_answers_shows_sources_and_exits(chat):
    chat.sendline("What are the sign, exponent and mantissa bit counts of bfloat16?")
    chat.expect_exact('[1] "Format: bfloat16')  # the evidence first, as soon as it is chosen
    chat.expect_exact("number-formats-floating-point.md")
    chat.expect_exact(PROMPT)
    answer = chat.before
    assert "bfloat16" in answer and "8" in answer, "the answer (streamed, or quoted) follows"
    assert '[1] "Format: bfloat16' not in answer  # the evidence is not printed twice
    chat.sendline("/sources")
    chat.expect(r"\[1\] number-formats-floating-point\.md#\d+\r?\n")  # the source once, short
    chat.expect_exact(PROMPT)
    chat.sendline("/help")
    chat.expect_exact("/retriever NAME")
    chat.expect_exact(PROMPT)
    chat.sendline("/exit")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_ctrl_c_stops_the_answer_and_keeps_the_session(chat):
    chat.sendline("How many tokens are in GPT-2's byte-level BPE vocabulary?")
    chat.expect_exact("50,257")  # answered, so the session has a turn to follow up on
    chat.expect_exact(PROMPT)
    chat.sendline("And what does the vocabulary of LLaMA hold, and how was it built?")
    time.sleep(0.5)  # the question is being answered now
    chat.sendcontrol("c")
    assert chat.expect_exact(["(stopped)", PROMPT], timeout=30) == 0  # stopped, not finished
    chat.expect_exact(PROMPT)
    chat.sendline("/sources")
    chat.expect_exact(PROMPT)
    assert "pretraining-language-models.md" in chat.before  # the last finished answer's sources
    chat.sendeof()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_chat_reports_bad_commands_in_one_line(chat):
    chat.sendline("/retriever nonsense")
    chat.expect_exact(PROMPT)
    lines = [line.strip() for line in chat.before.splitlines() if line.strip()]
    assert lines == [
        "/retriever nonsense",  # the terminal's echo of what was typed
        "unknown or incomplete command: /retriever nonsense (try /help)",
    ]
    chat.sendline("/retriever bm25")
    chat.expect_exact(PROMPT)
    assert "retriever: bm25" in chat.before
