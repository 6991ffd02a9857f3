#!/usr/bin/env python3
"""`cohort serve` checked with the clients people use: the `openai` package, raw httpx
streams, and prometheus_client's text parser, against a live server on the reference model.

Usage: test_serve.py [COHORT_BINARY] (default .build/release/cohort). Starts the server on a
free port, runs every check, prints one line per check, stops the server (and its workers)
whatever happens, and exits 1 when any check failed.
"""
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

BINARY = sys.argv[1] if len(sys.argv) > 1 else ".build/release/cohort"
THREADS = os.environ.get("THREADS", "2")


def start_server(*extra):
    process = subprocess.Popen(
        [BINARY, "serve", "--port", "0", "--threads", THREADS, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://[^ ]+:(\d+)/v1", line)
    if not match:
        process.kill()
        raise RuntimeError(f"cohort serve printed no address: {line!r} {process.stderr.read()}")
    return process, int(match.group(1))


def generate(*arguments):
    out = subprocess.run([BINARY, "generate", "--threads", THREADS, "--output", "json", *arguments],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def metrics(base):
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)}
    return families


def value(families, name):
    """A sample's value; the parser names a counter's family without its `_total`."""
    family = families.get(name) or families[name.removesuffix("_total")]
    return sum(s.value for s in family.samples if s.name == name)


PROMPT = "The capital of France is"
CHAT = "What is the capital of Japan?"


def check_completions(client, base):
    reference = generate("--raw", "--prompt", PROMPT, "--temperature", "0", "--max-tokens", "24")
    r = client.completions.create(model=client.model_name, prompt=PROMPT, max_tokens=24, temperature=0, logprobs=3)
    choice = r.choices[0]
    assert choice.text == reference["text"], (choice.text, reference["text"])
    assert r.usage.completion_tokens == len(reference["tokens"]) == len(choice.logprobs.tokens), r.usage
    assert r.usage.prompt_tokens == len(reference["prompt_tokens"]), r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert all(1 <= len(top) <= 3 for top in choice.logprobs.top_logprobs)
    # Greedy: the chosen token is the best alternative.
    assert all(abs(lp - max(top.values())) < 1e-4 for lp, top in zip(choice.logprobs.token_logprobs, choice.logprobs.top_logprobs))


def check_chat(client, base):
    reference = generate("--prompt", CHAT, "--temperature", "0", "--max-tokens", "32")
    r = client.chat.completions.create(model=client.model_name, messages=[{"role": "user", "content": CHAT}],
                                       max_tokens=32, temperature=0, logprobs=True, top_logprobs=2)
    assert r.choices[0].message.content == reference["text"], (r.choices[0].message.content, reference["text"])
    assert r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == len(r.choices[0].logprobs.content) == len(reference["tokens"])
    assert all(len(t.top_logprobs) == 2 for t in r.choices[0].logprobs.content)


def check_streaming(client, base):
    whole = client.chat.completions.create(model=client.model_name, messages=[{"role": "user", "content": CHAT}],
                                           max_tokens=32, temperature=0)
    stream = client.chat.completions.create(model=client.model_name, messages=[{"role": "user", "content": CHAT}],
                                            max_tokens=32, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and all(f is None for f in finishes[:-1]), finishes
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens, (chunks[-1].usage, whole.usage)
    # Completions stream too.
    text = "".join(c.choices[0].text for c in client.completions.create(
        model=client.model_name, prompt=PROMPT, max_tokens=16, temperature=0, stream=True) if c.choices)
    assert text == client.completions.create(model=client.model_name, prompt=PROMPT, max_tokens=16, temperature=0).choices[0].text


def check_n_and_seed(client, base):
    ask = dict(model=client.model_name, prompt="Once upon a time", max_tokens=12, temperature=0.9, n=3, seed=1234, logprobs=1)
    a, b = client.completions.create(**ask), client.completions.create(**ask)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices], "the same seed gave different choices"
    assert a.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in a.choices), a.usage
    assert a.usage.prompt_tokens == len(httpx.post(f"{base}/tokenize", json={"prompt": "Once upon a time"}).json()["tokens"])


def check_stop(client, base):
    r = client.completions.create(model=client.model_name, prompt="1, 2, 3, 4,", max_tokens=40, temperature=0, stop=[" 7"])
    assert " 7" not in r.choices[0].text and r.choices[0].finish_reason == "stop", r.choices[0]


def check_tokenize(client, base):
    t = httpx.post(f"{base}/tokenize", json={"prompt": "hello world"}).json()
    assert t["count"] == len(t["tokens"]) > 0
    assert httpx.post(f"{base}/detokenize", json={"tokens": t["tokens"]}).json()["prompt"] == "hello world"
    models = client.models.list()
    assert models.data[0].id == client.model_name


def stream_raw(base, index):
    """One streamed completion read as raw SSE: its chunks, whether [DONE] ended it."""
    prompt = f"Item {index}:"
    body = {"prompt": prompt, "max_tokens": 16, "temperature": 0, "echo": True, "stream": True, "logprobs": 1,
            "stream_options": {"include_usage": True}}
    events = []
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=300) as r:
        assert r.status_code == 200, r.status_code
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    return prompt, events


def check_concurrent_streams(client, base):
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(lambda i: stream_raw(base, i), range(64)))
    ids = set()
    for prompt, events in results:
        assert events and events[-1] == "[DONE]", f"{prompt}: the stream did not end with [DONE]: {events[-2:]}"
        chunks = [json.loads(e) for e in events[:-1]]
        stream_ids = {c["id"] for c in chunks}
        assert len(stream_ids) == 1, f"{prompt}: chunks of several requests in one stream: {stream_ids}"
        ids |= stream_ids
        # echo: the first chunk is this client's own prompt.
        assert chunks[0]["choices"][0]["text"] == prompt, (prompt, chunks[0])
        tokens = sum(len(c["choices"][0]["logprobs"]["tokens"]) for c in chunks if c["choices"] and c["choices"][0]["logprobs"])
        assert chunks[-1]["usage"]["completion_tokens"] == tokens, (prompt, chunks[-1]["usage"], tokens)
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] in ("length", "stop")
    assert len(ids) == 64, f"{len(ids)} distinct ids for 64 streams"


def check_disconnects(client, base):
    def abandon(i):
        with httpx.stream("POST", f"{base}/v1/completions", timeout=60,
                          json={"prompt": f"Story {i}:", "max_tokens": 2000, "ignore_eos": True, "stream": True}) as r:
            for n, _ in enumerate(r.iter_lines()):
                if n > 6:
                    return  # leaves the block: the connection closes mid-stream
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(abandon, range(4)))
    deadline = time.time() + 10
    while time.time() < deadline:
        m = metrics(base)
        if value(m, "cohort_kv_cache_usage_perc") == 0 and value(m, "cohort_num_requests_running") == 0:
            break
        time.sleep(0.05)
    m = metrics(base)
    assert value(m, "cohort_kv_cache_usage_perc") == 0, value(m, "cohort_kv_cache_usage_perc")
    assert value(m, "cohort_num_requests_running") == 0


def check_metrics(client, base):
    m = metrics(base)
    for name in ["cohort_num_requests_running", "cohort_num_requests_waiting", "cohort_kv_cache_usage_perc",
                 "cohort_prompt_tokens", "cohort_generation_tokens", "cohort_time_to_first_token_seconds",
                 "cohort_time_per_output_token_seconds", "cohort_e2e_request_latency_seconds", "cohort_rank_step_seconds",
                 "cohort_request_success"]:
        assert name in m, f"{name} missing from /metrics; found {sorted(m)}"
    assert value(m, "cohort_generation_tokens_total") > 0
    assert m["cohort_time_to_first_token_seconds"].type == "histogram"


def check_bad_requests(client, base):
    for kwargs, field in [
        (dict(prompt="a", temperature=-1), "temperature"),
        (dict(prompt="a", max_tokens=0), "max_tokens"),
        (dict(prompt="a", top_p=1.5), "top_p"),
        (dict(prompt="a", n=0), "n"),
        (dict(prompt="a", logprobs=50), "logprobs"),
        (dict(prompt="word " * 20000), "prompt"),
    ]:
        try:
            client.completions.create(model=client.model_name, **kwargs)
            raise AssertionError(f"{kwargs} was accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400 and e.body["param"] == field, (kwargs, e.body)
            assert e.body["message"], e.body
    try:
        client.completions.create(model="not-a-model", prompt="a")
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError:
        pass
    raw = httpx.post(f"{base}/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert raw.status_code == 400 and "error" in raw.json()
    assert httpx.get(f"{base}/health").status_code == 200


def check_prompts_file(client, base):
    """The release build of `generate --prompts-file` (the CLI tests run debug): lines named, n choices indexed."""
    lines = '{"prompt": "hi", "max_tokens": 2, "temperature": 0}\r\n\r\n{"prompt": "ok", "max_tokens": 2, "n": 2}\r\n{"prompt": "x", "n": 1.5}\n'
    out = subprocess.run([BINARY, "generate", "--threads", THREADS, "--prompts-file", "/dev/stdin"], input=lines,
                         capture_output=True, text=True)
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 1 and "line 4: 'n' must be an integer, found 1.5" in out.stderr, out.stderr
    assert sorted((r["line"], r.get("index", -1)) for r in results) == [(1, -1), (3, 0), (3, 1), (4, -1)], results
    assert all(len(r["tokens"]) == 2 for r in results if "tokens" in r)


CHECKS = [check_prompts_file, check_completions, check_chat, check_streaming, check_n_and_seed, check_stop, check_tokenize,
          check_concurrent_streams, check_disconnects, check_bad_requests, check_metrics]


def main():
    process, port = start_server()
    base = f"http://127.0.0.1:{port}"
    failures = 0
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
        client.model_name = client.models.list().data[0].id
        for check in CHECKS:
            start = time.time()
            try:
                check(client, base)
                print(f"ok   {check.__name__} ({time.time() - start:.1f} s)", flush=True)
            except Exception:
                failures += 1
                print(f"FAIL {check.__name__}\n{traceback.format_exc()}", flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            failures += 1
            print("FAIL the server did not exit within 30 s of SIGTERM")
    if process.returncode not in (0, None, -9):
        failures += 1
        print(f"FAIL the server exited with {process.returncode}: {process.stderr.read()[-2000:]}")
    print(f"{len(CHECKS) - failures} of {len(CHECKS)} checks passed" if failures == 0 else f"{failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
