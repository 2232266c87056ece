"""The TF Serving deployment files in serving/: every config parses with TF Serving's
protos and says what we mean, and compose/Kubernetes wire them up consistently."""

import re
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor

from seqapp.serving import batching
from seqapp.serving import config_protos

SERVING = Path(__file__).resolve().parents[1] / "serving"
MODELS = {"sentiment", "translation", "captioning"}
CONFIG_FILES = ("models.config", "batching.config", "monitoring.config")
# Flags whose value is a file, and the loader that file must pass.
FILE_FLAGS = {
    "model_config_file": config_protos.read_model_server_config,
    "batching_parameters_file": config_protos.read_batching_parameters,
    "monitoring_config_file": config_protos.read_monitoring_config,
}
REQUIRED_FLAGS = {
    "port": "8500", "rest_api_port": "8501", "enable_batching": "true", "enable_model_warmup": "true",
    "model_config_file_poll_wait_seconds": None, **{flag: None for flag in FILE_FLAGS},
}
STATUS_PATH = "/v1/models/sentiment"


def _flags(args):
    """`--name=value` arguments as {name: value}; each flag given once."""
    pairs = [arg.removeprefix("--").split("=", 1) for arg in args]
    assert all(arg.startswith("--") and len(pair) == 2 for arg, pair in zip(args, pairs)), args
    flags = dict(pairs)
    assert len(flags) == len(pairs), f"a flag is repeated: {args}"
    return flags


def _check_flags(flags):
    for name, value in REQUIRED_FLAGS.items():
        assert name in flags, f"--{name} missing"
        if value is not None:
            assert flags[name] == value, f"--{name}={flags[name]}, expected {value}"
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0  # label moves need the poll


def _load_yaml(*parts):
    return yaml.safe_load(SERVING.joinpath(*parts).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- the protos

def _fields(message_class):
    out = {}
    for field in message_class.DESCRIPTOR.fields:
        kind = field.message_type.full_name if field.message_type else field.type
        out[field.name] = (field.number, kind, field.is_repeated)
    return out


def test_protos_match_tf_serving_field_for_field():
    int64, fd = "google.protobuf.Int64Value", descriptor.FieldDescriptor
    assert _fields(config_protos.BatchingParameters) == {
        "max_batch_size": (1, int64, False),
        "batch_timeout_micros": (2, int64, False),
        "max_enqueued_batches": (3, int64, False),
        "num_batch_threads": (4, int64, False),
        "thread_pool_name": (5, "google.protobuf.StringValue", False),
        "allowed_batch_sizes": (6, fd.TYPE_INT64, True),
        "pad_variable_length_inputs": (7, fd.TYPE_BOOL, False),
        "enable_large_batch_splitting": (8, "google.protobuf.BoolValue", False),
        "max_execution_batch_size": (9, int64, False),
    }
    assert _fields(config_protos.MonitoringConfig) == {
        "prometheus_config": (1, "tensorflow.serving.PrometheusConfig", False)}
    assert _fields(config_protos.PrometheusConfig) == {
        "enable": (1, fd.TYPE_BOOL, False), "path": (2, fd.TYPE_STRING, False)}
    assert config_protos.BatchingParameters.DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert config_protos.BatchingParameters.DESCRIPTOR.file.name == (
        "tensorflow_serving/servables/tensorflow/session_bundle_config.proto")
    assert config_protos.MonitoringConfig.DESCRIPTOR.file.name == "tensorflow_serving/config/monitoring_config.proto"
    # Wire form: field 1 holding an Int64Value whose field 1 is 128.
    params = config_protos.BatchingParameters()
    params.max_batch_size.value = 128
    assert params.SerializeToString() == b"\x0a\x03\x08\x80\x01"


# ---------------------------------------------------------------- serving/*.config

def test_models_config_serves_every_model_with_two_versions_and_labels():
    config = config_protos.read_model_server_config(SERVING / "models.config")
    models = {model.name: model for model in config.model_config_list.config}
    assert set(models) == MODELS
    for name, model in models.items():
        assert model.base_path == f"/models/{name}"
        assert model.model_platform == "tensorflow"
        policy = model.model_version_policy
        assert policy.WhichOneof("policy_choice") == "specific"
        versions = list(policy.specific.versions)
        assert len(set(versions)) >= 2, f"{name}: the policy must keep two versions for canary and rollback"
        labels = dict(model.version_labels)
        assert {"stable", "canary"} <= set(labels), name
        assert all(re.fullmatch(r"[a-zA-Z0-9_]+", label) for label in labels)
        # A label on a version the policy never loads could never be served.
        assert set(labels.values()) <= set(versions), name


def test_batching_config_follows_tf_serving_rules():
    params = config_protos.read_batching_parameters(SERVING / "batching.config")
    sizes = list(params.allowed_batch_sizes)
    assert sizes and sizes == sorted(set(sizes)) and sizes[-1] == params.max_batch_size.value
    assert not params.enable_large_batch_splitting.value
    assert params.pad_variable_length_inputs
    assert params.num_batch_threads.value >= 1
    assert params.HasField("batch_timeout_micros") and params.HasField("max_enqueued_batches")


def test_embedded_server_default_batching_is_the_shipped_file():
    # `seqapp serve` without --batching_parameters_file must batch as the deployment does.
    assert batching.default_options() == batching.read_options(SERVING / "batching.config")


def test_monitoring_config_enables_prometheus():
    config = config_protos.read_monitoring_config(SERVING / "monitoring.config")
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_tf_serving_own_test_configs_parse(shared_data_dir):
    testdata = shared_data_dir / "tfserving_testdata"
    params = config_protos.read_batching_parameters(testdata / "batching_config.txt")
    assert params.max_batch_size.value == 128 and params.num_batch_threads.value == 8
    assert params.max_enqueued_batches.value == 1000000
    assert params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value == 0
    monitoring = config_protos.read_monitoring_config(testdata / "monitoring_config.txt")
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    config = config_protos.read_model_server_config(testdata / "good_model_config.txt")
    assert [model.name for model in config.model_config_list.config] == ["half_plus_two", "half_plus_three"]
    with pytest.raises(ValueError, match=re.escape(str(testdata / "bad_model_config.txt")) + ":1:"):
        config_protos.read_model_server_config(testdata / "bad_model_config.txt")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("reader, text, line, message", [
    (config_protos.read_model_server_config, "model_config_list {\n  config { nmae: \"x\" }\n}\n", 2,
     'no field named "nmae"'),
    (config_protos.read_batching_parameters, "max_batch_size: 8\n", 1, "max_batch_size"),
    (config_protos.read_monitoring_config, "prometheus_config {\n  enable: maybe\n}\n", 2, "enable"),
])
def test_bad_text_raises_value_error_naming_file_and_line(tmp_path, reader, text, line, message):
    path = tmp_path / "broken.config"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:{line}:\d+: not a valid .*{message}"):
        reader(path)


def test_missing_file_raises_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "absent.config"))):
        config_protos.read_monitoring_config(tmp_path / "absent.config")


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: [4, 2, 8]\n", "strictly increasing"),
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: [2, 2, 8]\n", "strictly increasing"),
    ("max_batch_size { value: 16 }\nallowed_batch_sizes: [4, 8]\n", "must equal max_batch_size"),
    ("allowed_batch_sizes: [4, 8]\n", "max_batch_size must be set"),
    ("max_batch_size { value: 64 }\nenable_large_batch_splitting { value: true }\n"
     "max_execution_batch_size { value: 16 }\nallowed_batch_sizes: [8, 64]\n", "must equal max_execution_batch_size"),
    ("max_batch_size { value: 8 }\nenable_large_batch_splitting { value: true }\n"
     "max_execution_batch_size { value: 16 }\nallowed_batch_sizes: [8, 16]\n", "exceeds max_batch_size"),
])
def test_batch_size_rules_are_enforced(tmp_path, text, message):
    path = tmp_path / "batching.config"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: .*{message}"):
        config_protos.read_batching_parameters(path)


def test_large_batch_splitting_ends_at_max_execution_batch_size(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 256 }\nenable_large_batch_splitting { value: true }\n"
                    "max_execution_batch_size { value: 32 }\nallowed_batch_sizes: [8, 16, 32]\n", encoding="utf-8")
    assert list(config_protos.read_batching_parameters(path).allowed_batch_sizes) == [8, 16, 32]


# ---------------------------------------------------------------- docker compose

def test_compose_wires_ports_mounts_flags_and_healthcheck():
    service = _load_yaml("docker-compose.yml")["services"]["tensorflow-serving"]
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+", service["image"])
    assert service["entrypoint"] == ["tensorflow_model_server"]
    assert {"8500:8500", "8501:8501"} <= set(service["ports"])

    mounts = {}
    for volume in service["volumes"]:
        assert volume["type"] == "bind" and volume["read_only"] is True, volume
        mounts[volume["target"]] = (SERVING / volume["source"]).resolve()
    assert mounts["/models"] == SERVING.parent / "saved_models"

    flags = _flags(service["command"])
    _check_flags(flags)
    for flag, reader in FILE_FLAGS.items():
        container_path = Path(flags[flag])
        target = next((t for t in mounts if container_path.is_relative_to(t)), None)
        assert target, f"--{flag}={container_path} is not under a mounted folder"
        host_file = mounts[target] / container_path.relative_to(target)
        assert host_file.parent == SERVING and host_file.is_file(), host_file
        reader(host_file)

    check = " ".join(service["healthcheck"]["test"])
    assert f"GET {STATUS_PATH} " in check and "/dev/tcp/127.0.0.1/8501" in check
    assert service["healthcheck"]["start_period"]


# ---------------------------------------------------------------- Kubernetes

def _deployment_container():
    deployment = _load_yaml("k8s", "deployment.yaml")
    assert deployment["kind"] == "Deployment" and deployment["apiVersion"] == "apps/v1"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return deployment, pod, container


def test_deployment_mounts_configmap_and_models_and_probes_sentiment():
    deployment, pod, container = _deployment_container()
    compose = _load_yaml("docker-compose.yml")["services"]["tensorflow-serving"]
    assert container["image"] == compose["image"]
    assert {port["containerPort"] for port in container["ports"]} == {8500, 8501}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]

    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert all(mount["readOnly"] is True and "subPath" not in mount for mount in mounts.values())
    models = volumes[mounts["/models"]["name"]]
    assert models["persistentVolumeClaim"]["claimName"]

    configmap = _load_yaml("k8s", "configmap.yaml")
    flags = _flags(container["args"])
    _check_flags(flags)
    for flag in FILE_FLAGS:
        container_path = Path(flags[flag])
        volume = volumes[mounts[str(container_path.parent)]["name"]]
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        assert container_path.name in configmap["data"], f"--{flag}: {container_path.name} not in the ConfigMap"

    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": STATUS_PATH, "port": 8501}, probe


def test_service_exposes_grpc_and_rest():
    service = _load_yaml("k8s", "service.yaml")
    deployment, _, _ = _deployment_container()
    assert service["kind"] == "Service"
    assert {(port["port"], port["targetPort"]) for port in service["spec"]["ports"]} == {(8500, 8500), (8501, 8501)}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_hpa_scales_the_deployment_on_cpu():
    hpa = _load_yaml("k8s", "hpa.yaml")
    deployment, _, container = _deployment_container()
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["kind"] == "HorizontalPodAutoscaler"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert container["resources"]["requests"]["cpu"]  # utilization is measured against the request


def test_configmap_holds_exactly_the_serving_config_files():
    configmap = _load_yaml("k8s", "configmap.yaml")
    assert configmap["kind"] == "ConfigMap"
    assert set(configmap["data"]) == set(CONFIG_FILES)
    for name in CONFIG_FILES:
        assert configmap["data"][name] == (SERVING / name).read_text(encoding="utf-8"), (
            f"serving/k8s/configmap.yaml differs from serving/{name}")
