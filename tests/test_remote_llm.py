"""RemoteLLM against tiny real servers on 127.0.0.1: a silent server, error statuses, HTML and
JSON without the expected keys each become one line naming the server; streaming works."""

import json
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from agent.runtime.llm import sampling
from agent.runtime.remote import RemoteLLM
from retrieval.errors import UserError

QUESTION = "How many mantissa bits does bfloat16 have?"
MESSAGES = [{"role": "user", "content": "Hi"}]
CALLS: dict[str, Callable[[RemoteLLM], object]] = {
    "chat": lambda llm: llm.chat(MESSAGES),
    "stream": lambda llm: "".join(llm.stream(MESSAGES)),
    "count_tokens": lambda llm: llm.count_tokens("Hi"),
}
HTML = b"<html>\n  <body>\n    <h1>Internal   Server Error</h1>\n" + b"<p>x</p>" * 40


def _sse(*events: dict | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def _delta(text: str) -> dict:
    return {"choices": [{"delta": {"content": text}}]}


@pytest.fixture
def silent_url() -> Iterator[str]:
    """The URL of a server that accepts connections and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def _failure(url: str, call: str) -> str:
    with pytest.raises(UserError) as caught:
        CALLS[call](RemoteLLM(url))
    message = str(caught.value)
    assert message.startswith(f"LLM server at {url} ")
    assert "\n" not in message
    return message


@pytest.mark.parametrize("call", CALLS)
def test_a_silent_server_times_out_naming_the_server(silent_url, monkeypatch, call):
    monkeypatch.setenv("BITRAG_LLM_TIMEOUT", "2")
    message = _failure(silent_url, call)
    assert message == f"LLM server at {silent_url} did not answer within 2 s (BITRAG_LLM_TIMEOUT)"


def test_ask_against_a_silent_server_is_one_line(
    run, home_with_sample_index, silent_url, monkeypatch
):
    monkeypatch.setenv("BITRAG_LLM_TIMEOUT", "2")
    result = run("ask", QUESTION, "--llm-url", silent_url)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: LLM server at {silent_url} did not answer")


@pytest.mark.parametrize("call", CALLS)
def test_http_500_with_html_is_one_line_with_the_status(canned, call):
    server = canned(500, HTML, "text/html")
    message = _failure(server.url, call)
    first_80 = "<html> <body> <h1>Internal Server Error</h1> <p>x</p><p>x</p><p>x</p><p>x</p><p>"
    assert message.endswith(f" answered HTTP 500: {first_80}")


@pytest.mark.parametrize("call", ["chat", "count_tokens"])
def test_html_with_status_200_is_not_json(canned, call):
    server = canned(200, HTML, "text/html")
    assert "answered with something not JSON: <html> <body>" in _failure(server.url, call)


@pytest.mark.parametrize(
    ("call", "key"), [("chat", "choices[0].message.content"), ("count_tokens", "tokens")]
)
def test_json_without_the_expected_key_names_the_key(canned, call, key):
    server = canned(200, b'{"foo": 1}', "application/json")
    assert f'answered JSON without {key}: {{"foo": 1}}' in _failure(server.url, call)


def test_a_stream_answered_with_plain_json_is_one_line(canned):
    server = canned(200, b'{"foo": 1}', "application/json")
    assert "not text/event-stream" in _failure(server.url, "stream")


def test_a_stream_event_without_a_delta_names_the_key(canned):
    server = canned(200, _sse(_delta("Hi"), {"foo": 1}, "[DONE]"), "text/event-stream")
    assert "answered JSON without choices[0].delta" in _failure(server.url, "stream")


def test_a_url_that_is_not_http_is_refused(run, home_with_sample_index):
    with pytest.raises(UserError, match="must be an http\\(s\\) URL, not 'ftp://x'"):
        RemoteLLM("ftp://x")
    result = run("ask", QUESTION, "--llm-url", "ftp://x")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: --llm-url (or BITRAG_LLM_URL) must be an http(s) URL, not 'ftp://x'"
    ]


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf"])
def test_a_bad_timeout_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("BITRAG_LLM_TIMEOUT", value)
    with pytest.raises(UserError, match="^BITRAG_LLM_TIMEOUT must be a positive number"):
        RemoteLLM("http://127.0.0.1:9/v1")


def test_streaming_yields_the_server_pieces_with_the_shared_body(canned, monkeypatch):
    monkeypatch.setenv("BITRAG_LLM_API_KEY", "s3cret")
    events = _sse({"choices": [{"delta": {"role": "assistant"}}]}, _delta("Hi"), _delta("Hi"))
    server = canned(200, events + _sse("[DONE]"), "text/event-stream")
    assert "".join(RemoteLLM(f"{server.url}/").stream(MESSAGES, 16, ["\n"])) == "HiHi"
    body = {"messages": MESSAGES, **sampling(16, ["\n"]), "stream": True}
    assert server.received == [("/v1/chat/completions", "Bearer s3cret", body)]


def test_chat_and_token_count_read_the_expected_keys(canned):
    reply = {"choices": [{"message": {"content": "Hello"}}], "tokens": [1, 2, 3]}
    server = canned(200, json.dumps(reply).encode(), "application/json")
    llm = RemoteLLM(server.url)
    assert llm.chat(MESSAGES, 8) == "Hello"
    assert llm.count_tokens("Hello there") == 3
    paths = [path for path, _, _ in server.received]
    assert paths == ["/v1/chat/completions", "/extras/tokenize"]
    assert server.received[1][2] == {"input": "Hello there"}
