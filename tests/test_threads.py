"""llama.cpp thread count: BITRAG_THREADS / --threads, else the cores idle now."""

import json
import multiprocessing
import os
import time

import llama_cpp

from agent.runtime.llm import LocalLLM
from retrieval.threads import idle_cores


def _spin() -> None:
    while True:
        pass


def test_busy_cores_are_not_counted_as_idle():
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(2)]
    for p in spinners:
        p.start()
    try:
        time.sleep(0.5)
        assert idle_cores() <= max(1, (os.cpu_count() or 1) - 2)
    finally:
        for p in spinners:
            p.kill()


def test_configured_threads_reach_llama_cpp(model_path, monkeypatch):
    monkeypatch.setenv("BITRAG_THREADS", "1")
    llm = LocalLLM(model_path)
    assert llm.threads == 1
    assert llama_cpp.llama_n_threads(llm._llama.ctx) == 1
    assert llm.chat([{"role": "user", "content": "Say hi."}], max_tokens=4)


def test_doctor_shows_threads_and_refuses_a_bad_setting(run, monkeypatch):
    result = run("--threads", "1", "doctor", "--json")
    assert json.loads(result.stdout)["llama_cpp"]["threads"] == 1
    monkeypatch.setenv("BITRAG_THREADS", "many")
    result = run("doctor")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: BITRAG_THREADS must be a whole number of threads >= 1, not 'many'"
    ]
