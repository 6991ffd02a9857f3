"""The control-plane pattern of `cohort bench control-plane` in Python, for comparison:
per step, the driver sends one request of PAYLOAD bytes to N workers and gathers N small
replies. Transports: multiprocessing pipes, Ray actor calls, Ray compiled graphs (the
last two only when `ray` is importable). Prints one JSON line per transport.
"""
import argparse
import json
import multiprocessing as mp
import statistics
import time


def percentiles(samples):
    s = sorted(samples)
    pick = lambda p: s[min(len(s) - 1, int(len(s) * p))]
    return {"median_us": pick(0.5), "p90_us": pick(0.9), "p99_us": pick(0.99)}


def pipe_worker(conn):
    while True:
        msg = conn.recv_bytes()
        if msg == b"stop":
            return
        conn.send_bytes(b"ok" + msg[:8])


def bench_pipes(workers, payload, steps, warmup=200):
    conns, procs = [], []
    for _ in range(workers):
        parent, child = mp.Pipe()
        p = mp.Process(target=pipe_worker, args=(child,), daemon=True)
        p.start()
        conns.append(parent)
        procs.append(p)
    msg = bytes(payload)
    lat = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        for c in conns:
            c.send_bytes(msg)
        for c in conns:
            c.recv_bytes()
        if i >= warmup:
            lat.append((time.perf_counter() - t0) * 1e6)
    for c in conns:
        c.send_bytes(b"stop")
    for p in procs:
        p.join()
    return percentiles(lat)


def bench_ray(workers, payload, steps, compiled, warmup=100):
    import ray

    @ray.remote(num_cpus=0)
    class Worker:
        def step(self, msg):
            return b"ok" + msg[:8]

    actors = [Worker.remote() for _ in range(workers)]
    msg = bytes(payload)
    lat = []
    if compiled:
        from ray.dag import InputNode, MultiOutputNode
        with InputNode() as inp:
            dag = MultiOutputNode([a.step.bind(inp) for a in actors])
        graph = dag.experimental_compile()
        run = lambda: ray.get(graph.execute(msg))
    else:
        run = lambda: ray.get([a.step.remote(msg) for a in actors])
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        run()
        if i >= warmup:
            lat.append((time.perf_counter() - t0) * 1e6)
    if compiled:
        graph.teardown()
    for a in actors:
        ray.kill(a)
    return percentiles(lat)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--payload-bytes", type=int, default=4400)
    ap.add_argument("--steps", type=int, default=2000)
    a = ap.parse_args()
    print(json.dumps({"transport": "python-pipes", **bench_pipes(a.workers, a.payload_bytes, a.steps)}))
    try:
        import ray
    except ImportError:
        ray = None
    if ray is not None:
        ray.init(num_cpus=max(2, a.workers), include_dashboard=False, log_to_driver=False)
        print(json.dumps({"transport": "ray-actors", **bench_ray(a.workers, a.payload_bytes, min(a.steps, 500), False)}))
        try:
            print(json.dumps({"transport": "ray-compiled-graph", **bench_ray(a.workers, a.payload_bytes, a.steps, True)}))
        except Exception as e:  # compiled graphs need a recent Ray
            print(json.dumps({"transport": "ray-compiled-graph", "error": str(e)[:200]}))
        ray.shutdown()
