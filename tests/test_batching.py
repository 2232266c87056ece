"""Server-side batching and Prometheus metrics of `seqapp serve` (seqapp/serving/batching.py, metrics.py).

- The scheduler on its own (fake model calls): merging, allowed_batch_sizes padding, variable-length
  padding, large requests, large batch splitting, one bad request in a batch.
- `seqapp serve` processes with batching: batched answers equal unbatched ones element by element (two
  versions of half_plus_two/half_plus_three under an `all` and a `specific` policy, concurrently, over REST
  and gRPC; the tiny sentiment export with texts of mixed lengths), requests really merge (batch-size
  histogram), padded sizes are allowed sizes, request counters count, metrics only at the path
  `--monitoring_config_file` names; SOURCE.md's monitoring row (monitoring_config.txt → `# TYPE` at
  /monitoring/prometheus/metrics) in-process.
- A full queue (max_enqueued_batches=1, one batch thread held inside a gated model): 503 over REST,
  UNAVAILABLE over gRPC (TF Serving's shared batch scheduler); an oversize request: TF Serving's INVALID_ARGUMENT.
- Bad batching/monitoring configs stop the start with an error naming the file.
"""

import json
import random
import re
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from test_serving import TEXTS
from test_serving import config_text
from test_serving import get
from test_serving import post
from test_serving import predict_request
from test_serving import start_server
from test_serving import stubs

from seqapp.errors import SeqappError
from seqapp.serving import batching
from seqapp.serving import metrics
from seqapp.serving.errors import ServingError
from seqapp.serving.process import free_port

RPC_TIMEOUT = 30
METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's (and monitoring_config.txt's)
CUSTOM_METRICS_PATH = "/custom/metrics"  # batch_server's


# ---------------------------------------------------------------- helpers

def metric_samples(text):
    """[(name, {label: value}, float)] of a Prometheus text exposition."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\S+?)(?:\{(.*)\})? (\S+)", line)
        assert match, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        samples.append((match[1], labels, float(match[3])))
    return samples


def metric_sum(text, name, **labels):
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(value for sample, have, value in metric_samples(text)
               if sample == name and all(have.get(k) == v for k, v in labels.items()))


def scrape(rest_url, path=METRICS_PATH):
    import urllib.request

    with urllib.request.urlopen(rest_url + path, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def signature_def(inputs, outputs=("y",)):
    """A SignatureDef with float inputs {name: shape (-1 = unknown)} and float outputs."""
    from tensorflow.core.protobuf import meta_graph_pb2

    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for name, shape in inputs.items():
        info = signature.inputs[name]
        info.name, info.dtype = f"{name}:0", 1
        for size in shape:
            info.tensor_shape.dim.add().size = size
    for name in outputs:
        signature.outputs[name].name, signature.outputs[name].dtype = f"{name}:0", 1
    return signature


class FakeModel:
    """An unbatched model call that records what it is fed: y = 2x. With `hold_first`, the first call
    waits for `release` (the only batch thread is then busy and later requests queue up)."""

    def __init__(self, delay=0.0, reject_negative=False, hold_first=False):
        self.calls = []
        self.delay = delay
        self.reject_negative = reject_negative
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.lock = threading.Lock()

    def __call__(self, signature_name, signature, inputs, outputs):
        with self.lock:
            self.calls.append({k: v.copy() for k, v in inputs.items()})
        assert self.release.wait(30)
        if self.delay:
            time.sleep(self.delay)
        x = inputs["x"]
        if self.reject_negative and (x < 0).any():
            raise ValueError("negative input")
        return {"y": x * 2}


def scheduler(model, **options):
    return batching.BatchScheduler(model, batching.BatchingOptions(**options), "fake", 1)


def wait_until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def behind_a_held_call(batcher, model, name, signature, first, arrays):
    """Runs `first` (held inside the model), then `arrays` from threads started one by one, each once the
    previous one is queued; releases the model and returns the results of `arrays`."""
    results = [None] * len(arrays)

    def call(i, x):
        try:
            results[i] = batcher.run(name, signature, {"x": x}, ["y"])
        except Exception as error:  # noqa: BLE001 - returned for the test to look at
            results[i] = error

    held = threading.Thread(target=batcher.run, args=(name, signature, {"x": first}, ["y"]))
    held.start()
    wait_until(lambda: len(model.calls) == 1)
    threads = []
    for i, x in enumerate(arrays):
        queued = batcher.num_enqueued_tasks()
        threads.append(threading.Thread(target=call, args=(i, x)))
        threads[-1].start()
        wait_until(lambda: batcher.num_enqueued_tasks() > queued)
    model.release.set()
    for thread in [held, *threads]:
        thread.join(30)
    return results


def run_concurrently(fn, args):
    barrier = threading.Barrier(len(args))
    results = [None] * len(args)

    def call(i, arg):
        barrier.wait()
        try:
            results[i] = fn(arg)
        except Exception as error:  # noqa: BLE001 - returned for the test to look at
            results[i] = error

    threads = [threading.Thread(target=call, args=(i, arg)) for i, arg in enumerate(args)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# ---------------------------------------------------------------- the scheduler alone

def test_default_options_are_serving_batching_config():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "serving" / "batching.config"
    assert batching.default_options() == batching.read_options(path)
    options = batching.default_options()
    assert (options.max_batch_size, options.num_batch_threads, options.allowed_batch_sizes[-1]) == (64, 2, 64)


def test_scheduler_merges_concurrent_requests_and_splits_answers_back():
    model = FakeModel(delay=0.01)
    batcher = scheduler(model, max_batch_size=64, batch_timeout_micros=50_000, num_batch_threads=1)
    signature = signature_def({"x": [-1]})
    try:
        inputs = [np.arange(i % 3 + 1, dtype=np.float32) + 10 * i for i in range(16)]
        results = run_concurrently(lambda x: batcher.run("serving_default", signature, {"x": x}, ["y"]), inputs)
    finally:
        batcher.close()
    for x, result in zip(inputs, results):
        np.testing.assert_array_equal(result["y"], x * 2)
    assert len(model.calls) < len(inputs)  # merged
    assert sum(len(call["x"]) for call in model.calls) == sum(len(x) for x in inputs)  # no allowed sizes: no padding


def test_allowed_batch_sizes_pad_with_the_first_row_of_the_last_request_and_slice_it_off():
    model = FakeModel(hold_first=True)
    batcher = scheduler(model, max_batch_size=8, allowed_batch_sizes=(2, 4, 8), batch_timeout_micros=0,
                        num_batch_threads=1)
    signature = signature_def({"x": [-1, 2]})
    first = np.array([[1, 2], [3, 4]], np.float32)
    last = np.array([[5, 6]], np.float32)
    try:
        results = behind_a_held_call(batcher, model, "s", signature, np.zeros((1, 2), np.float32), [first, last])
    finally:
        batcher.close()
    np.testing.assert_array_equal(results[0]["y"], first * 2)
    np.testing.assert_array_equal(results[1]["y"], last * 2)
    assert [len(call["x"]) for call in model.calls] == [2, 4]  # 1 row padded to 2; 3 rows padded to 4
    # 3 real rows, padded to 4 with the first row of the last request
    np.testing.assert_array_equal(model.calls[1]["x"], [[1, 2], [3, 4], [5, 6], [5, 6]])


def test_pad_variable_length_inputs_pads_only_dims_the_signature_leaves_open():
    free, fixed = signature_def({"x": [-1, -1]}), signature_def({"x": [-1, 2]})
    a, b = np.array([[1, 2]], np.float32), np.array([[7, 8, 9]], np.float32)
    model = FakeModel(hold_first=True)
    batcher = scheduler(model, max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1,
                        pad_variable_length_inputs=True)
    try:
        results = behind_a_held_call(batcher, model, "free", free, np.zeros((1, 1), np.float32), [a, b])
    finally:
        batcher.close()
    # Each request padded with the first element of its own tensor (TF Serving's value); outputs keep the
    # padded length (TF Serving does not slice non-batch dims back either).
    np.testing.assert_array_equal(model.calls[1]["x"], [[1, 2, 1], [7, 8, 9]])
    np.testing.assert_array_equal(results[0]["y"], [[2, 4, 2]])
    np.testing.assert_array_equal(results[1]["y"], b * 2)

    model = FakeModel(hold_first=True)
    batcher = scheduler(model, max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1,
                        pad_variable_length_inputs=True)
    try:
        results = behind_a_held_call(batcher, model, "fixed", fixed, np.zeros((1, 2), np.float32), [a, b])
    finally:
        batcher.close()
    # The signature fixes dim 1 at 2: [1, 3] is never padded into a batch with [1, 2]; each runs as it came.
    assert sorted(call["x"].shape for call in model.calls[1:]) == [(1, 2), (1, 3)]
    np.testing.assert_array_equal(results[0]["y"], a * 2)
    np.testing.assert_array_equal(results[1]["y"], b * 2)


@pytest.mark.parametrize("splitting", [False, True])
def test_requests_over_max_batch_size_are_refused_like_tf_serving(splitting):
    model = FakeModel()
    batcher = scheduler(model, max_batch_size=8, enable_large_batch_splitting=splitting,
                        max_execution_batch_size=4 if splitting else 0)
    try:
        with pytest.raises(ServingError) as error:
            batcher.run("s", signature_def({"x": [-1]}), {"x": np.ones(9, np.float32)}, ["y"])
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.message == "Task size 9 is larger than maximum input batch size 8"
        result = batcher.run("s", signature_def({"x": [-1]}), {"x": np.arange(8, dtype=np.float32)}, ["y"])
    finally:
        batcher.close()
    np.testing.assert_array_equal(result["y"], np.arange(8) * 2)
    assert [len(call["x"]) for call in model.calls] == ([4, 4] if splitting else [8])


def test_large_batch_splitting_fills_the_open_batch_and_joins_answers_in_order():
    model = FakeModel(hold_first=True)
    batcher = scheduler(model, max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=4,
                        allowed_batch_sizes=(2, 4), batch_timeout_micros=0, num_batch_threads=1)
    small, large = np.array([100], np.float32), np.arange(7, dtype=np.float32)
    try:
        results = behind_a_held_call(batcher, model, "s", signature_def({"x": [-1]}), np.zeros(1, np.float32),
                                     [small, large])
    finally:
        batcher.close()
    np.testing.assert_array_equal(results[0]["y"], small * 2)
    np.testing.assert_array_equal(results[1]["y"], large * 2)
    # The open batch takes the small request and 3 rows of the large one; the other 4 make the next batch.
    np.testing.assert_array_equal(model.calls[1]["x"], [100, 0, 1, 2])
    np.testing.assert_array_equal(model.calls[2]["x"], [3, 4, 5, 6])
    assert len(model.calls) == 3


def test_a_bad_request_fails_alone_not_its_batch():
    model = FakeModel(reject_negative=True, hold_first=True)
    batcher = scheduler(model, max_batch_size=16, batch_timeout_micros=0, num_batch_threads=1)
    inputs = [np.array([1.0], np.float32), np.array([-1.0], np.float32), np.array([2.0, 3.0], np.float32)]
    try:
        results = behind_a_held_call(batcher, model, "s", signature_def({"x": [-1]}), np.zeros(1, np.float32), inputs)
    finally:
        batcher.close()
    assert isinstance(results[1], ServingError) and results[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert results[1].message == "negative input"
    np.testing.assert_array_equal(results[0]["y"], [2.0])
    np.testing.assert_array_equal(results[2]["y"], [4.0, 6.0])
    assert [len(call["x"]) for call in model.calls] == [1, 4, 1, 1, 2]  # the merged batch, then each alone


def test_unbatchable_requests_run_unbatched_and_close_drains():
    model = FakeModel()
    batcher = scheduler(model, max_batch_size=2, num_batch_threads=1)
    signature = signature_def({"x": [], "z": [-1]})
    scalar = {"x": np.array(3.0, np.float32), "z": np.ones(5, np.float32)}  # no batch dim, 5 rows > max 2
    assert float(batcher.run("s", signature, scalar, ["y"])["y"]) == 6.0
    batcher.close()
    batcher.join(10)
    assert batcher.num_enqueued_tasks() == 0
    # After close (version unloaded) a late request still runs, unbatched.
    np.testing.assert_array_equal(batcher.run("s", signature_def({"x": [-1]}), {"x": np.ones(3, np.float32)},
                                              ["y"])["y"], [2, 2, 2])


def test_exposition_is_tf_serving_style():
    server_metrics = metrics.ServerMetrics(known_models=lambda: ["m"])
    for _ in range(3):
        server_metrics.record_request("m", "Predict", "REST", grpc.StatusCode.OK, 0.002)
    server_metrics.record_request("nope", "Predict", "GRPC", grpc.StatusCode.NOT_FOUND, 0.001)
    server_metrics.record_request("m", "GetModelMetadata", "REST", grpc.StatusCode.OK, 0.001)
    server_metrics.record_batch("m", "serving_default", 3, 4)
    text = server_metrics.exposition().decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "_total" not in text and "_created" not in text
    assert metric_sum(text, ":tensorflow:serving:request_count", model_name="m", status="OK") == 3
    assert metric_sum(text, ":tensorflow:serving:request_count", model_name="_unknown", status="NOT_FOUND") == 1
    assert metric_sum(text, ":tensorflow:serving:request_count") == 4  # metadata is not counted
    assert metric_sum(text, ":tensorflow:serving:request_latency_count", model_name="m") == 3
    assert metric_sum(text, ":tensorflow:serving:request_latency_sum", model_name="m") == pytest.approx(6000)
    assert metric_sum(text, ":tensorflow:serving:batching:processed_batch_size_v2", batch_size="4") == 1


# ---------------------------------------------------------------- seqapp serve with batching (processes)

BATCHING = """\
max_batch_size { value: 32 }
batch_timeout_micros { value: 20000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 2 }
allowed_batch_sizes: [1, 2, 4, 8, 16, 32]
pad_variable_length_inputs: true
"""
ALLOWED = {"1", "2", "4", "8", "16", "32"}


@pytest.fixture(scope="module")
def batch_server(testdata, sentiment_export, tmp_path_factory):
    """Versions 1 (half_plus_two: x/2+2) and 2 (half_plus_three: x/2+3) of one base path under an `all`
    policy ("mixed") and a `specific` one ("pinned"), and the tiny sentiment export; batching with a 20 ms
    timeout (merging is certain under concurrency); metrics at CUSTOM_METRICS_PATH (a monitoring config file)."""
    tmp_path = tmp_path_factory.mktemp("batching")
    base = tmp_path / "mixed"
    base.mkdir()
    shutil.copytree(testdata / "saved_model_half_plus_two_cpu" / "00000123", base / "1")
    shutil.copytree(testdata / "saved_model_half_plus_three" / "00000123", base / "2")
    (tmp_path / "batching.config").write_text(BATCHING)
    config = tmp_path / "models.config"
    config.write_text(config_text([
        {"name": "mixed", "base_path": base, "policy": "all {}"},
        {"name": "pinned", "base_path": base, "policy": "specific { versions: 1 versions: 2 }"},
        {"name": "sentiment", "base_path": sentiment_export},
    ]))
    (tmp_path / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{CUSTOM_METRICS_PATH}" }}\n')
    server = start_server(tmp_path, "--model_config_file", config, "--enable_batching", "true",
                          "--batching_parameters_file", tmp_path / "batching.config",
                          "--monitoring_config_file", tmp_path / "monitoring.config")
    yield server
    server.stop()


def test_monitoring_config_file_path_is_where_metrics_are_served(batch_server):
    text = scrape(batch_server.rest_url, CUSTOM_METRICS_PATH)
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    # Only there: the default path is an ordinary (malformed) REST path now.
    status, answer = get(batch_server.rest_url + METRICS_PATH)
    assert status == 400 and "# TYPE" not in json.dumps(answer), (status, answer)


def test_monitoring_config_txt_row_of_source_md(testdata):
    from seqapp.serving import server

    options = _options(testdata, monitoring_config_file=str(testdata / "monitoring_config.txt"))
    model_server = server.ModelServer(options).start()
    try:
        text = scrape(f"http://127.0.0.1:{options.rest_api_port}")
    finally:
        model_server.stop()
    assert "# TYPE" in text
    assert "# TYPE :tensorflow:serving:request_count counter" in text


def test_two_versions_batched_concurrently_answer_like_unbatched(batch_server):
    """Requests to versions 1 and 2 of two models, REST and gRPC, 1 to 5 rows each, all at once: every answer
    is exactly its own version's formula (a batch never mixes versions or requests)."""
    from seqapp.serving.client import GrpcClient

    rng = random.Random(7)
    jobs = []
    for i in range(48):
        model = ("mixed", "pinned")[i % 2]
        version = (1, 2)[(i // 2) % 2]
        rows = [rng.randint(-400, 400) / 4 for _ in range(rng.randint(1, 5))]  # exact in float32
        jobs.append((model, version, rows, ("rest", "grpc")[(i // 4) % 2]))
    before = scrape(batch_server.rest_url, CUSTOM_METRICS_PATH)

    def call(job):
        model, version, rows, transport = job
        if transport == "rest":
            status, answer = post(f"{batch_server.rest_url}/v1/models/{model}/versions/{version}:predict",
                                  {"instances": rows})
            assert status == 200, answer
            return version, answer["predictions"]
        with GrpcClient(batch_server.grpc_target, timeout=RPC_TIMEOUT) as client:
            outputs = client.predict(model, {"x": np.array(rows, np.float32)}, version=version)
        return version, outputs["y"].tolist()

    results = run_concurrently(call, jobs)
    for (model, version, rows, _), result in zip(jobs, results):
        assert not isinstance(result, Exception), result
        offset = 2.0 if version == 1 else 3.0
        expected = (np.array(rows, np.float32) * np.float32(0.5) + np.float32(offset)).tolist()
        assert result == (version, expected), (model, version, rows)
    after = scrape(batch_server.rest_url, CUSTOM_METRICS_PATH)
    calls = rows = 0
    for model in ("mixed", "pinned"):
        calls += metric_sum(after, ":tensorflow:serving:batching:batch_size_count", model_name=model) - \
            metric_sum(before, ":tensorflow:serving:batching:batch_size_count", model_name=model)
        rows += metric_sum(after, ":tensorflow:serving:batching:batch_size_sum", model_name=model) - \
            metric_sum(before, ":tensorflow:serving:batching:batch_size_sum", model_name=model)
    assert rows == sum(len(job[2]) for job in jobs)
    assert calls < len(jobs)  # merged


def test_sentiment_batched_equals_unbatched_element_by_element(batch_server, sentiment_export):
    """Texts of very different lengths (empty to 2,000 tokens, truncated by the model) merged into batches
    must score as each request does alone through the same signature without batching."""
    from seqapp.serving import servable as servable_lib
    from seqapp.serving.client import GrpcClient
    from seqapp.serving.client import RestClient

    base_path = sentiment_export
    version_dir = sorted(p for p in base_path.iterdir() if p.name.isdigit())[-1]
    unbatched = servable_lib.load(version_dir, "sentiment", int(version_dir.name))
    pool = TEXTS + ["an utterly " + "very " * 40 + "good film", "bad", "not good , not bad , just dull"]
    rng = random.Random(11)
    jobs = [(rng.sample(pool, rng.randint(1, 3)), ("rest", "grpc")[i % 2]) for i in range(40)]
    jobs += [([text], "rest") for text in pool]  # single rows: merging shows in the batch sizes
    before = scrape(batch_server.rest_url, CUSTOM_METRICS_PATH)

    def call(job):
        texts, transport = job
        client = RestClient(batch_server.rest_url) if transport == "rest" else GrpcClient(batch_server.grpc_target)
        with client:
            return client.predict("sentiment", {"text": texts})

    results = run_concurrently(call, jobs)
    for (texts, _), result in zip(jobs, results):
        assert not isinstance(result, Exception), result
        alone = unbatched.run("serving_default", {"text": np.array([t.encode() for t in texts], dtype=object)})
        assert result["probabilities"].shape == alone["probabilities"].shape
        # Element by element; the LSTM sees more (masked) padding steps in a batch, and TF's kernels may
        # block a larger matmul differently, so equality is to float32 rounding, not bit for bit.
        np.testing.assert_allclose(result["probabilities"], alone["probabilities"], rtol=1e-5, atol=1e-6)
        assert result["label"].tolist() == alone["label"].tolist()
        assert result["classes"].tolist() == alone["classes"].tolist()
    after = scrape(batch_server.rest_url, CUSTOM_METRICS_PATH)
    name = ":tensorflow:serving:batching:batch_size"
    calls = metric_sum(after, f"{name}_count", model_name="sentiment") - \
        metric_sum(before, f"{name}_count", model_name="sentiment")
    singles = metric_sum(after, f"{name}_bucket", model_name="sentiment", le="1.0") - \
        metric_sum(before, f"{name}_bucket", model_name="sentiment", le="1.0")
    assert calls < len(jobs)  # requests were merged
    assert calls - singles > 0  # some model call had more than one row
    sizes = {labels["batch_size"] for sample, labels, _ in metric_samples(after)
             if sample == ":tensorflow:serving:batching:processed_batch_size_v2"}
    assert sizes and sizes <= ALLOWED  # every model call was padded to an allowed size


def test_request_counters_count_rest_and_grpc_in_one_place(batch_server):
    before = scrape(batch_server.rest_url, CUSTOM_METRICS_PATH)
    count = ":tensorflow:serving:request_count"
    prediction, _, channel = stubs(batch_server.grpc_target)
    with channel:
        for i in range(7):
            assert post(f"{batch_server.rest_url}/v1/models/pinned/versions/1:predict", {"instances": [1.0]})[0] == 200
        for i in range(5):
            prediction.Predict(predict_request("pinned", version=2), RPC_TIMEOUT)
        for i in range(3):
            assert post(f"{batch_server.rest_url}/v1/models/pinned/versions/7:predict", {"instances": [1.0]})[0] == 404
        with pytest.raises(grpc.RpcError):
            prediction.Predict(predict_request("no_such_model"), RPC_TIMEOUT)
        for _ in range(4):  # status and metadata are not counted
            assert get(f"{batch_server.rest_url}/v1/models/pinned")[0] == 200
            assert get(f"{batch_server.rest_url}/v1/models/pinned/metadata")[0] == 200
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
    assert post(f"{batch_server.rest_url}/v1/models/pinned/versions/1:regress", body) == (200, {"results": [42.0]})
    after = scrape(batch_server.rest_url, CUSTOM_METRICS_PATH)

    def delta(name, **labels):
        return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

    assert delta(count, model_name="pinned", API="Predict", entrypoint="REST", status="OK") == 7
    assert delta(count, model_name="pinned", API="Predict", entrypoint="GRPC", status="OK") == 5
    assert delta(count, model_name="pinned", API="Predict", entrypoint="REST", status="NOT_FOUND") == 3
    assert delta(count, model_name="_unknown", API="Predict", entrypoint="GRPC", status="NOT_FOUND") == 1
    assert delta(count, model_name="pinned", API="Regress", entrypoint="REST", status="OK") == 1
    assert delta(count) == 7 + 5 + 3 + 1 + 1
    assert delta(":tensorflow:serving:request_latency_count", model_name="pinned", API="Predict",
                 entrypoint="REST") == 7  # latency of successful requests, as TF Serving
    assert delta(":tensorflow:serving:request_latency_count", model_name="pinned", API="Predict",
                 entrypoint="GRPC") == 5


# ---------------------------------------------------------------- a full queue (in-process server, gated model)

@pytest.fixture
def gated_server(testdata, tmp_path, monkeypatch):
    from seqapp.serving import servable as servable_lib
    from seqapp.serving import server

    class Gate(servable_lib.Servable):
        """half_plus_two's signatures; `_run` waits for `gate`."""

        kind = "test-gate"

        def __init__(self, *args):
            super().__init__(*args)
            self.gate = threading.Event()
            self.entered = threading.Event()

        def _run(self, name, signature, inputs, outputs):
            self.entered.set()
            assert self.gate.wait(60)
            return {"y": inputs["x"] * np.float32(0.5) + np.float32(2.0)}

    def load(path, name="", version=0, tags=servable_lib.SERVE_TAGS):
        return Gate(name, version, path, servable_lib.read_meta_graph(path, tags))

    monkeypatch.setattr(servable_lib, "load", load)
    (tmp_path / "batching.config").write_text("max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\n"
                                              "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n")
    options = server.ServerOptions(port=free_port(), rest_api_port=free_port(), model_name="gate",
                                   model_base_path=str(testdata / "saved_model_half_plus_two_cpu"),
                                   file_system_poll_wait_seconds=0,
                                   batching_parameters_file=str(tmp_path / "batching.config"))
    model_server = server.ModelServer(options).start()
    gate = model_server.manager.servable("gate")
    model_server.url = f"http://127.0.0.1:{options.rest_api_port}"
    model_server.target = f"127.0.0.1:{options.port}"
    yield model_server, gate
    gate.gate.set()
    model_server.stop()


def test_full_queue_is_503_over_rest_and_unavailable_over_grpc(gated_server):
    model_server, gate = gated_server
    url = f"{model_server.url}/v1/models/gate:predict"
    prediction, _, channel = stubs(model_server.target)
    answers = {}
    with channel:
        first = threading.Thread(target=lambda: answers.update(a=post(url, {"instances": [1.0]})))
        first.start()
        assert gate.entered.wait(30)  # the only batch thread now holds request a inside the model
        second = threading.Thread(target=lambda: answers.update(
            b=prediction.Predict(predict_request("gate", x=2.0), RPC_TIMEOUT)))
        second.start()
        deadline = time.monotonic() + 30
        while gate.batcher.num_enqueued_tasks() < 1:  # b fills the one batch the queue may hold
            assert time.monotonic() < deadline
            time.sleep(0.01)

        status, answer = post(url, {"instances": [3.0]})
        assert status == 503
        assert answer["error"] == "The batch scheduling queue to which this task was submitted is full"
        with pytest.raises(grpc.RpcError) as error:
            prediction.Predict(predict_request("gate", x=3.0), RPC_TIMEOUT)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "queue to which this task was submitted is full" in error.value.details()

        gate.gate.set()
        first.join(30)
        second.join(30)
        assert answers["a"] == (200, {"predictions": [2.5]})
        assert list(answers["b"].outputs["y"].float_val) == [3.0]

        # More rows than max_batch_size: TF Serving's INVALID_ARGUMENT.
        status, answer = post(url, {"instances": [1.0, 2.0]})
        assert (status, answer) == (400, {"error": "Task size 2 is larger than maximum input batch size 1"})
        request = predict_request("gate")
        request.inputs["x"].float_val.append(5.0)
        request.inputs["x"].tensor_shape.dim[0].size = 2
        with pytest.raises(grpc.RpcError) as error:
            prediction.Predict(request, RPC_TIMEOUT)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    text = scrape(model_server.url)  # no --monitoring_config_file: metrics at the default path
    count = ":tensorflow:serving:request_count"
    assert metric_sum(text, count, model_name="gate", entrypoint="REST", status="UNAVAILABLE") == 1
    assert metric_sum(text, count, model_name="gate", entrypoint="GRPC", status="UNAVAILABLE") == 1
    assert metric_sum(text, count, model_name="gate", status="OK") == 2
    assert metric_sum(text, count, model_name="gate", status="INVALID_ARGUMENT") == 2


# ---------------------------------------------------------------- configs

def _options(testdata, **kwargs):
    from seqapp.serving import server

    return server.ServerOptions(port=0, rest_api_port=free_port(), model_name="default",
                                model_base_path=str(testdata / "saved_model_half_plus_two_cpu"), **kwargs)


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 64 }\nbatch_timeout { value: 1 }\n", ':2:1: not a valid BatchingParameters text '
                                                                   'proto: Message type "tensorflow.serving.'
                                                                   'BatchingParameters" has no field named '
                                                                   '"batch_timeout".'),
    ("max_batch_size { value: 64 }\nallowed_batch_sizes: [8, 32]\n",
     "the last allowed_batch_sizes entry must equal max_batch_size; it is 32, max_batch_size is 64"),
    ("max_batch_size { value: 8 }\nnum_batch_threads { value: 0 }\n", "num_batch_threads must be positive, not 0"),
    ("max_batch_size { value: 8 }\nenable_large_batch_splitting { value: true }\n"
     "max_execution_batch_size { value: 16 }\n", "max_execution_batch_size 16 exceeds max_batch_size 8"),
])
def test_bad_batching_parameters_stop_the_start(testdata, tmp_path, text, message):
    from seqapp.serving import server

    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(SeqappError) as error:
        server.ModelServer(_options(testdata, batching_parameters_file=str(path))).start()
    assert str(error.value).startswith(f"--batching_parameters_file: {path}")
    assert message in str(error.value)


def test_other_config_errors_stop_the_start(testdata, tmp_path):
    from seqapp.serving import server

    with pytest.raises(SeqappError, match="cannot read the BatchingParameters file"):
        server.ModelServer(_options(testdata, batching_parameters_file=str(tmp_path / "missing"))).start()
    (tmp_path / "batching.config").write_text("max_batch_size { value: 8 }\n")
    with pytest.raises(SeqappError, match="--enable_batching is false"):
        server.ModelServer(_options(testdata, enable_batching=False,
                                    batching_parameters_file=str(tmp_path / "batching.config"))).start()
    (tmp_path / "monitoring.config").write_text("prometheus_config { enable: true path: 'metrics' }\n")
    with pytest.raises(SeqappError, match="must be an absolute URL path"):
        server.ModelServer(_options(testdata, monitoring_config_file=str(tmp_path / "monitoring.config"))).start()
    (tmp_path / "monitoring.config").write_text("prometheus { enable: true }\n")
    with pytest.raises(SeqappError, match=r"--monitoring_config_file: .*monitoring.config:1:1: not a valid "
                                          "MonitoringConfig"):
        server.ModelServer(_options(testdata, monitoring_config_file=str(tmp_path / "monitoring.config"))).start()


def test_batching_off_and_monitoring_off(testdata, tmp_path):
    import urllib.error
    import urllib.request

    from seqapp.serving import server

    (tmp_path / "monitoring.config").write_text("prometheus_config { enable: false }\n")
    options = _options(testdata, enable_batching=False, monitoring_config_file=str(tmp_path / "monitoring.config"))
    model_server = server.ModelServer(options).start()
    try:
        assert model_server.manager.servable("default").batcher is None
        url = f"http://127.0.0.1:{options.rest_api_port}"
        assert post(f"{url}/v1/models/default:predict", {"instances": [2.0, 3.0]}) == \
            (200, {"predictions": [3.0, 3.5]})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(url + METRICS_PATH, timeout=30)
        assert error.value.code == 400  # an ordinary malformed REST path now
    finally:
        model_server.stop()


def test_cli_reports_a_bad_batching_file_without_a_traceback(testdata, tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: -1 }\n")
    result = subprocess.run([sys.executable, "-m", "seqapp", "serve", "--model_base_path",
                             str(testdata / "saved_model_half_plus_two_cpu"), "--port", "0", "--rest_api_port",
                             str(free_port()), "--batching_parameters_file", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"seqapp: error: --batching_parameters_file: {path}: max_batch_size must be positive, not -1" in \
        result.stderr
    assert "Traceback" not in result.stderr


def test_serve_flags_default_to_batching_and_metrics():
    from seqapp import cli
    from seqapp.serving import server

    parser = cli.build_parser()
    args = parser.parse_args(["serve", "--model_base_path", "x"])
    assert (args.enable_batching, args.batching_parameters_file, args.monitoring_config_file) == (True, None, None)
    assert parser.parse_args(["serve", "--enable_batching=false"]).enable_batching is False
    assert parser.parse_args(["serve", "--enable_batching"]).enable_batching is True
    options = server.ServerOptions()  # what `seqapp demo` builds
    assert options.enable_batching and not options.batching_parameters_file and not options.monitoring_config_file
