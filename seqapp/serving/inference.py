"""TF Serving's request semantics over a `Servable`, independent of the transport.

Predict, Classify, Regress, MultiInference and GetModelMetadata take and return
the `tensorflow_serving.apis` protos; the gRPC service calls them directly, the
REST API calls the same functions (classify/regress/metadata) and formats JSON,
and model warmup replays logged requests through them. The checks and messages
follow TF Serving's classifier.cc / regressor.cc / predict_util.cc.
"""

import logging

import grpc
import numpy as np

from seqapp.serving import tensors
from seqapp.serving.errors import ServingError
from seqapp.serving.errors import invalid_argument
from seqapp.serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger("seqapp.serving")

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"
MAX_WARMUP_RECORDS = 1000
WARMUP_FILE = ("assets.extra", "tf_serving_warmup_requests")


def fill_model_spec(spec, servable, signature_name=None):
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name is not None:
        spec.signature_name = signature_name


# ---------------------------------------------------------------- Predict

def predict(servable, request):
    """PredictRequest → PredictResponse."""
    name, inputs, output_filter = predict_inputs(servable, request)
    return predict_response(servable, name, servable.run(name, inputs, output_filter))


async def predict_async(servable, request, executor=None):
    """`predict` awaited on the serving event loop (`Servable.run_async`; `executor` for unbatched calls)."""
    name, inputs, output_filter = predict_inputs(servable, request)
    return predict_response(servable, name, await servable.run_async(name, inputs, output_filter, executor))


def predict_inputs(servable, request):
    """A PredictRequest's `(signature name, {input: array}, output filter or None)`."""
    name, _ = servable.signature(request.model_spec.signature_name)
    inputs = {key: tensors.proto_to_array(proto, key) for key, proto in request.inputs.items()}
    return name, inputs, list(request.output_filter) or None


def predict_response(servable, name, outputs):
    """The PredictResponse of signature `name`'s `outputs`."""
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    fill_model_spec(response.model_spec, servable, name)
    for key, array in outputs.items():
        response.outputs[key].CopyFrom(tensors.array_to_proto(array))
    return response


# ---------------------------------------------------------------- Classify / Regress

def serialized_examples(input_proto):
    """The serialized tf.Examples of an `Input` proto; with a context, context + example
    bytes concatenated (proto merge semantics), as TF Serving feeds them."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        context = input_proto.example_list_with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in input_proto.example_list_with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    return examples


def _example_input(servable, signature_name, method, what, check_method):
    name, signature = servable.signature(signature_name)
    if check_method and signature.method_name != method:
        raise invalid_argument(f"Expected {what} signature method_name to be {method}. Was: {signature.method_name}")
    if len(signature.inputs) != 1:
        raise invalid_argument(f"Expected one input Tensor, got {len(signature.inputs)} in signature '{name}'")
    (input_name,) = signature.inputs
    if signature.inputs[input_name].dtype != tensors.types_pb2.DT_STRING:
        raise invalid_argument(f"Expected input Tensor '{input_name}' of signature '{name}' to be of type string "
                               "(serialized tf.Examples)")
    return name, signature, input_name


def _string_batch(examples):
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


def classify_examples(servable, signature_name, examples, check_method=False):
    """Runs a classify signature on serialized Examples.

    `check_method` is TF Serving's `--enable_signature_method_name_check` (off by
    default there: TF2 writes every signature as `tensorflow/serving/predict`).

    Returns:
        `(resolved_signature_name, [[(label, score), ...] per example])`.
    """
    name, signature, input_name = _example_input(servable, signature_name, CLASSIFY_METHOD, "classification",
                                                 check_method)
    wanted = [key for key in ("classes", "scores") if key in signature.outputs]
    if not wanted:
        raise invalid_argument("Expected classification signature outputs to contain at least one of 'classes' "
                               "or 'scores'")
    outputs = servable.run(name, {input_name: _string_batch(examples)}, wanted)
    batch = len(examples)
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if scores is not None:
        if scores.ndim != 2 or scores.shape[0] != batch:
            raise invalid_argument(f"Expected Tensor shape: [{batch} num_classes] but got {list(scores.shape)}")
        if scores.dtype.kind != "f":
            raise invalid_argument(f"Expected scores Tensor of DT_FLOAT. Got: {scores.dtype}")
    if classes is not None:
        if classes.ndim != 2 or classes.shape[0] != batch:
            raise invalid_argument(f"Expected Tensor shape: [{batch} num_classes] but got {list(classes.shape)}")
        if classes.dtype != object:
            raise invalid_argument(f"Expected classes Tensor of DT_STRING. Got: {classes.dtype}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} "
                               f"vs. {scores.shape[1]}")
    width = (scores if scores is not None else classes).shape[1]
    results = []
    for i in range(batch):
        row = []
        for j in range(width):
            label = classes[i, j] if classes is not None else b""
            score = float(scores[i, j]) if scores is not None else 0.0
            row.append((label, score))
        results.append(row)
    return name, results


def regress_examples(servable, signature_name, examples, check_method=False):
    """Runs a regress signature on serialized Examples → `(resolved_name, [value per example])`."""
    name, signature, input_name = _example_input(servable, signature_name, REGRESS_METHOD, "regression", check_method)
    if "outputs" not in signature.outputs:
        raise invalid_argument("No output Tensor 'outputs' in the regression signature")
    values = servable.run(name, {input_name: _string_batch(examples)}, ["outputs"])["outputs"]
    batch = len(examples)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != batch:
        raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                               f"{list(values.shape)}")
    if values.dtype.kind != "f":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT. Got: {values.dtype}")
    return name, [float(v) for v in values]


def _fill_classification(result, rows):
    for row in rows:
        classification = result.classifications.add()
        for label, score in row:
            cls = classification.classes.add()
            cls.label = label.decode("utf-8", errors="replace") if isinstance(label, bytes) else str(label)
            cls.score = score


def classify(servable, request, check_method=False):
    """ClassificationRequest → ClassificationResponse."""
    from tensorflow_serving.apis import classification_pb2

    name, rows = classify_examples(servable, request.model_spec.signature_name, serialized_examples(request.input),
                                   check_method)
    response = classification_pb2.ClassificationResponse()
    fill_model_spec(response.model_spec, servable, name)
    _fill_classification(response.result, rows)
    return response


def regress(servable, request, check_method=False):
    """RegressionRequest → RegressionResponse."""
    from tensorflow_serving.apis import regression_pb2

    name, values = regress_examples(servable, request.model_spec.signature_name, serialized_examples(request.input),
                                    check_method)
    response = regression_pb2.RegressionResponse()
    fill_model_spec(response.model_spec, servable, name)
    for value in values:
        response.result.regressions.add().value = value
    return response


def multi_inference(get_servable, request, check_method=False):
    """MultiInferenceRequest → MultiInferenceResponse; every task on the same model and
    version, one signature at most once, classify and regress only."""
    from tensorflow_serving.apis import inference_pb2

    if not request.tasks:
        raise invalid_argument("Expected at least one task")
    first = request.tasks[0].model_spec
    seen = set()
    for task in request.tasks:
        if task.model_spec.name != first.name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name")
        if (task.model_spec.WhichOneof("version_choice") != first.WhichOneof("version_choice")
                or task.model_spec.version != first.version or task.model_spec.version_label != first.version_label):
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model version")
        signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {signature}")
        seen.add(signature)
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
    servable = get_servable(first)
    examples = serialized_examples(request.input)
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            name, rows = classify_examples(servable, task.model_spec.signature_name, examples, check_method)
            _fill_classification(result.classification_result, rows)
        else:
            name, values = regress_examples(servable, task.model_spec.signature_name, examples, check_method)
            for value in values:
                result.regression_result.regressions.add().value = value
        fill_model_spec(result.model_spec, servable, name)
    return response


# ---------------------------------------------------------------- Metadata

def signature_def_map(servable):
    from tensorflow_serving.apis import get_model_metadata_pb2

    proto = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        proto.signature_def[key].CopyFrom(signature)
    return proto


def metadata(servable, request):
    """GetModelMetadataRequest → GetModelMetadataResponse (only `signature_def` exists)."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != "signature_def":
            raise invalid_argument(f"Metadata field {field} is not supported")
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    fill_model_spec(response.model_spec, servable, request.model_spec.signature_name)
    response.metadata["signature_def"].Pack(signature_def_map(servable))
    return response


def metadata_json(servable):
    """The REST metadata answer: GetModelMetadataResponse as TF Serving writes it (the Any
    holding the SignatureDefMap written as the map itself, default values included)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec()
    fill_model_spec(spec, servable, "")
    options = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return {
        "model_spec": json_format.MessageToDict(spec, **options),
        "metadata": {"signature_def": json_format.MessageToDict(signature_def_map(servable), **options)},
    }


# ---------------------------------------------------------------- Warmup

def warmup(servable, iterations=1):
    """Replays `<version>/assets.extra/tf_serving_warmup_requests` (a TFRecord of
    PredictionLog) against `servable`; any failure fails the load, as in TF Serving.

    Returns:
        the number of records replayed (0 when the version has no warmup file).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = servable.path.joinpath(*WARMUP_FILE)
    if not path.is_file():
        return 0
    count = 0
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            count += 1
            if count > MAX_WARMUP_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at "
                                       f"{path}")
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            kind = entry.WhichOneof("log_type")
            for _ in range(max(1, iterations)):
                if kind == "predict_log":
                    predict(servable, entry.predict_log.request)
                elif kind == "classify_log":
                    classify(servable, entry.classify_log.request)
                elif kind == "regress_log":
                    regress(servable, entry.regress_log.request)
                elif kind == "multi_inference_log":
                    multi_inference(lambda spec: servable, entry.multi_inference_log.request)
                else:
                    raise invalid_argument(f"Unsupported log_type for warmup: {kind}")
    except ServingError as error:
        raise ServingError(error.code, f"Failed to warm up model from {path} (record {count}): {error.message}") \
            from None
    except Exception as error:  # noqa: BLE001 - a corrupt warmup file fails the load
        raise ServingError(grpc.StatusCode.DATA_LOSS, f"Failed to read warmup file {path}: {error}") from None
    log.info("Warmed up %s version %s with %d records", servable.name, servable.version, count)
    return count
