#!/usr/bin/env python3
"""Closed-loop streaming load on an OpenAI-compatible server: CONCURRENCY clients, each
sending its share of REQUESTS streamed completions one after another. Prints one JSON line:
requests/s, output tokens/s (one streamed chunk with text = one token), TTFT and TPOT p50/p99.
Usage: bench_serve_client.py URL MODEL CONCURRENCY REQUESTS MAX_TOKENS"""
import asyncio
import json
import statistics
import sys
import time

import httpx

url, model, concurrency, requests, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
TOPICS = ["a lighthouse keeper", "a dragon", "a sailor", "a robot", "a gardener", "a baker", "a train driver", "a fisherman"]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else 0.0


async def one(client, i, ttft, tpot, tokens):
    body = {"model": model, "prompt": f"Chapter {i}. Once upon a time, in a land far away, there lived {TOPICS[i % len(TOPICS)]} who",
            "max_tokens": max_tokens, "temperature": 0, "stream": True}
    start = time.perf_counter()
    first = last = None
    count = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                count += 1
    if first is not None:
        ttft.append(first - start)
        if count > 1:
            tpot.append((last - first) / (count - 1))
    tokens.append(count)


async def main():
    ttft, tpot, tokens = [], [], []
    queue = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(client):
        while not queue.empty():
            await one(client, queue.get_nowait(), ttft, tpot, tokens)

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    print(json.dumps({
        "concurrency": concurrency, "requests": requests, "seconds": elapsed,
        "requests_per_s": requests / elapsed, "output_tokens_per_s": sum(tokens) / elapsed,
        "ttft_ms_p50": 1000 * percentile(ttft, 50), "ttft_ms_p99": 1000 * percentile(ttft, 99),
        "tpot_ms_p50": 1000 * percentile(tpot, 50), "tpot_ms_p99": 1000 * percentile(tpot, 99),
        "mean_output_tokens": statistics.mean(tokens) if tokens else 0}))


asyncio.run(main())
