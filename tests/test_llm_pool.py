"""Several model servers behind one --llm-url (agent/runtime/pool.py): two real `bitrag
serve-llm` processes share the requests; one killed with SIGKILL (also in the middle of a
streamed answer) is benched and the other answers; both dead is one line naming both. Tiny
canned servers check that a bad request is not retried and that a silent server is benched.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.runtime.pool import ServerPool, server_llm
from agent.runtime.remote import RemoteLLM
from retrieval.errors import UserError

QUESTION = [{"role": "user", "content": "What is the magic number of a GGUF file?"}]
LONG = [{"role": "user", "content": "Count from 1 to 300, separated by commas."}]
CHAT_LINE = '"POST /v1/chat/completions HTTP/1.1" 200'
README = Path(__file__).resolve().parents[1] / "README.md"


@dataclass
class Server:
    """A `bitrag serve-llm` process on 127.0.0.1 and the file its output goes to."""

    process: subprocess.Popen
    url: str
    log: Path

    def chats(self) -> int:
        """Chat requests the server has answered, counted in its access log."""
        return self.log.read_text(encoding="utf-8", errors="replace").count(CHAT_LINE)

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://").removesuffix("/v1")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(server: Server, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text(errors="replace")[-2000:]
        try:
            with urllib.request.urlopen(f"{server.url}/models", timeout=5):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the server at {server.url} did not come up")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """Two `bitrag serve-llm` (the embedded model, one thread each), stopped after the test."""
    env = os.environ | {"BITRAG_THREADS": "1"}
    started: list[Server] = []
    try:
        for n in range(2):
            port = _free_port()
            log = tmp_path / f"server{n}.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "agent", "serve-llm", "--port", str(port)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            started.append(Server(process, f"http://127.0.0.1:{port}/v1", log))
        for server in started:
            _wait_for(server)
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.kill()


def _pool(servers: list[Server]) -> ServerPool:
    pool = server_llm(",".join(server.url for server in servers))
    assert isinstance(pool, ServerPool)
    return pool


def _killed_mid_stream(pool: ServerPool, servers: list[Server]) -> Server:
    """Start a long streamed answer, SIGKILL its server after the first pieces; the stream
    ends in one line naming that server, with no pieces from another."""
    before = dict(pool.served)
    pieces = pool.stream(LONG, 256)
    received = [next(pieces) for _ in range(3)]
    victim = next(s for s in servers if pool.served[s.url] > before[s.url])
    victim.kill()
    with pytest.raises(UserError) as caught:
        received.extend(pieces)
    assert str(caught.value).startswith(f"LLM server at {victim.url} failed")
    assert "\n" not in str(caught.value)
    assert len(received) < 256
    return victim


def test_requests_spread_and_a_killed_server_is_benched(servers):
    first, second = servers
    pool = _pool(servers)
    replies = {pool.chat(QUESTION, 16) for _ in range(4)}
    assert len(replies) == 1, "the same model and settings give the same text"
    assert pool.served == {first.url: 2, second.url: 2}
    assert first.chats() == second.chats() == 2, "each server's log shows its two requests"
    assert pool.count_tokens("GGUF k-quants") > 0

    victim = _killed_mid_stream(pool, servers)
    survivor = second if victim is first else first
    assert pool.benched() == [victim.url]
    before = dict(pool.served)
    for _ in range(3):
        assert pool.chat(QUESTION, 16) in replies
    assert "".join(pool.stream(QUESTION, 16)) in replies
    assert pool.served[victim.url] == before[victim.url], "a benched server is skipped"
    assert pool.served[survivor.url] == before[survivor.url] + 4

    survivor.kill()
    for call in (lambda: pool.chat(QUESTION, 16), lambda: "".join(pool.stream(QUESTION, 16))):
        with pytest.raises(UserError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith("none of the 2 LLM servers answered: ")
        assert f"LLM server at {first.url} " in message
        assert f"LLM server at {second.url} " in message
        assert "\n" not in message


def test_ask_answers_with_one_server_down(run, home_with_sample_index, servers):
    down, up = servers
    down.kill()
    urls = f"{down.url},{up.url}"
    result = run("ask", "What are the first bytes of a GGUF file?", "--llm-url", urls, "--json")
    assert result.exit_code == 0, result.output
    assert '"answer"' in result.stdout and '"citations"' in result.stdout
    assert up.chats() >= 1


def test_both_servers_down_is_one_cli_line(run, home_with_sample_index, monkeypatch):
    urls = [f"http://127.0.0.1:{_free_port()}/v1" for _ in range(2)]
    monkeypatch.setenv("BITRAG_LLM_URL", ",".join(urls))
    result = run("ask", "What is GGUF?")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: none of the 2 LLM servers answered: ")
    assert all(f"LLM server at {url} is not reachable" in lines[0] for url in urls)


@pytest.mark.parametrize(
    ("urls", "says"),
    [
        ("http://127.0.0.1:1/v1,,http://127.0.0.1:2/v1", "has an empty item in"),
        ("http://127.0.0.1:1/v1,", "has an empty item in"),
        ("http://127.0.0.1:1/v1,ftp://127.0.0.1:2", "must be an http(s) URL, not 'ftp://"),
        ("http://127.0.0.1:1/v1, http://127.0.0.1:1/v1", "names http://127.0.0.1:1/v1 more"),
    ],
)
def test_a_bad_list_is_one_line(urls, says):
    with pytest.raises(UserError) as caught:
        server_llm(urls)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_one_url_stays_a_plain_remote_llm():
    assert type(server_llm(" http://127.0.0.1:1/v1 ")) is RemoteLLM


ANSWER = b'{"choices": [{"message": {"content": "42"}}]}'


def test_a_bad_request_is_not_asked_again_elsewhere(canned):
    refusing, answering = canned(400, b'{"error": "too long"}'), canned(200, ANSWER)
    pool = server_llm(f"{refusing.url},{answering.url}")
    with pytest.raises(UserError, match=f"LLM server at {refusing.url} answered HTTP 400"):
        pool.chat(QUESTION)
    assert answering.requests == 0 and pool.benched() == []


def test_a_slow_or_unavailable_server_is_benched(canned, monkeypatch):
    monkeypatch.setenv("BITRAG_LLM_TIMEOUT", "1")
    slow, busy, answering = (
        canned(200, ANSWER, delay=3.0),
        canned(503, b"busy"),
        canned(200, ANSWER),
    )
    pool = server_llm(f"{slow.url},{busy.url},{answering.url}")
    assert [pool.chat(QUESTION) for _ in range(3)] == ["42"] * 3
    assert sorted(pool.benched()) == sorted([slow.url, busy.url])
    assert (slow.requests, busy.requests, answering.requests) == (1, 1, 3)
