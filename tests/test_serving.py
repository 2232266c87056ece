"""`seqapp serve` against TF Serving's own test models and answers (shared/data/tfserving_testdata/SOURCE.md),
over REST and over gRPC with the real `tensorflow-serving-api` stubs; our sentiment export end to end; hot
reload; `seqapp predict`.

Every server is a separate `seqapp serve` process on free ports on 127.0.0.1, killed at the end.

SOURCE.md rows and where they are checked:
- REST :predict row / columnar, :classify, :regress, GET status, GET metadata: test_rest_* (model "default")
- GET /monitoring/prometheus/metrics with monitoring_config.txt: in tests/test_batching.py (with the metrics code)
- gRPC Predict half_plus_two (y = 3.0, version 123): test_grpc_predict_*
- gRPC Predict half_plus_three via good_model_config.txt, and the two-model config: test_good_model_config_*
- gRPC GetModelStatus: test_grpc_get_model_status
- bad_half_plus_two: test_bad_model_*
- the 2-versions metadata files (TF1 and TF2): test_two_versions_*
"""

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from seqapp.serving.process import ServeProcess
from seqapp.serving.process import free_port

RPC_TIMEOUT = 30


# ---------------------------------------------------------------- helpers (also used by test_serving_bad_input)

def start_server(tmp_path, *args, name="server", **kwargs):
    return ServeProcess(args, Path(tmp_path) / f"{name}.log", **kwargs).wait_ready()


def http(method, url, body=None, raw=None, timeout=60, headers=None):
    """`(status, parsed JSON)`; `raw` sends bytes as they are."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def post(url, body=None, **kwargs):
    return http("POST", url, body, **kwargs)


def get(url, **kwargs):
    return http("GET", url, **kwargs)


def stubs(target):
    from tensorflow_serving.apis import model_service_pb2_grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20),
                                                     ("grpc.max_receive_message_length", 64 << 20)])
    return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel), channel)


def predict_request(model, x=2.0, output_filter=("y",), version=None, label=None, signature="", input_name="x"):
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs[input_name].dtype = types_pb2.DT_FLOAT
    request.inputs[input_name].float_val.append(x)
    request.inputs[input_name].tensor_shape.dim.add().size = 1
    request.output_filter.extend(output_filter)
    return request


def wait_for(condition, timeout, message, interval=0.05):
    """Calls `condition` until it returns a true value, and returns that value; fails the test with
    `message` (a string, or a function returning one) if none came within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{message() if callable(message) else message} (waited {timeout} s)")
        time.sleep(interval)


def config_text(models):
    """A ModelServerConfig text proto; `models` are dicts with name, base_path and optional
    policy (text) and labels."""
    parts = []
    for model in models:
        extra = ""
        if model.get("policy"):
            extra += f" model_version_policy {{ {model['policy']} }}"
        for label, version in model.get("labels", {}).items():
            extra += f' version_labels {{ key: "{label}" value: {version} }}'
        parts.append(f'config {{ name: "{model["name"]}" base_path: "{model["base_path"]}" '
                     f'model_platform: "tensorflow"{extra} }}')
    return "model_config_list {\n  " + "\n  ".join(parts) + "\n}\n"


def make_toy_model(base_path, version=1):
    """A TF2 SavedModel with two inputs (`a` float [None, 2], `image_bytes` string [None]) and outputs
    `y` = a @ [[1], [2]], `length` (bytes per string), `echo_bytes` and `echo` (the strings back);
    plus `bytes_only` (one string input)."""
    import tensorflow as tf

    class Toy(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable([[1.0], [2.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, a, image_bytes):
            return {"y": tf.matmul(a, self.w), "length": tf.cast(tf.strings.length(image_bytes), tf.int64),
                    "echo_bytes": image_bytes, "echo": image_bytes}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def bytes_only(self, image_bytes):
            return {"length": tf.cast(tf.strings.length(image_bytes), tf.int64), "echo_bytes": image_bytes}

    toy = Toy()
    path = Path(base_path) / str(version)
    tf.saved_model.save(toy, str(path), signatures={"serving_default": toy.serve, "bytes_only": toy.bytes_only})
    return path


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def default_server(testdata, tmp_path_factory):
    """half_plus_two_cpu as model "default", from flags (TF Serving's own test setup)."""
    server = start_server(tmp_path_factory.mktemp("default"), "--model_name", "default", "--model_base_path",
                          testdata / "saved_model_half_plus_two_cpu", "--rest_api_timeout_in_ms", 5000)
    yield server
    server.stop()


# ---------------------------------------------------------------- REST, SOURCE.md rows

def test_rest_predict_row_format(default_server):
    assert post(f"{default_server.rest_url}/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]}) == \
        (200, {"predictions": [3.0, 3.5, 4.0]})


def test_rest_predict_columnar_format(default_server):
    assert post(f"{default_server.rest_url}/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]}) == \
        (200, {"outputs": [3.0, 3.5, 4.0]})


def test_rest_classify(default_server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert post(f"{default_server.rest_url}/v1/models/default:classify", body) == (200, {"results": [[["", 3.0]]]})


def test_rest_regress(default_server):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert post(f"{default_server.rest_url}/v1/models/default:regress", body) == (200, {"results": [3.0]})


def test_rest_status(default_server):
    expected = {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert get(f"{default_server.rest_url}/v1/models/default") == (200, expected)
    assert get(f"{default_server.rest_url}/v1/models/default/versions/123") == (200, expected)


def test_rest_metadata_equals_tf_serving_file(default_server, testdata):
    expected = json.loads((testdata / "half_plus_two_model_metadata.json").read_text())
    status, answer = get(f"{default_server.rest_url}/v1/models/default/metadata")
    assert status == 200
    assert json.dumps(answer, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert get(f"{default_server.rest_url}/v1/models/default/versions/123/metadata") == (200, expected)


def test_binds_loopback_and_names_never_become_paths(default_server, testdata):
    assert f"gRPC 127.0.0.1:{default_server.grpc_port}, REST http://127.0.0.1:{default_server.rest_port}" in \
        default_server.log_text()
    relative = os.path.relpath(testdata / "saved_model_half_plus_two_cpu", Path.cwd())
    for name in ("..%2F..%2Fdefault", relative.replace("/", "%2F"), "saved_model_half_plus_two_cpu"):
        status, answer = post(f"{default_server.rest_url}/v1/models/{name}:predict", {"instances": [2.0]})
        assert status == 404 and "Servable not found" in answer["error"]


def test_rest_predict_feeds_shapes_unchecked_like_tf_serving(default_server):
    # The signature says x is [-1, 1]; TF Serving feeds [2, 2] and [3] as they are (SOURCE.md note).
    url = f"{default_server.rest_url}/v1/models/default/versions/123:predict"
    assert post(url, {"instances": [[1.0, 2.0], [3.0, 4.0]]}) == (200, {"predictions": [[2.5, 3.0], [3.5, 4.0]]})
    assert post(url, {"signature_name": "serving_default", "inputs": [3.0, 4.0]}) == (200, {"outputs": [3.5, 4.0]})
    # Named row format, integers into a float input, NaN/Infinity tokens in and out.
    assert post(url, {"instances": [{"x": 2}, {"x": 4}]}) == (200, {"predictions": [3.0, 4.0]})
    status, raw = http("POST", url, raw=b'{"instances": [NaN, Infinity]}')
    assert status == 200 and np.isnan(raw["predictions"][0]) and raw["predictions"][1] == float("inf")


# ---------------------------------------------------------------- gRPC, SOURCE.md rows

@pytest.mark.parametrize("output_filter", [("y",), ()], ids=["output_filter", "all_outputs"])
def test_grpc_predict_half_plus_two(default_server, output_filter):
    from tensorflow.core.framework import types_pb2

    prediction, _, channel = stubs(default_server.grpc_target)
    with channel:
        result = prediction.Predict(predict_request("default", output_filter=output_filter), RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [3.0]
    assert result.model_spec.name == "default"
    assert result.model_spec.signature_name == "serving_default"
    assert result.model_spec.version.value == 123


def test_grpc_classify_regress_multi_inference(default_server):
    from tensorflow_serving.apis import classification_pb2
    from tensorflow_serving.apis import inference_pb2
    from tensorflow_serving.apis import regression_pb2

    prediction, _, channel = stubs(default_server.grpc_target)
    with channel:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "default"
        request.model_spec.signature_name = "classify_x_to_y"
        request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
        result = prediction.Classify(request, RPC_TIMEOUT)
        assert len(result.result.classifications) == 1
        assert [c.score for c in result.result.classifications[0].classes] == [3.0]
        assert (result.model_spec.signature_name, result.model_spec.version.value) == ("classify_x_to_y", 123)

        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "default"
        request.model_spec.signature_name = "regress_x_to_y"
        request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
        result = prediction.Regress(request, RPC_TIMEOUT)
        assert [r.value for r in result.result.regressions] == [3.0]
        assert result.model_spec.version.value == 123

        request = inference_pb2.MultiInferenceRequest()
        for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                                  ("classify_x_to_y", "tensorflow/serving/classify")):
            task = request.tasks.add()
            task.model_spec.name = "default"
            task.model_spec.signature_name = signature
            task.method_name = method
        request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
        result = prediction.MultiInference(request, RPC_TIMEOUT)
        assert result.results[0].regression_result.regressions[0].value == 3.0
        assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
        assert [r.model_spec.version.value for r in result.results] == [123, 123]


def test_grpc_get_model_status(default_server):
    from tensorflow_serving.apis import get_model_status_pb2

    _, models, channel = stubs(default_server.grpc_target)
    with channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "default"
        result = models.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    assert result.model_version_status[0].status.error_code == 0
    assert result.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


def test_grpc_metadata_equals_tf_serving_file(default_server, testdata):
    from seqapp.serving.client import GrpcClient
    from seqapp.serving.client import RestClient

    expected = json.loads((testdata / "half_plus_two_model_metadata.json").read_text())
    with GrpcClient(default_server.grpc_target) as client:
        assert client.metadata("default") == expected
        assert client.status("default") == RestClient(default_server.rest_url).status("default")


def test_grpc_errors_have_tf_serving_codes(default_server):
    prediction, _, channel = stubs(default_server.grpc_target)
    with channel:
        with pytest.raises(grpc.RpcError) as missing:
            prediction.Predict(predict_request("intentionally_missing_model"), RPC_TIMEOUT)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "Servable" in missing.value.details()  # what TF Serving's own readiness probe looks for
        with pytest.raises(grpc.RpcError) as version:
            prediction.Predict(predict_request("default", version=7), RPC_TIMEOUT)
        assert version.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as signature:
            prediction.Predict(predict_request("default", signature="nope"), RPC_TIMEOUT)
        assert signature.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_clients_share_one_interface(default_server):
    from seqapp.serving.client import GrpcClient
    from seqapp.serving.client import RestClient

    for client in (RestClient(default_server.rest_url), GrpcClient(default_server.grpc_target)):
        with client:
            out = client.predict("default", [[2.0], [4.0]])
            assert set(out) == {"y"} and out["y"].dtype == np.float32
            np.testing.assert_array_equal(out["y"], [[3.0], [4.0]])
            assert client.predict("default", {"x": [[1.0]]}, version=123)["y"].tolist() == [[2.5]]
            assert client.classify("default", [{"x": 2.0}], signature_name="classify_x_to_y") == [[("", 3.0)]]
            assert client.regress("default", [{"x": 2.0}, {"x": 4.0}], signature_name="regress_x_to_y") == [3.0, 4.0]
            assert client.status("default")["model_version_status"][0]["state"] == "AVAILABLE"


# ---------------------------------------------------------------- model config files

def test_good_model_config_serves_both_models(testdata, tmp_path):
    template = (testdata / "good_model_config.txt").read_text()
    config = tmp_path / "good_model_config.conf"
    config.write_text(template.replace("${TEST_HALF_PLUS_TWO_DIR}", str(testdata / "saved_model_half_plus_two_cpu"))
                      .replace("${TEST_HALF_PLUS_THREE_DIR}", str(testdata / "saved_model_half_plus_three")))
    server = start_server(tmp_path, "--model_config_file", config)
    try:
        prediction, _, channel = stubs(server.grpc_target)
        with channel:
            for model, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
                for output_filter in (("y",), ()):
                    result = prediction.Predict(predict_request(model, output_filter=output_filter), RPC_TIMEOUT)
                    assert list(result.outputs["y"].float_val) == [expected]
                    assert result.model_spec.version.value == 123
        assert post(f"{server.rest_url}/v1/models/half_plus_three:predict", {"instances": [2.0]}) == \
            (200, {"predictions": [4.0]})
        assert post(f"{server.rest_url}/v1/models/half_plus_two:predict", {"instances": [2.0]}) == \
            (200, {"predictions": [3.0]})
    finally:
        server.stop()


def test_bad_model_config_file_is_refused(testdata, tmp_path):
    result = subprocess.run([sys.executable, "-m", "seqapp", "serve", "--port", str(free_port()),
                             "--model_config_file", str(testdata / "bad_model_config.txt")],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 2
    assert f"Invalid protobuf file: '{testdata / 'bad_model_config.txt'}'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def versions_server(testdata, tmp_path_factory):
    """TF Serving's http_rest_api_handler_test setup: the 2-versions model pinned to 123 with a label; the
    same model with all versions; the TF2 half_plus_two."""
    tmp_path = tmp_path_factory.mktemp("versions")
    config = tmp_path / "models.config"
    two = testdata / "saved_model_half_plus_two_2_versions"
    config.write_text(config_text([
        {"name": "saved_model_half_plus_two_2_versions", "base_path": two, "policy": "specific { versions: 123 }",
         "labels": {"Version_Label": 123}},
        {"name": "all_versions", "base_path": two, "policy": "all {}"},
        {"name": "tf2", "base_path": testdata / "saved_model_half_plus_two_tf2_cpu"},
    ]))
    server = start_server(tmp_path, "--model_config_file", config)
    yield server
    server.stop()


def test_two_versions_metadata_equals_tf_serving_file(versions_server, testdata):
    expected = json.loads((testdata / "saved_model_half_plus_two_2_versions_metadata.json").read_text())
    assert get(f"{versions_server.rest_url}/v1/models/saved_model_half_plus_two_2_versions/metadata") == \
        (200, expected)


def _without_defaults(metadata):
    for signature in metadata["metadata"]["signature_def"]["signature_def"].values():
        signature.pop("defaults", None)
    return metadata


def test_two_versions_tf2_metadata_equals_tf_serving_file(versions_server, testdata):
    # TF Serving's file was written for this TF2 model served under the 2-versions name; ours is "tf2".
    expected = json.loads((testdata / "saved_model_half_plus_two_tf2_2_versions_metadata.json").read_text())
    expected["model_spec"]["name"] = "tf2"
    status, answer = get(f"{versions_server.rest_url}/v1/models/tf2/metadata")
    assert status == 200
    # The file predates the `defaults` this saved_model.pb carries (x = 0.0 in serving_default; the file has
    # "defaults": {} there and no "defaults" key at all in __saved_model_init_op, which no serializer of one
    # SignatureDef proto version produces): everything else must be equal, names of graph tensors included.
    assert answer["metadata"]["signature_def"]["signature_def"]["serving_default"]["defaults"]["x"]["float_val"] == [0]
    assert _without_defaults(answer) == _without_defaults(expected)


def test_two_versions_rest_answers_of_tf_serving_handler_test(versions_server):
    base = f"{versions_server.rest_url}/v1/models/saved_model_half_plus_two_2_versions"
    assert post(f"{base}:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]}) == \
        (200, {"predictions": [[2.5, 3.0], [3.5, 4.0]]})
    assert post(f"{base}/versions/123:predict", {"instances": [1.0, 2.0]}) == (200, {"predictions": [2.5, 3.0]})
    assert post(f"{base}/labels/Version_Label:predict", {"instances": [1.0, 2.0]}) == \
        (200, {"predictions": [2.5, 3.0]})
    regress = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
    for path in ("", "/versions/123", "/labels/Version_Label"):
        assert post(f"{base}{path}:regress", regress) == (200, {"results": [42.0]})
    assert post(f"{base}:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}) == \
        (200, {"results": [[["", 12.0]]]})
    assert post(f"{base}/labels/Version_Label:classify",
                {"signature_name": "classify_x_to_y", "examples": [{"x": 10.0}]}) == (200, {"results": [[["", 7.0]]]})
    one = {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    for path in ("", "/versions/123", "/labels/Version_Label"):
        assert get(f"{base}{path}") == (200, one)
    # Version 124 exists on disk but is outside the policy.
    status, answer = post(f"{base}/versions/124:predict", {"instances": [1.0]})
    assert status == 404 and "Servable not found" in answer["error"]
    # TF Serving answers an unknown label with INVALID_ARGUMENT (its handler test checks this).
    status, answer = post(f"{base}/labels/Version_Nonexistent:predict", {"instances": ["x", "y"]})
    assert status == 400 and "Unrecognized servable version label" in answer["error"]


def test_all_versions_policy_and_grpc_labels(versions_server):
    status, answer = get(f"{versions_server.rest_url}/v1/models/all_versions")
    assert status == 200
    assert [(v["version"], v["state"]) for v in answer["model_version_status"]] == \
        [("124", "AVAILABLE"), ("123", "AVAILABLE")]
    prediction, _, channel = stubs(versions_server.grpc_target)
    with channel:
        assert prediction.Predict(predict_request("all_versions"), RPC_TIMEOUT).model_spec.version.value == 124
        assert prediction.Predict(predict_request("all_versions", version=123),
                                  RPC_TIMEOUT).model_spec.version.value == 123
        result = prediction.Predict(predict_request("saved_model_half_plus_two_2_versions", label="Version_Label"),
                                    RPC_TIMEOUT)
        assert result.model_spec.version.value == 123 and list(result.outputs["y"].float_val) == [3.0]
        with pytest.raises(grpc.RpcError) as error:
            prediction.Predict(predict_request("all_versions", label="nope"), RPC_TIMEOUT)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tf2_savedmodel_served_through_functions(versions_server):
    url = f"{versions_server.rest_url}/v1/models/tf2:predict"
    assert post(url, {"instances": [[2.0], [4.0]]}) == (200, {"predictions": [[3.0], [4.0]]})
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
    assert post(f"{versions_server.rest_url}/v1/models/tf2:regress", body) == (200, {"results": [42.0]})
    prediction, _, channel = stubs(versions_server.grpc_target)
    with channel:
        result = prediction.Predict(predict_request("tf2"), RPC_TIMEOUT)
    assert list(result.outputs["y"].float_val) == [3.0] and result.model_spec.version.value == 123


# ---------------------------------------------------------------- a model that cannot load

def test_bad_model_never_available_and_server_keeps_serving(testdata, tmp_path):
    from tensorflow_serving.apis import get_model_status_pb2
    from tensorflow_serving.apis import model_management_pb2
    from tensorflow_serving.config import model_server_config_pb2

    server = start_server(tmp_path, "--model_name", "default", "--model_base_path", testdata / "bad_half_plus_two")
    try:
        status, answer = get(f"{server.rest_url}/v1/models/default")
        assert status == 200
        (version,) = answer["model_version_status"]
        assert version["version"] == "123" and version["state"] != "AVAILABLE"
        assert version["status"]["error_code"] != "OK"
        assert "Could not find SavedModel .pb or .pbtxt" in version["status"]["error_message"]

        status, answer = post(f"{server.rest_url}/v1/models/default:predict", {"instances": [2.0]})
        assert status == 404 and "failed to load" in answer["error"]
        prediction, models, channel = stubs(server.grpc_target)
        with channel:
            with pytest.raises(grpc.RpcError) as error:
                prediction.Predict(predict_request("default"), RPC_TIMEOUT)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
            time.sleep(1.5)  # a few polls later: still not retried into AVAILABLE, still alive
            assert server.alive()
            assert get(f"{server.rest_url}/v1/models/default")[1]["model_version_status"][0]["state"] == "END"

            # HandleReloadConfigRequest replaces the whole list.
            config = model_server_config_pb2.ModelServerConfig()
            good = config.model_config_list.config.add(name="good", model_platform="tensorflow",
                                                        base_path=str(testdata / "saved_model_half_plus_two_cpu"))
            good.version_labels["stable"] = 123
            models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), RPC_TIMEOUT)
            assert list(prediction.Predict(predict_request("good", label="stable"), RPC_TIMEOUT)
                        .outputs["y"].float_val) == [3.0]
            with pytest.raises(grpc.RpcError) as error:
                prediction.Predict(predict_request("default"), RPC_TIMEOUT)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND  # left the list
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = "default"
            with pytest.raises(grpc.RpcError) as error:
                models.GetModelStatus(request, RPC_TIMEOUT)
            assert error.value.code() == grpc.StatusCode.NOT_FOUND

            # A label may only point at a loaded version.
            good.version_labels["canary"] = 999
            with pytest.raises(grpc.RpcError) as error:
                models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), RPC_TIMEOUT)
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "not currently available" in error.value.details()
        assert server.alive()
    finally:
        server.stop()


# ---------------------------------------------------------------- the sentiment export, hot reload, the CLI

TEXTS = ["a wonderful heartfelt film", "a tedious mess", "", "   ", "x " * 2000, "naïve café 😀 日本語"]


@pytest.fixture(scope="module")
def sentiment_expected(sentiment_run):
    """The in-process probabilities of the session's tiny sentiment run (tests/conftest.py; served from
    `sentiment_export`, its version 1) for TEXTS, and its labels."""
    import tensorflow as tf

    from seqapp import runner

    run = runner.load_run(sentiment_run)
    definition, model, tokenizer, labels = run.definition, run.model, run.tokenizers["text"], run.labels
    ids = tokenizer.tokenize_padded(tf.constant(TEXTS), definition.pipeline.max_length)
    expected = model({"token_ids": ids, "padding_mask": ids != 0}, training=False).numpy()
    return expected, labels


@pytest.fixture(scope="module")
def app_server(sentiment_export, testdata, tmp_path_factory):
    """Our sentiment export, a hot-reload model (version 1 = half_plus_two) and the TF2 toy model."""
    tmp_path = tmp_path_factory.mktemp("app")
    hot = tmp_path / "hot"
    hot.mkdir()
    shutil.copytree(testdata / "saved_model_half_plus_two_cpu" / "00000123", hot / "1")
    make_toy_model(tmp_path / "toy")
    config = tmp_path / "models.config"
    config.write_text(config_text([{"name": "sentiment", "base_path": sentiment_export},
                                   {"name": "hot", "base_path": hot},
                                   {"name": "toy", "base_path": tmp_path / "toy"}]))
    server = start_server(tmp_path, "--model_config_file", config, "--file_system_poll_wait_seconds", 1)
    server.hot_base_path = hot
    yield server
    server.stop()


def test_sentiment_rest_predict_and_classify_match_in_process(app_server, sentiment_expected):
    expected, labels = sentiment_expected
    status, answer = post(f"{app_server.rest_url}/v1/models/sentiment:predict", {"instances": TEXTS})
    assert status == 200, answer
    rows = answer["predictions"]
    np.testing.assert_allclose([row["probabilities"] for row in rows], expected, atol=1e-5)
    assert [row["label"] for row in rows] == [labels[i] for i in expected.argmax(-1)]
    assert all(row["classes"] == labels for row in rows)

    status, answer = post(f"{app_server.rest_url}/v1/models/sentiment:predict", {"inputs": {"text": TEXTS}})
    assert status == 200
    np.testing.assert_allclose(answer["outputs"]["probabilities"], expected, atol=1e-5)

    body = {"signature_name": "classify", "examples": [{"text": t} for t in TEXTS]}
    status, answer = post(f"{app_server.rest_url}/v1/models/sentiment:classify", body)
    assert status == 200, answer
    assert [[label for label, _ in row] for row in answer["results"]] == [labels] * len(TEXTS)
    np.testing.assert_allclose([[score for _, score in row] for row in answer["results"]], expected, atol=1e-5)


def test_sentiment_grpc_predict_and_classify_match_in_process(app_server, sentiment_expected):
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import classification_pb2
    from tensorflow_serving.apis import predict_pb2

    from seqapp.serving.client import GrpcClient

    expected, labels = sentiment_expected
    prediction, _, channel = stubs(app_server.grpc_target)
    with channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "sentiment"
        request.inputs["text"].dtype = types_pb2.DT_STRING
        request.inputs["text"].string_val.extend(t.encode() for t in TEXTS)
        request.inputs["text"].tensor_shape.dim.add().size = len(TEXTS)
        result = prediction.Predict(request, RPC_TIMEOUT)
        assert result.model_spec.version.value == 1
        probabilities = np.array(result.outputs["probabilities"].float_val).reshape(len(TEXTS), -1)
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
        assert [x.decode() for x in result.outputs["label"].string_val] == [labels[i] for i in expected.argmax(-1)]

        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "sentiment"
        request.model_spec.signature_name = "classify"
        for text in TEXTS:
            request.input.example_list.examples.add().features.feature["text"].bytes_list.value.append(text.encode())
        result = prediction.Classify(request, RPC_TIMEOUT)
        scores = [[c.score for c in item.classes] for item in result.result.classifications]
        np.testing.assert_allclose(scores, expected, atol=1e-5)
        assert [[c.label for c in item.classes] for item in result.result.classifications] == [labels] * len(TEXTS)

    with GrpcClient(app_server.grpc_target) as client:
        np.testing.assert_allclose(client.predict("sentiment", TEXTS)["probabilities"], expected, atol=1e-5)


def test_rest_binary_and_multi_input_round_trip(app_server):
    url = f"{app_server.rest_url}/v1/models/toy:predict"
    blob = bytes(range(256))
    b64 = base64.b64encode(blob).decode()
    status, answer = post(url, {"instances": [{"a": [1.0, 1.0], "image_bytes": {"b64": b64}},
                                              {"a": [2.0, 0.5], "image_bytes": "héllo"}]})
    assert status == 200, answer
    first, second = answer["predictions"]
    assert first == {"y": [3.0], "length": 256, "echo_bytes": {"b64": b64}, "echo": {"b64": b64}}  # not UTF-8
    assert second == {"y": [3.0], "length": 6, "echo_bytes": {"b64": base64.b64encode("héllo".encode()).decode()},
                      "echo": "héllo"}
    status, answer = post(f"{app_server.rest_url}/v1/models/toy:predict",
                          {"signature_name": "bytes_only", "inputs": {"b64": b64}})
    assert status == 200 and answer == {"outputs": {"length": 256, "echo_bytes": {"b64": b64}}}


def test_cli_predict_over_rest_and_grpc(app_server, sentiment_expected, tmp_path):
    expected, labels = sentiment_expected
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    image = tmp_path / "image.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    for target in (["--rest", app_server.rest_url], ["--grpc", app_server.grpc_target]):
        result = subprocess.run([sys.executable, "-m", "seqapp", "predict", "--model", "sentiment", *target,
                                 *TEXTS[:2]], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs = json.loads(result.stdout)
        np.testing.assert_allclose(outputs["probabilities"], expected[:2], atol=1e-5)
        assert outputs["label"] == [labels[i] for i in expected[:2].argmax(-1)]

        result = subprocess.run([sys.executable, "-m", "seqapp", "predict", "--model", "toy", *target,
                                 "--signature", "bytes_only", "--image", str(image)],
                                capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads(result.stdout) == {"length": [208],
                                             "echo_bytes": [{"b64": base64.b64encode(image.read_bytes()).decode()}]}
    result = subprocess.run([sys.executable, "-m", "seqapp", "predict", "--model", "nope", "--rest",
                             app_server.rest_url, "hello"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2 and "Servable not found" in result.stderr and "Traceback" not in result.stderr


def test_hot_reload_switches_versions_without_failed_requests(app_server, testdata, tmp_path):
    from seqapp.serving.client import GrpcClient
    from seqapp.serving.client import RestClient

    rest, grpc_client = RestClient(app_server.rest_url, timeout=10), GrpcClient(app_server.grpc_target, timeout=10)
    answers, failures = [], []

    def ask(client):
        try:
            return float(client.predict("hot", {"x": [2.0]})["y"][0])
        except Exception as error:  # noqa: BLE001 - counted, then asserted empty
            failures.append(repr(error))
            return None

    for _ in range(5):  # version 1 (half_plus_two) answers
        assert ask(rest) == 3.0 and ask(grpc_client) == 3.0
    # Publish version 2 (half_plus_three) the safe way: copy beside, rename into place.
    staging = app_server.hot_base_path / ".2-incoming"
    shutil.copytree(testdata / "saved_model_half_plus_three" / "00000123", staging)
    os.rename(staging, app_server.hot_base_path / "2")
    published = time.monotonic()
    switched_after = None
    deadline = published + 20
    count = 0
    while time.monotonic() < deadline and count < 4000:
        for client in (rest, grpc_client):
            count += 1
            value = ask(client)
            answers.append(value)
            if value == 4.0 and switched_after is None:
                switched_after = time.monotonic() - published
        if switched_after is not None and answers[-4:] == [4.0] * 4:
            break
    grpc_client.close()
    assert not failures, failures[:5]
    assert switched_after is not None, f"version 2 never answered ({len(answers)} requests)"
    assert switched_after < 15, switched_after  # poll period 1 s + the load
    first_new = answers.index(4.0)
    assert set(answers[:first_new]) <= {3.0} and set(answers[first_new + 2:]) == {4.0}
    status = rest.status("hot")["model_version_status"]
    assert [(v["version"], v["state"]) for v in status] == [("2", "AVAILABLE"), ("1", "END")]

    # A version that fails to load: reported in the status, version 2 keeps serving.
    shutil.copytree(testdata / "bad_half_plus_two" / "00000123", app_server.hot_base_path / ".3-incoming")
    os.rename(app_server.hot_base_path / ".3-incoming", app_server.hot_base_path / "3")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert ask(rest) == 4.0
        status = rest.status("hot")["model_version_status"]
        if status[0]["version"] == "3" and status[0]["state"] == "END":
            break
        time.sleep(0.1)
    assert [(v["version"], v["state"]) for v in status] == [("3", "END"), ("2", "AVAILABLE"), ("1", "END")]
    assert "Could not find SavedModel" in status[0]["status"]["error_message"]
    assert status[1]["status"] == {"error_code": "OK", "error_message": ""}
    assert ask(rest) == 4.0 and not failures

    # The poller outlives the failed load: a good version 4 (half_plus_two again, 3.0) is picked up and
    # replaces version 2 (version 1 is unloaded, so 3.0 can only come from version 4).
    shutil.copytree(testdata / "saved_model_half_plus_two_cpu" / "00000123", app_server.hot_base_path / ".4-in")
    os.rename(app_server.hot_base_path / ".4-in", app_server.hot_base_path / "4")
    answers = []

    def version_4_answers():
        answers.append(ask(rest))
        assert answers[-1] in (3.0, 4.0), answers[-5:]
        return answers[-1] == 3.0

    wait_for(version_4_answers, 20, lambda: f"version 4, published after the failed version 3, never answered "
                                            f"({len(answers)} requests, the last {answers[-3:]})")
    assert not failures, failures[:5]
    assert ask(rest) == 3.0 and ask(rest) == 3.0
    status = rest.status("hot")["model_version_status"]
    assert [(v["version"], v["state"]) for v in status] == \
        [("4", "AVAILABLE"), ("3", "END"), ("2", "END"), ("1", "END")]


def test_warmup_replays_records_and_a_bad_record_fails_the_load(testdata, tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from seqapp.serving import manager

    def with_warmup(name, input_name):
        version = tmp_path / name / "1"
        shutil.copytree(testdata / "saved_model_half_plus_two_cpu" / "00000123", version)
        (version / "assets.extra").mkdir()
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.CopyFrom(predict_request("whatever", input_name=input_name))
        with tf.io.TFRecordWriter(str(version / "assets.extra" / "tf_serving_warmup_requests")) as writer:
            for _ in range(3):
                writer.write(log.SerializeToString())
        return tmp_path / name

    config = manager.parse_config_text(config_text([{"name": "good", "base_path": with_warmup("good", "x")},
                                                     {"name": "bad", "base_path": with_warmup("bad", "nope")}]))
    models = manager.ModelManager(config, poll_wait_seconds=0, enable_warmup=True)
    models.start()
    try:
        assert models.servable("good").run("", {"x": np.array([2.0], np.float32)})["y"].tolist() == [3.0]
        (bad,) = models.status("bad").model_version_status
        assert bad.state != bad.AVAILABLE and "Failed to warm up" in bad.status.error_message
    finally:
        models.stop()


def test_signature_method_name_check_is_off_by_default_like_tf_serving(testdata):
    from seqapp.serving import inference
    from seqapp.serving import servable
    from seqapp.serving.errors import ServingError

    tf2 = servable.load(testdata / "saved_model_half_plus_two_tf2_cpu" / "00000123", "tf2", 123)
    example = inference.serialized_examples(_example_input(80.0))
    # TF2 writes every signature as tensorflow/serving/predict; TF Serving's check is off unless asked for.
    assert tf2.signature_defs["regress_x_to_y"].method_name == "tensorflow/serving/predict"
    assert inference.regress_examples(tf2, "regress_x_to_y", example) == ("regress_x_to_y", [42.0])
    with pytest.raises(ServingError, match="Expected regression signature method_name") as error:
        inference.regress_examples(tf2, "regress_x_to_y", example, check_method=True)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    tf1 = servable.load(testdata / "saved_model_half_plus_two_cpu" / "00000123", "tf1", 123)
    assert inference.classify_examples(tf1, "classify_x_to_y", example, check_method=True) == \
        ("classify_x_to_y", [[(b"", 42.0)]])


def _example_input(x):
    from tensorflow_serving.apis import input_pb2

    proto = input_pb2.Input()
    proto.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return proto


def test_model_config_file_is_polled(testdata, tmp_path, caplog):
    from seqapp.serving import manager
    from seqapp.serving.errors import ServingError

    def servable_or_none(name):
        try:
            return models.servable(name)
        except ServingError as error:
            assert error.code == grpc.StatusCode.NOT_FOUND, error
            return None

    config = tmp_path / "models.config"
    config.write_text(config_text([{"name": "a", "base_path": testdata / "saved_model_half_plus_two_cpu"}]))
    models = manager.ModelManager(manager.read_config_file(config), poll_wait_seconds=0)
    models.start()
    models.watch_config_file(config, 0.2)
    try:
        assert models.servable("a").run("", {"x": np.array([2.0], np.float32)})["y"].tolist() == [3.0]
        config.write_text(config_text([{"name": "b", "base_path": testdata / "saved_model_half_plus_three"}]))
        served = wait_for(lambda: servable_or_none("b"), 20, "model b of the changed config file was never loaded")
        assert served.run("", {"x": np.array([2.0], np.float32)})["y"].tolist() == [4.0]
        with pytest.raises(ServingError) as error:
            models.servable("a")
        assert error.value.code == grpc.StatusCode.NOT_FOUND

        caplog.set_level(logging.ERROR)
        config.write_text("improperly formatted file")  # logged, and the last good list keeps serving
        wait_for(lambda: any(record.levelno >= logging.ERROR and str(config) in record.getMessage()
                             for record in caplog.records), 20, "the bad config file was never reported")
        time.sleep(0.5)  # more polls of the bad file
        assert models.model_names() == ["b"] and models.servable("b") is served
        # The poller survived the bad file: the next good file is picked up.
        config.write_text(config_text([{"name": "b", "base_path": testdata / "saved_model_half_plus_three"},
                                       {"name": "c", "base_path": testdata / "saved_model_half_plus_two_cpu"}]))
        added = wait_for(lambda: servable_or_none("c"), 20, "model c of the good config written after the bad "
                                                            "one was never loaded: the config poller stopped")
        assert added.run("", {"x": np.array([2.0], np.float32)})["y"].tolist() == [3.0]
        assert models.model_names() == ["b", "c"] and models.servable("b") is served
    finally:
        models.stop()


def test_serve_freezes_what_its_imports_made_before_models_load():
    # A full collection walked TensorFlow's ~380,000 objects: a 200-290 ms stall of every request in flight.
    code = ("import gc, sys\nfrom seqapp.serving import server\nserver.freeze_imports()\n"
            "print(gc.get_freeze_count(), len(gc.get_objects()), 'tensorflow_text' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    frozen, collectable, text_ops = result.stdout.split()
    assert int(frozen) > 100_000 and int(collectable) < int(frozen) // 20 and text_ops == "True"
