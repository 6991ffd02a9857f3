"""llama.cpp (llama-cpp-python's C API) decoding several sequences at once, as JSON.

The high-level `Llama` class runs one sequence; this drives `llama_decode` directly with a
context of `--sequences` sequences: each prompt is prefilled (timed apart), then every step
decodes one token of every sequence in one batch, each fed its own greedy choice. The
decode speed is the total over the sequences, the work `cohort bench generate --sequences`
times. Medians over the repeats, after one warm-up run.
"""
import argparse
import ctypes
import json
import statistics
import time

import llama_cpp as L
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--prompt-length", type=int, default=128)
p.add_argument("--max-tokens", type=int, default=128)
p.add_argument("--sequences", type=int, default=8)
p.add_argument("--repeat", type=int, default=3)
a = p.parse_args()
S = a.sequences

L.llama_backend_init()
model = L.llama_model_load_from_file(a.model.encode(), L.llama_model_default_params())
if not model:
    raise SystemExit(f"llama.cpp could not load {a.model}")
params = L.llama_context_default_params()
params.n_ctx = S * (a.prompt_length + a.max_tokens + 8)
params.n_batch = 512
params.n_ubatch = 512
params.n_seq_max = S
params.n_threads = a.threads
params.n_threads_batch = a.threads
ctx = L.llama_init_from_model(model, params)
vocab = L.llama_model_get_vocab(model)
n_vocab = L.llama_vocab_n_tokens(vocab)

seed = "The quick brown fox jumps over the lazy dog while the committee debates the budget for 2025. "
text = (seed * (a.prompt_length // 8 + 2)).encode()
buffer = (L.llama_token * (len(text) + 8))()
n = L.llama_tokenize(vocab, text, len(text), buffer, len(buffer), False, False)
prompt = list(buffer[:n])[: a.prompt_length]
batch = L.llama_batch_init(max(len(prompt), S), 0, S)


def submit(entries):
    """entries: (token, position, sequence, wants logits)."""
    batch.n_tokens = len(entries)
    for i, (token, pos, seq, logits) in enumerate(entries):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
    if L.llama_decode(ctx, batch) != 0:
        raise SystemExit("llama_decode failed")


def greedy(i):
    return int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,))))


prefill, decode = [], []
for run in range(a.repeat + 1):
    L.llama_memory_clear(L.llama_get_memory(ctx), True)
    t0 = time.perf_counter()
    tokens = []
    for s in range(S):
        submit([(t, j, s, j == len(prompt) - 1) for j, t in enumerate(prompt)])
        tokens.append(greedy(len(prompt) - 1))
    t1 = time.perf_counter()
    for step in range(a.max_tokens - 1):
        submit([(tokens[s], len(prompt) + step, s, True) for s in range(S)])
        tokens = [greedy(s) for s in range(S)]
    t2 = time.perf_counter()
    if run:
        prefill.append(S * len(prompt) / (t1 - t0))
        decode.append(S * (a.max_tokens - 1) / (t2 - t1))
L.llama_batch_free(batch)
L.llama_free(ctx)
L.llama_model_free(model)
print(json.dumps({"threads": a.threads, "sequences": S, "prefill_tokens_per_s": statistics.median(prefill),
                  "decode_tokens_per_s": statistics.median(decode)}))
