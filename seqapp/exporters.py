"""SavedModels in TF Serving's layout: `<export_root>/<name>/<version>/`.

Every export is written to a temporary folder beside its target and renamed
into place only when complete, so TF Serving (which polls the base path) never
sees a half-written version. Signatures take dense string tensors and return
dense tensors only (no ragged tensors at the boundary), tokenization runs inside
the graph with tf-text's long-standing ops, and nothing is XLA-compiled.
"""

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import keras
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

import seqapp
from seqapp.errors import ExportError

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MODEL_CARD_FILE = "assets.extra/model_card.json"
# tf-text ops that TF Serving's model server links and has had for years (the
# BertTokenizer/WordPiece family); newer tf-text ops fail there with
# "Op type not registered". Everything else must be a core TensorFlow op.
TF_SERVING_TEXT_OPS = frozenset({
    "CaseFoldUTF8",
    "NormalizeUTF8",
    "RegexSplitWithOffsets",
    "WordpieceTokenizeWithOffsets",
    "WhitespaceTokenizeWithOffsets",
    "UnicodeScriptTokenizeWithOffsets",
    "FastWordpieceTokenizeWithOffsets",
    "FastWordpieceDetokenize",
})


def next_version(base_path):
    """One more than the highest integer-named version under `base_path` (1 when none)."""
    base_path = Path(base_path)
    versions = [int(p.name) for p in base_path.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def publish(write_fn, base_path, version=None):
    """Writes a version with `write_fn(tmp_dir)` and renames it into `base_path/<version>`.

    Args:
        write_fn: writes a complete SavedModel into the folder it is given.
        base_path: the model's base path (`saved_models/<name>`).
        version: an integer version; None takes `next_version(base_path)`.

    Returns:
        The published version's path.

    Raises:
        FileExistsError: the version already exists (versions are immutable).
    """
    base_path = Path(base_path)
    base_path.mkdir(parents=True, exist_ok=True)
    version = next_version(base_path) if version is None else int(version)
    target = base_path / str(version)
    if target.exists():
        raise FileExistsError(f"{target} already exists; versions are never overwritten")
    # A dot-prefixed sibling: same filesystem (atomic rename) and not an integer, so servers ignore it.
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-incomplete-", dir=base_path))
    try:
        write_fn(tmp)
        check_ops(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _saved_model(export_dir):
    return saved_model_pb2.SavedModel.FromString((Path(export_dir) / "saved_model.pb").read_bytes())


def graph_ops(export_dir):
    """The op types a SavedModel's graph and its functions use (function calls excluded)."""
    graph = _saved_model(export_dir).meta_graphs[0].graph_def
    functions = {function.signature.name for function in graph.library.function}
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    return ops - functions


def check_ops(export_dir):
    """Fails when the graph uses an op TF Serving's CPU server cannot run.

    Allowed: core TensorFlow ops (those with a `tf.raw_ops` wrapper) except XLA
    and cuDNN ones, and `TF_SERVING_TEXT_OPS`.

    Raises:
        ExportError: listing the offending op types.
    """
    ops = graph_ops(export_dir)
    bad = sorted(
        op for op in ops
        if op.startswith(("Xla", "Cudnn")) or not (hasattr(tf.raw_ops, op) or op in TF_SERVING_TEXT_OPS)
    )
    if bad:
        raise ExportError(
            f"the graph uses ops TF Serving cannot run: {', '.join(bad)} "
            "(allowed: core TF ops without XLA/cuDNN, and tf-text's WordPiece family)"
        )
    return sorted(ops)


def write_warmup_requests(export_dir, signature_name, inputs):
    """Writes `assets.extra/tf_serving_warmup_requests`: one PredictionLog per example.

    TF Serving replays these at load (`--enable_model_warmup`), so the first real
    request does not pay for graph initialization.

    Args:
        export_dir: the SavedModel folder.
        signature_name: the signature the requests call.
        inputs: `{input name: list of values}`, one value per warmup request.
    """
    path = Path(export_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    count = len(next(iter(inputs.values())))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index in range(count):
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature_name
            for name, values in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto([values[index]]))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def write_model_card(export_dir, card):
    """Writes `assets.extra/model_card.json`: the given facts plus seqapp's version, the
    export time and the signatures."""
    signatures = _saved_model(export_dir).meta_graphs[0].signature_def
    card = {
        **card,
        "seqapp_version": seqapp.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "signatures": {
            name: {"method_name": sig.method_name, "inputs": sorted(sig.inputs), "outputs": sorted(sig.outputs)}
            for name, sig in signatures.items()
            if not name.startswith("__")  # internal (__saved_model_init_op), not servable
        },
    }
    path = Path(export_dir) / MODEL_CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False))
    return path


def set_method_name(export_dir, signature, method_name):
    """Sets a signature's method name in saved_model.pb.

    TF2 saves every signature as `tensorflow/serving/predict`; TF Serving's
    Classify API only accepts signatures named `tensorflow/serving/classify`.
    """
    path = Path(export_dir) / "saved_model.pb"
    proto = _saved_model(export_dir)
    proto.meta_graphs[0].signature_def[signature].method_name = method_name
    path.write_bytes(proto.SerializeToString())


@dataclasses.dataclass(frozen=True)
class Signature:
    """One signature of an export.

    Attributes:
        name: the signature key (`serving_default`, `classify`, ...).
        function: dense tensors in, a dict of dense tensors out.
        inputs: its `tf.TensorSpec`s, named as the signature's inputs.
        method_name: TF Serving's method (predict unless the Classify/Regress API should take it).
    """

    name: str
    function: Callable
    inputs: list
    method_name: str = PREDICT_METHOD


def export(signatures, base_path, version=None, *, track=(), warmup=None, card=None):
    """Exports signatures as a SavedModel version in TF Serving's layout, atomically (see `publish`).

    Args:
        signatures: `Signature`s; one named `serving_default` receives the warmup requests.
        base_path: `saved_models/<name>`.
        version: integer version, or None for the next one.
        track: the objects whose variables and assets (a model, its tokenizers) the
            functions use.
        warmup: `{input name: values}` of `serving_default`, one request per value,
            replayed by TF Serving at load.
        card: facts for the model card (task, data, config, metrics).

    Returns:
        The path of the published version.

    Raises:
        ExportError: the graph uses ops TF Serving cannot run (nothing is published).
    """

    def write(export_dir):
        archive = keras.export.ExportArchive()
        for trackable in track:
            archive.track(trackable)
        for signature in signatures:
            archive.add_endpoint(signature.name, signature.function, signature.inputs)
        archive.write_out(str(export_dir), verbose=False)
        for signature in signatures:
            if signature.method_name != PREDICT_METHOD:
                set_method_name(export_dir, signature.name, signature.method_name)
        if warmup and any(len(values) for values in warmup.values()):
            write_warmup_requests(export_dir, "serving_default", warmup)
        write_model_card(export_dir, card or {})

    return publish(write, base_path, version)
