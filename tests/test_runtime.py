"""The llama.cpp runtime on the embedded model: constrained JSON, concurrency, context budget,
streaming through the LangChain chat model, and remote mode against a real server."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from itertools import product

import jsonschema
import pytest
from langchain_core.messages import HumanMessage

from agent.runtime.chat_model import BitragChatModel
from agent.runtime.constrained import ROUTE_SCHEMA, route
from agent.runtime.context import count_messages, fit
from agent.runtime.llm import load_llm
from agent.runtime.remote import RemoteLLM
from retrieval.store import Index


@pytest.fixture(scope="module")
def llm():
    return load_llm()


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_200_constrained_routing_decisions_all_validate(llm):
    subjects = [
        "LoRA rank",
        "GGUF k-quants",
        "BM25 k1",
        "my FAISS notes",
        "bfloat16",
        "DPO beta",
        "지식 증류",
        "양자화 스케일",
        "MCP transports",
        "the KV cache",
    ]
    forms = [
        "What do my notes say about {}?",
        "Compute 17 * 23 for {}.",
        "hi! how are you?",
        "Summarize {} from the documents.",
        "{} 에 대해 정리해 줘",
        "Is {} better than LoRA?",
        "What is 2^10 in relation to {}?",
        "thanks, that helped with {}",
        "Explain {} briefly.",
        "Find the page about {}.",
        "ok",
        "Why does {} matter?",
        "How many bits does {} use?",
        "tell me a joke about {}",
        "{}?",
        "Compare {} and RAG.",
        "calculate the memory of {} at 4 bits",
        "Who wrote the note on {}?",
        "what's new with {}",
        "Define {} in one line.",
    ]
    messages = [form.format(subject) for form, subject in product(forms, subjects)]
    assert len(messages) == 200
    routes = [route(llm, m) for m in messages]
    for decision in routes:
        jsonschema.validate(decision, ROUTE_SCHEMA)
    assert {d["route"] for d in routes} <= {"docs", "tool", "chat"}


def test_eight_concurrent_requests_match_sequential_answers(llm):
    prompts = [f"Name one fact about the number {n}." for n in range(8)]
    expected = [llm.chat(_messages(p), 24) for p in prompts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda p: llm.chat(_messages(p), 24), prompts))
        streamed = list(pool.map(lambda p: "".join(llm.stream(_messages(p), 24)), prompts))
    assert got == expected
    assert streamed == expected
    assert all(text.strip() for text in expected)


def test_chat_model_streams_the_same_text_it_returns(llm):
    model = BitragChatModel(llm=llm, max_tokens=24)
    question = [HumanMessage("Say something about quantization.")]
    pieces = [chunk.content for chunk in model.stream(question)]
    assert len(pieces) > 3
    assert "".join(pieces) == model.invoke(question).content
    roomy = BitragChatModel(llm=llm, max_tokens=192)  # a JSON object must not be cut short
    constrained = roomy.invoke(question, schema=ROUTE_SCHEMA).content
    jsonschema.validate(json.loads(constrained), ROUTE_SCHEMA)


def test_context_budget_drops_and_reports_instead_of_overflowing(llm, sample_index):
    hits = Index.load(sample_index).search("quantization bits per weight", 12, "bm25")

    def build(kept):
        sources = "\n\n".join(f"[{n}] {h.chunk.text}" for n, h in enumerate(kept, 1))
        return _messages(f"Sources:\n{sources}\n\nQuestion: bits?")

    messages, kept, report = fit(llm, build, hits, answer_tokens=1800)
    assert report.dropped, "12 chunks cannot fit in 248 tokens"
    assert report.given == len(kept) >= 1
    assert report.prompt_tokens == count_messages(llm, messages) <= llm.n_ctx - 1800
    assert len(report.dropped) + report.given == len(hits)
    assert llm.chat(messages, 16).strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, "the server exited early"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"server at {url} did not come up")


def test_remote_mode_answers_through_a_real_server(run_json, home_with_sample_index, llm):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "agent", "serve-llm", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_for(f"{url}/models", server)
        remote = RemoteLLM(url)
        assert remote.count_tokens("GGUF k-quants") == llm.count_tokens("GGUF k-quants")
        question = _messages("What is the magic number of a GGUF file?")
        assert remote.chat(question, 24) == llm.chat(question, 24)
        result = run_json("ask", "What are the first bytes of a GGUF file?", "--llm-url", url)
        assert result["answer"].strip() and result["citations"]
        assert not result["abstained"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    with pytest.raises(OSError):  # serve-llm became the server: nothing is left listening
        urllib.request.urlopen(f"{url}/models", timeout=2)


def test_unreachable_server_is_one_clear_line(run, home_with_sample_index):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    result = run("ask", "What is GGUF?", "--llm-url", url)
    assert result.exit_code == 1
    assert f"LLM server at {url} is not reachable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bench_reports_both_stacks_side_by_side(run_json, model_path):
    result = run_json("bench", "--runs", "1")
    assert result["model"] == str(model_path)
    for key in ("prompt_tokens_per_s", "gen_tokens_per_s", "raw_gen_tokens_per_s"):
        assert result[key] > 0, key
    assert result["gen_ratio"] == round(
        result["gen_tokens_per_s"] / result["raw_gen_tokens_per_s"], 3
    )
    assert result["rss_mb"] > 0 and result["raw_rss_mb"] > 0
