"""llama.cpp (llama-cpp-python) prefill and decode speed on a GGUF file, batch 1, as JSON.

Prefill: one `eval` of the prompt. Decode: `max_tokens - 1` single-token evals, each fed
the greedy choice, the same work `cohort bench generate` times. Medians over the repeats,
after one warm-up run.
"""
import argparse
import json
import statistics
import time

import numpy as np
from llama_cpp import Llama

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--prompt-length", type=int, default=128)
p.add_argument("--max-tokens", type=int, default=128)
p.add_argument("--repeat", type=int, default=3)
a = p.parse_args()

llm = Llama(model_path=a.model, n_ctx=a.prompt_length + a.max_tokens + 8, n_threads=a.threads,
            n_threads_batch=a.threads, n_batch=512, verbose=False)
seed = "The quick brown fox jumps over the lazy dog while the committee debates the budget for 2025. "
prompt = llm.tokenize((seed * (a.prompt_length // 8 + 2)).encode(), add_bos=False)[: a.prompt_length]
prefill, decode = [], []
for run in range(a.repeat + 1):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    for _ in range(a.max_tokens - 1):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t2 = time.perf_counter()
    if run:
        prefill.append(len(prompt) / (t1 - t0))
        decode.append((a.max_tokens - 1) / (t2 - t1))
print(json.dumps({"threads": a.threads, "prefill_tokens_per_s": statistics.median(prefill),
                  "decode_tokens_per_s": statistics.median(decode)}))
