"""Serving load: `seqapp serve` with batching on and off, REST and gRPC, a hot swap under load, a soak.

Exports a sentiment model (the SST-2 BiLSTM that bench/sentiment.py trains in
runs/bench_sentiment/pretrained/sst2_bilstm; if that run is missing, a small BiLSTM trained
here on SST-2 for one epoch), serves it with `seqapp serve` as a separate process
on 127.0.0.1, and drives it with compiled closed-loop load generators, so the
client costs little of the CPU the server needs: REST with `wrk` (`concurrency`
keep-alive connections, one thread; a Lua script POSTs one SST-2 dev sentence per
request, cycling through them), gRPC with `h2load` (`concurrency` HTTP/2
connections, one stream each, one thread; the same pre-framed PredictRequest of a
median-length dev sentence every time, since h2load sends one body). h2load cannot
read gRPC statuses (they ride in trailers), so a cell's gRPC errors are what the
server's own request counter shows as not OK, plus h2load's failed requests.
Each cell runs a warm-up, then measures for `--seconds`: requests/s, p50 and p99
latency, errors, the CPU seconds of the server and of the client tool (both
share this machine's cores), and with batching the mean rows per model call.

Ceiling: the same export loaded in the bench process (`seqapp.serving.servable.load`)
and called by 32 threads through `Servable.run`, batching on (serving/batching.config)
and off, with no transport at all; and the model's own cost per row at batch 1, 8, 32
and 64 (one thread, sequential calls). Batching cannot speed the server up by more
than it speeds these up.

Hot swap: concurrency 32 (half REST, half gRPC, Python clients that see which
version answered) for `--swap-seconds`; after a third of it, version 2 (a copy of
version 1) is published as `seqapp.exporters.publish` does (written to a
dot-folder, renamed into place). Records requests, failed requests, whether and
when gRPC answers came from version 2, and the final model status.

Soak: `--soak-seconds` of wrk and h2load at once (REST and gRPC, `--soak-concurrency`
connections each), a new version published every `--soak-swap-seconds`; records
failed requests, when each new version became the one served, and the server's
resident memory (VmRSS) through the run: growth is the last sample over the one
just before the first swap.

    SEQAPP_DATA_DIR=../shared/data python bench/serving.py                 # -> bench/results/serving.json
    SEQAPP_DATA_DIR=../shared/data python bench/serving.py --quick --out /tmp/serving.json   # a smoke run
"""

import argparse
import http.client
import itertools
import json
import os
import re
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

import common

from seqapp.serving.process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sentiment"
GOALS = {"batching_speedup_at_32": 4.0, "p99_ms_at_32_batching": 50.0, "rest_share_of_model_batch_32_rate": 0.5,
         "mean_rows_per_model_call_at_32": 16.0, "soak_rss_growth": 0.10}
GRPC_PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
# wrk: each connection POSTs the next body of the file (one JSON document a line) and reports its figures as JSON.
WRK_SCRIPT = """\
local bodies = {}
local index = 0
function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  index = math.random(#bodies)
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function request()
  index = index % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[index])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""
DEFAULT_BATCHING = ROOT / "serving" / "batching.config"
# Other BatchingParameters (serving/batching.config with these changes), tried at --alternatives-concurrency.
ALTERNATIVES = {
    "2_threads_1ms": {"num_batch_threads": 2, "batch_timeout_micros": 1000},
    "2_threads_5ms": {"num_batch_threads": 2, "batch_timeout_micros": 5000},
    "1_thread_5ms": {"num_batch_threads": 1, "batch_timeout_micros": 5000},
    "2_threads_10ms": {"num_batch_threads": 2, "batch_timeout_micros": 10000},
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
        model = runner.run_definition(run).model
        source = (f"{run} ({model.family}, embedding {model.embedding_dim}, units {model.units}, "
                  f"{model.num_layers} layer(s), {model.pooling} pooling)")
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


# ---------------------------------------------------------------- compiled load generators

PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client"}
METRICS_PATH = "/monitoring/prometheus/metrics"


def tool(name):
    """The path of load generator `name` (wrk, h2load); exits saying which Debian package holds it if missing."""
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found on PATH: install Debian's {PACKAGES[name]} package "
                         f"(apt-get install {PACKAGES[name]})")
    return path


def children_cpu():
    """User plus system CPU seconds of the finished child processes (the load generators) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LoadFiles:
    """What the load generators send, written once into `work`: the REST bodies (a line each), the wrk
    Lua script, and one gRPC message framed as on the wire (flag byte, 4-byte length, PredictRequest).

    Args:
        work: the folder to write them to.
        texts: the SST-2 dev sentences.
    """

    def __init__(self, work, texts):
        from tensorflow_serving.apis import predict_pb2

        self.bodies = work / "rest_bodies.jsonl"
        self.bodies.write_text("".join(json.dumps({"instances": [text]}) + "\n" for text in texts))
        self.script = work / "rest_post.lua"
        self.script.write_text(WRK_SCRIPT)
        self.grpc_text = sorted(texts, key=len)[len(texts) // 2]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL
        tensor = request.inputs["text"]
        tensor.dtype = 7  # DT_STRING
        tensor.tensor_shape.dim.add().size = 1
        tensor.string_val.append(self.grpc_text.encode("utf-8"))
        request.output_filter.append("probabilities")
        message = request.SerializeToString()
        self.frame = work / "grpc_predict.bin"
        self.frame.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)


def wrk_command(server, files, concurrency, seconds):
    """wrk: `concurrency` keep-alive connections on one thread for `seconds` (whole seconds)."""
    return [tool("wrk"), "-t", "1", "-c", str(concurrency), "-d", f"{int(seconds)}s", "--timeout", "60s",
            "-s", str(files.script), f"{server.rest_url}/v1/models/{MODEL}:predict", "--", str(files.bodies)]


def h2load_command(server, files, concurrency, seconds, warmup, log_path):
    """h2load: `concurrency` HTTP/2 connections with one stream each, one thread, `warmup` + `seconds`.

    `log_path` is removed first: h2load appends to its log, and a cell must read its own requests only.
    """
    Path(log_path).unlink(missing_ok=True)
    return [tool("h2load"), "-c", str(concurrency), "-m", "1", "-t", "1", "-D", str(int(seconds)),
            *([f"--warm-up-time={int(warmup)}"] if warmup else []), "-d", str(files.frame),
            "-H", "content-type: application/grpc", "-H", "te: trailers", f"--log-file={log_path}",
            f"http://{server.grpc_target}{GRPC_PREDICT_PATH}"]


def wrk_figures(output):
    """The figures of wrk's output (the Lua script's WRK_JSON line)."""
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            raw = json.loads(line[len("WRK_JSON "):])
            break
    else:
        raise RuntimeError(f"wrk printed no figures:\n{output[-2000:]}")
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    seconds = raw["duration_us"] / 1e6
    return {"rps": (raw["requests"] - raw["status"]) / seconds, "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "requests": raw["requests"], "errors": errors,
            "error_examples": [f"wrk: {k} {raw[k]}" for k in ("connect", "read", "write", "status", "timeout")
                               if raw[k]], "seconds": round(seconds, 2)}


def h2load_figures(output, log_path, seconds):
    """The figures of h2load's summary and per-request log (start µs, HTTP status, duration µs)."""
    match = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", output)
    if match is None:
        raise RuntimeError(f"h2load printed no summary:\n{output[-2000:]}")
    total, done, succeeded, failed, errored, timeout = map(int, match.groups())
    rows = [line.split("\t") for line in Path(log_path).read_text().splitlines() if line]
    latencies = np.array([int(row[2]) for row in rows]) / 1000
    return {"rps": succeeded / seconds, "succeeded": succeeded,
            "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
            "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
            "requests": done, "errors": failed + errored + timeout + (total - done),
            "error_examples": [f"h2load: {n} {v}" for n, v in (("failed", failed), ("errored", errored),
                                                               ("timeout", timeout)) if v],
            "seconds": float(seconds)}


def not_ok_requests(metrics_text, entrypoint):
    """Requests of the model through `entrypoint` (REST, GRPC) the server counted with a status other than OK."""
    total = 0.0
    for line in metrics_text.splitlines():
        if (line.startswith(":tensorflow:serving:request_count{") and f'model_name="{MODEL}"' in line
                and f'entrypoint="{entrypoint}"' in line and 'status="OK"' not in line):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def run(command, timeout):
    """Runs a load generator; its stdout and stderr as one text. Raises on a non-zero exit."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout + result.stderr


def rest_cell(server, files, args, concurrency):
    run(wrk_command(server, files, concurrency, args.warmup), args.warmup + 120)  # warm-up, not measured
    return wrk_figures(run(wrk_command(server, files, concurrency, args.seconds), args.seconds + 120))


def grpc_cell(server, files, args, concurrency):
    log_path = files.frame.parent / "h2load.log"
    before = get(server, METRICS_PATH)[1]
    output = run(h2load_command(server, files, concurrency, args.seconds, args.warmup, log_path),
                 args.warmup + args.seconds + 120)
    cell = h2load_figures(output, log_path, args.seconds)
    # gRPC errors ride in trailers, which h2load does not read: the server's counter says how many there were
    # (over the warm-up too, so the rps below is a lower bound).
    failed = not_ok_requests(get(server, METRICS_PATH)[1], "GRPC") - not_ok_requests(before, "GRPC")
    if failed:
        cell["error_examples"].append(f"server counted {failed} gRPC requests not OK")
    cell["errors"] += failed
    cell["rps"] = (cell.pop("succeeded") - failed) / args.seconds
    return cell


def run_cells(server, files, args, batching, concurrencies):
    """Every protocol at every concurrency against one running server: `{protocol: {concurrency: cell}}`."""
    results = {"rest": {}, "grpc": {}}
    for protocol, measure in (("rest", rest_cell), ("grpc", grpc_cell)):
        for concurrency in concurrencies:
            before_metrics = get(server, METRICS_PATH)[1] if batching else ""
            server_cpu, client_cpu = server.cpu_seconds(), children_cpu()
            cell = measure(server, files, args, concurrency)
            cell["server_cpu_s"] = round(server.cpu_seconds() - server_cpu, 2)
            cell["client_cpu_s"] = round(children_cpu() - client_cpu, 2)
            if batching:
                calls0, rows0 = batch_stats(before_metrics)
                calls1, rows1 = batch_stats(get(server, METRICS_PATH)[1])
                cell["mean_rows_per_model_call"] = round((rows1 - rows0) / max(calls1 - calls0, 1), 2)
            results[protocol][str(concurrency)] = cell
            print(f"{'on ' if batching else 'off'} {protocol:4} c={concurrency:<3} {cell['rps']:8.1f} req/s  "
                  f"p50 {cell['p50_ms']:7.1f} ms  p99 {cell['p99_ms']:7.1f} ms  errors {cell['errors']}  "
                  f"cpu server {cell['server_cpu_s']} s client {cell['client_cpu_s']} s"
                  + (f"  rows/call {cell['mean_rows_per_model_call']}" if batching else ""), flush=True)
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


def rss_mb(pid):
    """Resident memory (VmRSS) of process `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def served_version(server):
    """The highest AVAILABLE version of the model, or None."""
    status = json.loads(get(server, f"/v1/models/{MODEL}")[1])
    versions = [int(v["version"]) for v in status.get("model_version_status", []) if v["state"] == "AVAILABLE"]
    return max(versions, default=None)


def soak(base, version1, work, files, args):
    """wrk and h2load at once for `--soak-seconds`, a new version every `--soak-swap-seconds` (see the docstring)."""
    from seqapp import exporters

    server = start_server(base, work / "server_soak.log", batching=DEFAULT_BATCHING)
    log_path = work / "h2load_soak.log"
    samples, swaps = [], []
    try:
        before = get(server, METRICS_PATH)[1]
        server_cpu, client_cpu = server.cpu_seconds(), children_cpu()
        loads = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for command in
                 (wrk_command(server, files, args.soak_concurrency, args.soak_seconds),
                  h2load_command(server, files, args.soak_concurrency, args.soak_seconds, 0, log_path))]
        start = time.monotonic()
        next_swap = args.soak_swap_seconds
        version = max(int(path.name) for path in base.iterdir() if path.name.isdigit()) + 1
        while any(load.poll() is None for load in loads):
            now = time.monotonic() - start
            samples.append((round(now, 1), round(rss_mb(server.process.pid), 1)))
            # No swap in the last seconds: its new version must be seen serving before the load ends.
            if now >= next_swap and now < args.soak_seconds - 10:
                exporters.publish(lambda tmp: shutil.copytree(version1, tmp, dirs_exist_ok=True), base, version=version)
                swaps.append({"version": version, "published_s": round(now, 1), "served_after_s": None})
                next_swap += args.soak_swap_seconds
                version += 1
            if swaps and swaps[-1]["served_after_s"] is None and served_version(server) == swaps[-1]["version"]:
                swaps[-1]["served_after_s"] = round(now - swaps[-1]["published_s"], 1)
            time.sleep(1.0)
        outputs = [load.communicate()[0] for load in loads]
        for load, output in zip(loads, outputs):
            if load.returncode != 0:
                raise RuntimeError(f"{load.args[0]} exited with {load.returncode}:\n{output[-2000:]}")
        after = get(server, METRICS_PATH)[1]
        final = json.loads(get(server, f"/v1/models/{MODEL}")[1])
        server_cpu = server.cpu_seconds() - server_cpu
        # Before the server stops: once reaped, its own CPU time joins the children's.
        client_cpu = children_cpu() - client_cpu
    finally:
        server.stop(timeout=30)
    rest, grpc_ = wrk_figures(outputs[0]), h2load_figures(outputs[1], log_path, args.soak_seconds)
    not_ok = {entrypoint: not_ok_requests(after, entrypoint) - not_ok_requests(before, entrypoint)
              for entrypoint in ("REST", "GRPC")}
    baseline = [rss for t, rss in samples if not swaps or t < swaps[0]["published_s"]][-1]
    return {
        "seconds": args.soak_seconds, "swap_every_s": args.soak_swap_seconds,
        "clients": f"wrk {args.soak_concurrency} connections (REST) + h2load {args.soak_concurrency} connections "
                   "(gRPC), at once",
        "rest": {k: rest[k] for k in ("rps", "p50_ms", "p99_ms", "requests", "errors")},
        "grpc": {k: grpc_[k] for k in ("rps", "p50_ms", "p99_ms", "requests", "errors")},
        "server_not_ok_requests": not_ok,
        "failed_requests": rest["errors"] + grpc_["errors"] + not_ok["GRPC"],
        "swaps": swaps,
        "every_new_version_served": bool(swaps) and all(s["served_after_s"] is not None for s in swaps),
        "rss_mb_before_first_swap": baseline, "rss_mb_end": samples[-1][1],
        "rss_mb_max": max(rss for _, rss in samples),
        "rss_growth": round(samples[-1][1] / baseline - 1, 4),
        "rss_mb_samples_every_10": samples[::10],
        "server_cpu_s": round(server_cpu, 2), "client_cpu_s": round(client_cpu, 2),
        "final_status": [(v["version"], v["state"]) for v in final.get("model_version_status", [])],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/bench_sentiment/pretrained/sst2_bilstm", help="trained run folder to export")
    parser.add_argument("--work", default="runs/bench_serving")
    parser.add_argument("--out", default=None, help="the JSON to write (default bench/results/serving.json)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per cell")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured seconds before each cell")
    parser.add_argument("--max-requests", type=int, default=20000,
                        help="measured requests at most per in-process ceiling cell")
    parser.add_argument("--swap-seconds", type=float, default=36.0)
    parser.add_argument("--soak-seconds", type=int, default=300)
    parser.add_argument("--soak-swap-seconds", type=int, default=60)
    parser.add_argument("--soak-concurrency", type=int, default=16, help="connections of each load generator")
    parser.add_argument("--alternatives-concurrency", type=int, nargs="+", default=[1, 8, 32],
                        help="the concurrencies the other batching parameters are tried at")
    parser.add_argument("--no-alternatives", dest="alternatives", action="store_false",
                        help="skip the other batching parameters (batching_alternatives)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: concurrency 1 and 32, 3 s cells, no alternatives, 12 s hot swap, "
                             "40 s soak with a swap every 12 s")
    parser.add_argument("--shared-machine", default="",
                        help="a note for the JSON when other work shares the machine's cores during the run")
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.seconds, args.warmup, args.alternatives = [1, 32], 3, 1, False
        args.swap_seconds, args.soak_seconds, args.soak_swap_seconds = 12.0, 40, 12
    for name in PACKAGES:
        tool(name)  # missing tools stop the bench before anything runs
    work = ROOT / args.work
    work.mkdir(parents=True, exist_ok=True)
    base, version1, source = prepare_model(args, work)
    texts = sentences()
    files = LoadFiles(work, texts)
    bodies = [json.dumps({"instances": [text]}).encode("utf-8") for text in texts]
    figures = {"rest": {}, "grpc": {}, "ceiling_in_process": ceiling(version1, args, texts)}
    for batching in (DEFAULT_BATCHING, None):
        server = start_server(base, work / f"server_batching_{'on' if batching else 'off'}.log", batching)
        try:
            cells = run_cells(server, files, args, batching is not None, args.concurrency)
        finally:
            server.stop(timeout=30)
        key = "batching_on" if batching else "batching_off"
        for protocol, per_concurrency in cells.items():
            for concurrency, cell in per_concurrency.items():
                figures[protocol].setdefault(concurrency, {})[key] = cell
    if args.alternatives:
        figures["batching_alternatives"] = {}
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
                cells = run_cells(server, files, args, True, args.alternatives_concurrency)
            finally:
                server.stop(timeout=30)
            figures["batching_alternatives"][name] = {"changes": changes, **cells}
    figures["hot_swap"] = hot_swap(base, version1, work, args, texts, bodies)
    print(f"hot swap: {figures['hot_swap']}", flush=True)
    figures["soak"] = soak(base, version1, work, files, args)
    print(f"soak: {figures['soak']}", flush=True)
    figures["goals"] = goals(figures)
    figures["settings"] = {
        "model": source,
        "export": str(version1),
        "requests": "REST: one SST-2 dev sentence per request ({'instances': [text]}, 872 sentences cycled); "
                    f"gRPC: one PredictRequest of the median-length dev sentence ({files.grpc_text!r}) with "
                    "output_filter ['probabilities'], sent again and again",
        "batching_on": "serving/batching.config: " + "; ".join(
            line for line in DEFAULT_BATCHING.read_text().splitlines() if line and not line.startswith("#")),
        "batching_off": "--enable_batching=false",
        "batching_alternatives": "serving/batching.config with the listed changes, at the concurrencies listed",
        "ceiling_in_process": "the export loaded in the bench process; 32 threads call Servable.run with "
                              "serving/batching.config's BatchScheduler (on) or none (off): no HTTP, no gRPC; "
                              "model_ms_per_row_one_thread: sequential calls of 1, 8, 32, 64 dev sentences",
        "server": "python -m seqapp serve, 127.0.0.1 (uvicorn + httptools + uvloop for REST, grpc.aio for gRPC, "
                  "both on one event loop with the batch schedulers)",
        "client_tool": {"rest": f"wrk ({tool('wrk')}): -t 1 -c <concurrency>, Lua script POSTing the bodies in turn",
                        "grpc": f"h2load ({tool('h2load')}, nghttp2-client): -t 1 -c <concurrency> -m 1, "
                                "a pre-framed gRPC message; errors from the server's request counter"},
        "cell": f"{args.warmup} s warm-up, then {args.seconds} s measured; rps counts successful requests; "
                "server_cpu_s and client_cpu_s (the load generator's) span warm-up and measurement",
        "hot_swap": f"{args.swap_seconds} s at concurrency 32 (Python clients: 16 REST threads, 16 gRPC threads, "
                    "which see the answering version); version 2 (a copy of version 1) published after "
                    f"{args.swap_seconds / 3:.0f} s via seqapp.exporters.publish; file_system_poll_wait_seconds 1",
        "soak": f"{args.soak_seconds} s of wrk and h2load at once, {args.soak_concurrency} connections each; a copy "
                f"of version 1 published as the next version every {args.soak_swap_seconds} s; RSS growth is the "
                "last sample over the last one before the first swap",
        "shared_cpu": f"client and server run on the same {os.cpu_count()} cores: server_cpu_s and client_cpu_s "
                      "per cell show how they split them",
        "shared_machine": args.shared_machine or "no other load noted",
    }
    if args.out:
        path = Path(args.out)
        path.write_text(json.dumps({**figures, "environment": common.environment()}, indent=2) + "\n")
        print(f"wrote {path}")
    else:
        common.write("serving", figures)


def goals(figures):
    """The issue's goals, each with the figure it is judged on."""
    result = {}
    model_rate_32 = 1000 / figures["ceiling_in_process"]["model_ms_per_row_one_thread"]["32"]
    for protocol in ("rest", "grpc"):
        cell = figures[protocol].get("32")
        if cell is None:
            continue
        speedup = cell["batching_on"]["rps"] / cell["batching_off"]["rps"]
        result[f"{protocol}_speedup_at_32"] = round(speedup, 2)
        result[f"{protocol}_speedup_at_32_ge_4"] = speedup >= GOALS["batching_speedup_at_32"]
        p99 = cell["batching_on"]["p99_ms"]
        result[f"{protocol}_p99_ms_at_32_batching"] = round(p99, 1)
        result[f"{protocol}_p99_at_32_le_50ms"] = p99 <= GOALS["p99_ms_at_32_batching"]
        rows = cell["batching_on"]["mean_rows_per_model_call"]
        result[f"{protocol}_mean_rows_per_model_call_at_32"] = rows
        result[f"{protocol}_mean_rows_at_32_ge_16"] = rows >= GOALS["mean_rows_per_model_call_at_32"]
    if "32" in figures["rest"]:
        share = figures["rest"]["32"]["batching_on"]["rps"] / model_rate_32
        result["model_rows_per_s_at_batch_32_one_thread"] = round(model_rate_32, 1)
        result["rest_at_32_share_of_model_batch_32_rate"] = round(share, 3)
        result["rest_at_32_share_ge_half"] = share >= GOALS["rest_share_of_model_batch_32_rate"]
    result["in_process_ceiling_speedup_at_32"] = figures["ceiling_in_process"]["speedup_at_32"]
    result["hot_swap_zero_failures"] = figures["hot_swap"]["failed_requests"] == 0
    result["hot_swap_new_version_seen"] = figures["hot_swap"]["new_version_seen"]
    soak_figures = figures["soak"]
    result["soak_zero_failures"] = soak_figures["failed_requests"] == 0
    result["soak_every_new_version_served"] = soak_figures["every_new_version_served"]
    result["soak_rss_growth"] = soak_figures["rss_growth"]
    result["soak_rss_growth_lt_10pct"] = soak_figures["rss_growth"] < GOALS["soak_rss_growth"]
    return result


if __name__ == "__main__":
    main()
