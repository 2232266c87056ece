"""Serving load: `seqapp serve` with batching on and off, REST and gRPC, then a hot swap under load.

Exports a sentiment model (the SST-2 BiLSTM that bench/sentiment.py trains in
runs/bench_sentiment/pretrained/sst2_bilstm; if that run is missing, a small BiLSTM trained
here on SST-2 for one epoch), serves it with `seqapp serve` as a separate process
on 127.0.0.1, and drives it with closed-loop clients: `concurrency` threads, each
sending one SST-2 dev sentence per request and the next one as soon as the
answer is in (REST: one persistent HTTP/1.1 connection per thread, bodies
encoded beforehand; gRPC: one channel for all threads, requests built
beforehand). Each cell runs a warm-up, then measures for `--seconds` (at most
`--max-requests` requests): requests/s, p50 and p99 latency, errors, and the
CPU seconds the server and the client used (both share this machine's cores).

Ceiling: the same export loaded in the bench process (`seqapp.serving.servable.load`)
and called by 32 threads through `Servable.run`, batching on (serving/batching.config)
and off, with no transport at all; and the model's own cost per row at batch 1, 8, 32
and 64 (one thread, sequential calls). Batching cannot speed the server up by more
than it speeds these up.

Hot swap: concurrency 32 (half REST, half gRPC) for `--swap-seconds`; after a
third of it, version 2 (a copy of version 1) is published as
`seqapp.exporters.publish` does (written to a dot-folder, renamed into place).
Records requests, failed requests, whether and when gRPC answers came from
version 2, and the final model status.

    SEQAPP_DATA_DIR=../shared/data python bench/serving.py
"""

import argparse
import http.client
import itertools
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np

import common

from seqapp.serving.process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sentiment"
GOALS = {"batching_speedup_at_32": 4.0, "p99_ms_at_32_batching": 100.0}
DEFAULT_BATCHING = ROOT / "serving" / "batching.config"
# Other BatchingParameters tried at concurrency 32 only (serving/batching.config with these changes).
ALTERNATIVES = {
    "1_thread_1ms": {"num_batch_threads": 1, "batch_timeout_micros": 1000},
    "1_thread_5ms": {"num_batch_threads": 1, "batch_timeout_micros": 5000},
    "2_threads_5ms": {"num_batch_threads": 2, "batch_timeout_micros": 5000},
    # Batches run at their own size: no rows of padding (on a CPU, padding is only extra work).
    "no_allowed_batch_sizes": {"allowed_batch_sizes": None},
}


# ---------------------------------------------------------------- model and data

def prepare_model(args, work):
    """Exports the model as version 1 of `work/models/sentiment`; returns (base_path, description)."""
    from seqapp import config
    from seqapp import runner

    run = Path(args.run)
    if (run / "best.keras").exists() and (run / "metrics.json").exists():
        source = f"{run} (bench/sentiment.py's SST-2 BiLSTM)"
    else:
        run = work / "sst2_small"
        if not (run / "metrics.json").exists():
            definition = config.validate({
                "task": "classification", "seed": 42, "data": {"dataset": "sst2"},
                "tokenizer": {"vocab_size": 4000}, "pipeline": {"max_length": 64, "tokens_per_batch": 2048},
                "model": {"family": "bilstm", "embedding_dim": 64, "units": 32, "dropout": 0.3, "pooling": "max"},
                "train": {"epochs": 1},
            }, source="<bench serving>")
            runner.train(definition, run, verbose=2)
        source = f"{run} (small SST-2 BiLSTM trained here: {args.run} was missing)"
    base = work / "models" / MODEL
    shutil.rmtree(base, ignore_errors=True)
    path = runner.export(run, base, version=1)
    return base, path, source


def sentences():
    lines = (common.data_dir() / "sst2" / "dev.tsv").read_text(encoding="utf-8").split("\n")[1:]
    return [line.split("\t")[0] for line in lines if line]


# ---------------------------------------------------------------- the server

def start_server(base, log_path, batching, poll_seconds=1):
    """`seqapp serve` of the model at `base`, ready; `batching`: a BatchingParameters file, or None for off."""
    args = ["--model_name", MODEL, "--model_base_path", base, "--file_system_poll_wait_seconds", poll_seconds,
            *(["--batching_parameters_file", batching] if batching else ["--enable_batching=false"])]
    try:
        return ServeProcess(args, log_path, cwd=ROOT).wait_ready(timeout=300)
    except RuntimeError as error:
        raise SystemExit(str(error)) from None


def get(server, path):
    """`(status, body text)` of a GET to the server's REST port."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def batch_stats(text):
    """(model calls, rows) of the sentiment model from the metrics text."""
    calls = rows = 0.0
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:batching:batch_size_count{") and f'model_name="{MODEL}"' in line:
            calls += float(line.rsplit(" ", 1)[1])
        if line.startswith(":tensorflow:serving:batching:batch_size_sum{") and f'model_name="{MODEL}"' in line:
            rows += float(line.rsplit(" ", 1)[1])
    return calls, rows


# ---------------------------------------------------------------- clients

class RestCaller:
    def __init__(self, port, bodies):
        self.port = port
        self.bodies = bodies
        self.path = f"/v1/models/{MODEL}:predict"

    def session(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json"}

        def call(i):
            nonlocal connection
            try:
                connection.request("POST", self.path, self.bodies[i % len(self.bodies)], headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                return False, None, f"{type(error).__name__}: {error}"
            if response.status != 200:
                return False, None, f"HTTP {response.status}: {data[:200]!r}"
            return True, None, None

        return call, connection.close


class GrpcCaller:
    def __init__(self, port, texts):
        import grpc
        from tensorflow_serving.apis import predict_pb2
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.grpc = grpc
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.requests = []
        for text in texts:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL
            tensor = request.inputs["text"]
            tensor.dtype = 7  # DT_STRING
            tensor.tensor_shape.dim.add().size = 1
            tensor.string_val.append(text.encode("utf-8"))
            request.output_filter.append("probabilities")
            self.requests.append(request)

    def session(self):
        def call(i):
            try:
                response = self.stub.Predict(self.requests[i % len(self.requests)], timeout=60)
            except self.grpc.RpcError as error:
                return False, None, f"{error.code().name}: {error.details()}"
            return True, response.model_spec.version.value, None

        return call, lambda: None

    def close(self):
        self.channel.close()


class InProcessCaller:
    """`Servable.run` called directly: what the server's work costs without any transport."""

    def __init__(self, servable, texts):
        self.servable = servable
        self.inputs = [{"text": np.array([text.encode("utf-8")], dtype=object)} for text in texts]

    def session(self):
        from seqapp.serving.errors import ServingError

        def call(i):
            try:
                self.servable.run("", self.inputs[i % len(self.inputs)], ["probabilities"])
            except ServingError as error:
                return False, None, f"{error.code.name}: {error.message}"
            return True, self.servable.version, None

        return call, lambda: None


def drive(callers, concurrency, warmup, seconds, max_requests, on_answer=None):
    """Closed-loop load: `concurrency` threads (thread k uses callers[k % len(callers)]) for `warmup` + `seconds`
    (stopping early after `max_requests` measured requests). Returns the measured figures."""
    counter = itertools.count()
    measured = itertools.count()
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    latencies = [[] for _ in range(concurrency)]
    errors = [[] for _ in range(concurrency)]
    done = threading.Event()

    def worker(k):
        call, close = callers[k % len(callers)].session()
        try:
            while not done.is_set():
                i = next(counter)
                t0 = time.perf_counter()
                ok, version, error = call(i)
                t1 = time.perf_counter()
                if on_answer is not None:
                    on_answer(k, ok, version, error, t1)
                if t0 >= measure_from and t1 <= stop_at:
                    latencies[k].append(t1 - t0)
                    if not ok:
                        errors[k].append(error)
                    if next(measured) + 1 >= max_requests:
                        done.set()
                if t1 >= stop_at:
                    break
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(warmup + seconds + 120)
    end = min(time.perf_counter(), stop_at)
    all_latencies = np.array([x for per in latencies for x in per])
    all_errors = [e for per in errors for e in per]
    window = max(end - measure_from, 1e-9)
    ok_count = len(all_latencies) - len(all_errors)
    return {
        "rps": ok_count / window,
        "p50_ms": float(np.percentile(all_latencies, 50) * 1000) if len(all_latencies) else None,
        "p99_ms": float(np.percentile(all_latencies, 99) * 1000) if len(all_latencies) else None,
        "requests": int(len(all_latencies)),
        "errors": len(all_errors),
        "error_examples": sorted(set(all_errors))[:3],
        "seconds": round(window, 2),
    }


def run_cells(server, args, texts, bodies, batching, concurrencies):
    grpc_caller = GrpcCaller(server.grpc_port, texts)
    callers = {"rest": [RestCaller(server.rest_port, bodies)], "grpc": [grpc_caller]}
    results = {"rest": {}, "grpc": {}}
    try:
        for protocol in ("rest", "grpc"):
            for concurrency in concurrencies:
                before_metrics = get(server, "/monitoring/prometheus/metrics")[1] if batching else ""
                server_cpu, client_cpu = server.cpu_seconds(), sum(os.times()[:2])
                cell = drive(callers[protocol], concurrency, args.warmup, args.seconds, args.max_requests)
                cell["server_cpu_s"] = round(server.cpu_seconds() - server_cpu, 2)
                cell["client_cpu_s"] = round(sum(os.times()[:2]) - client_cpu, 2)
                if batching:
                    calls0, rows0 = batch_stats(before_metrics)
                    calls1, rows1 = batch_stats(get(server, "/monitoring/prometheus/metrics")[1])
                    cell["mean_rows_per_model_call"] = round((rows1 - rows0) / max(calls1 - calls0, 1), 2)
                results[protocol][str(concurrency)] = cell
                print(f"{'on ' if batching else 'off'} {protocol:4} c={concurrency:<3} {cell['rps']:8.1f} req/s  "
                      f"p50 {cell['p50_ms']:7.1f} ms  p99 {cell['p99_ms']:7.1f} ms  errors {cell['errors']}"
                      + (f"  rows/call {cell['mean_rows_per_model_call']}" if batching else ""), flush=True)
    finally:
        grpc_caller.close()
    return results


def ceiling(version1, args, texts):
    """Transport-free figures: the model's cost per row by batch size, and concurrency 32 through
    `Servable.run` in this process with batching on and off (see the module docstring)."""
    from seqapp.serving import batching
    from seqapp.serving import servable as servables

    servable = servables.load(version1, MODEL, 1)
    rows = [text.encode("utf-8") for text in texts]
    per_row = {}
    for size in (1, 8, 32, 64):
        calls = max(20, 640 // size)
        batches = [{"text": np.array([rows[(i * size + j) % len(rows)] for j in range(size)], dtype=object)}
                   for i in range(calls)]
        servable.run("", batches[0])  # warm-up
        start = time.perf_counter()
        for inputs in batches:
            servable.run("", inputs, ["probabilities"])
        per_row[str(size)] = round((time.perf_counter() - start) * 1000 / (calls * size), 3)
    figures = {"model_ms_per_row_one_thread": per_row}
    for key, options in (("batching_on", batching.read_options(DEFAULT_BATCHING)), ("batching_off", None)):
        servable.batcher = None if options is None else batching.BatchScheduler(servable._run, options, MODEL, 1)
        cpu = sum(os.times()[:2])
        cell = drive([InProcessCaller(servable, texts)], 32, args.warmup, args.seconds, args.max_requests)
        cell["cpu_s"] = round(sum(os.times()[:2]) - cpu, 2)
        if servable.batcher is not None:
            servable.batcher.close()
            servable.batcher.join(10)
        figures[key] = cell
        print(f"in-process {key} c=32 {cell['rps']:8.1f} req/s  p50 {cell['p50_ms']:7.1f} ms", flush=True)
    figures["speedup_at_32"] = round(figures["batching_on"]["rps"] / figures["batching_off"]["rps"], 2)
    figures["model_speedup_batch_32_over_1"] = round(per_row["1"] / per_row["32"], 2)
    return figures


def hot_swap(base, version1, work, args, texts, bodies):
    from seqapp import exporters

    server = start_server(base, work / "server_hot_swap.log", batching=DEFAULT_BATCHING)
    grpc_caller = GrpcCaller(server.grpc_port, texts)
    first_new = {}
    lock = threading.Lock()
    publish_at = [None]

    totals = {"requests": 0, "failed": 0, "errors": []}

    def on_answer(k, ok, version, error, t):
        with lock:
            totals["requests"] += 1
            if not ok:
                totals["failed"] += 1
                if len(totals["errors"]) < 5:
                    totals["errors"].append(error)
            if version == 2 and "t" not in first_new:
                first_new["t"] = t

    def publisher():
        time.sleep(args.warmup + args.swap_seconds / 3)
        publish_at[0] = time.perf_counter()
        # As `seqapp export` publishes: a complete copy in a dot-folder, renamed into place.
        exporters.publish(lambda tmp: shutil.copytree(version1, tmp, dirs_exist_ok=True), base, version=2)

    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    load_start = time.perf_counter()
    try:
        cell = drive([RestCaller(server.rest_port, bodies), grpc_caller], 32, args.warmup, args.swap_seconds,
                     10 ** 9, on_answer)
        thread.join(60)
        status = json.loads(get(server, f"/v1/models/{MODEL}")[1])
    finally:
        grpc_caller.close()
        server.stop(timeout=30)
    seen = "t" in first_new
    return {
        "concurrency": 32, "clients": "16 REST threads + 16 gRPC threads", "seconds": cell["seconds"],
        # Every answer, warm-up included; rps and latencies are those of the measured window.
        "requests": totals["requests"], "failed_requests": totals["failed"], "error_examples": totals["errors"],
        "rps": cell["rps"], "p50_ms": cell["p50_ms"], "p99_ms": cell["p99_ms"],
        "published_after_load_start_s": round(publish_at[0] - load_start, 2),
        "new_version_seen": seen,
        "new_version_first_answer_after_publish_s": round(first_new["t"] - publish_at[0], 2) if seen else None,
        "final_status": [(v["version"], v["state"]) for v in status.get("model_version_status", [])],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/bench_sentiment/pretrained/sst2_bilstm", help="trained run folder to export")
    parser.add_argument("--work", default="runs/bench_serving")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each cell")
    parser.add_argument("--max-requests", type=int, default=20000, help="measured requests per cell at most")
    parser.add_argument("--swap-seconds", type=float, default=36.0)
    parser.add_argument("--no-alternatives", dest="alternatives", action="store_false",
                        help="skip the other batching parameters tried at concurrency 32")
    args = parser.parse_args()
    work = ROOT / args.work
    work.mkdir(parents=True, exist_ok=True)
    base, version1, source = prepare_model(args, work)
    texts = sentences()
    bodies = [json.dumps({"instances": [text]}).encode("utf-8") for text in texts]
    figures = {"rest": {}, "grpc": {}, "ceiling_in_process": ceiling(version1, args, texts)}
    for batching in (DEFAULT_BATCHING, None):
        server = start_server(base, work / f"server_batching_{'on' if batching else 'off'}.log", batching)
        try:
            cells = run_cells(server, args, texts, bodies, batching is not None, args.concurrency)
        finally:
            server.stop(timeout=30)
        key = "batching_on" if batching else "batching_off"
        for protocol, per_concurrency in cells.items():
            for concurrency, cell in per_concurrency.items():
                figures[protocol].setdefault(concurrency, {})[key] = cell
    if args.alternatives:
        figures["batching_alternatives_at_32"] = {}
        for name, changes in ALTERNATIVES.items():
            path = work / f"batching_{name}.config"
            text = DEFAULT_BATCHING.read_text()
            for field, value in changes.items():
                if value is None:  # the field removed
                    text = re.sub(rf"^{field}\b.*\n", "", text, flags=re.M)
                else:
                    text = re.sub(rf"^{field} {{ value: \d+ }}", f"{field} {{ value: {value} }}", text, flags=re.M)
            path.write_text(text)
            server = start_server(base, work / f"server_batching_{name}.log", path)
            try:
                cells = run_cells(server, args, texts, bodies, True, [32])
            finally:
                server.stop(timeout=30)
            figures["batching_alternatives_at_32"][name] = {
                "changes": changes, **{protocol: cells[protocol]["32"] for protocol in ("rest", "grpc")}}
    figures["hot_swap"] = hot_swap(base, version1, work, args, texts, bodies)
    print(f"hot swap: {figures['hot_swap']}", flush=True)

    def speedup(protocol):
        cell = figures[protocol].get("32")
        return cell["batching_on"]["rps"] / cell["batching_off"]["rps"] if cell else None

    goals = {}
    for protocol in ("rest", "grpc"):
        value = speedup(protocol)
        goals[f"{protocol}_speedup_at_32"] = round(value, 2) if value else None
        goals[f"{protocol}_speedup_at_32_ge_4"] = bool(value and value >= GOALS["batching_speedup_at_32"])
        p99 = figures[protocol].get("32", {}).get("batching_on", {}).get("p99_ms")
        goals[f"{protocol}_p99_ms_at_32_batching"] = round(p99, 1) if p99 else None
        goals[f"{protocol}_p99_at_32_le_100ms"] = bool(p99 is not None and p99 <= GOALS["p99_ms_at_32_batching"])
    goals["in_process_ceiling_speedup_at_32"] = figures["ceiling_in_process"]["speedup_at_32"]
    goals["hot_swap_zero_failures"] = figures["hot_swap"]["failed_requests"] == 0
    goals["hot_swap_new_version_seen"] = figures["hot_swap"]["new_version_seen"]
    figures["goals"] = goals
    figures["settings"] = {
        "model": source,
        "export": str(version1),
        "requests": "one SST-2 dev sentence per request (872 sentences, cycled); REST {'instances': [text]}, "
                    "gRPC PredictRequest with output_filter ['probabilities']",
        "batching_on": "serving/batching.config (max_batch_size 64, batch_timeout_micros 1000, "
                       "max_enqueued_batches 32, num_batch_threads 2, allowed_batch_sizes 1..64 powers of 2)",
        "batching_off": "--enable_batching=false",
        "batching_alternatives_at_32": "serving/batching.config with the listed changes, concurrency 32 only",
        "ceiling_in_process": "the export loaded in the bench process; 32 threads call Servable.run with "
                              "serving/batching.config's BatchScheduler (on) or none (off): no HTTP, no gRPC; "
                              "model_ms_per_row_one_thread: sequential calls of 1, 8, 32, 64 dev sentences",
        "server": "python -m seqapp serve, 127.0.0.1, --rest_api_num_threads 64 --grpc_max_threads 64 (defaults)",
        "client": "closed loop, one process, `concurrency` Python threads; REST: persistent http.client connection "
                  "per thread; gRPC: one channel shared by all threads",
        "cell": f"{args.warmup} s warm-up, then {args.seconds} s measured (at most {args.max_requests} requests); "
                "rps counts successful requests; latencies include failed ones",
        "hot_swap": f"{args.swap_seconds} s at concurrency 32; version 2 (a copy of version 1) published after "
                    f"{args.swap_seconds / 3:.0f} s via seqapp.exporters.publish; file_system_poll_wait_seconds 1",
        "shared_cpu": f"client and server run on the same {os.cpu_count()} cores: server_cpu_s and client_cpu_s "
                      "per cell show how they split them; the client's Python threads are part of the load",
    }
    common.write("serving", figures)


if __name__ == "__main__":
    main()
