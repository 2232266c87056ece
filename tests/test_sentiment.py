"""Sentiment end to end: train on the user's CSV, cross-validate, export, reload in a fresh process."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from seqapp import config
from seqapp import evaluation
from seqapp import exporters
from seqapp import runner
from seqapp import tasks
from seqapp.errors import DataError
from seqapp.tasks import classification
from seqapp.training import warm_start

from tiny_sentiment import NEGATIVE
from tiny_sentiment import POSITIVE
from tiny_sentiment import definition as _definition
from tiny_sentiment import write_csv as _write_csv


@pytest.fixture(scope="module")
def trained_run(sentiment_training):
    """The session's tiny sentiment run (conftest) and its training results."""
    return sentiment_training


def test_training_fits_the_tiny_set_and_writes_the_run(trained_run):
    work_dir, results = trained_run
    assert results["validation"]["accuracy"] == 1.0
    assert set(results) == {"validation", "test"}
    assert sum(map(sum, results["test"]["confusion_matrix"])) == 6
    for name in ("best.keras", "vocab.txt", "labels.txt", "history.csv", "metrics.json", "curves.png",
                 "confusion_test.png", "definition.yaml"):
        assert (work_dir / name).exists(), name
    assert (work_dir / "labels.txt").read_text() == "neg\npos\n"
    # Every epoch ran: a dataset of unknown length must not end training after one epoch.
    assert len((work_dir / "history.csv").read_text().splitlines()) == 1 + 25
    assert any((work_dir / "logs").rglob("events.out.tfevents.*"))


def test_metrics_match_numpy():
    metrics = evaluation.classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), 3)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1 per class: 1/2 (precision 1/2, recall 1/2), 4/5 (2/3, 1), 0.
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 0) / 3)


FRESH_PROCESS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the tf-text ops the graph uses
texts = json.loads(sys.argv[2])
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["serving_default"](text=tf.constant(texts))
examples = [tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
    bytes_list=tf.train.BytesList(value=[t.encode()]))})).SerializeToString() for t in texts]
classified = loaded.signatures["classify"](inputs=tf.constant(examples))
print(json.dumps({
    "seqapp_modules": sorted(m for m in sys.modules if m.split(".")[0] == "seqapp"),
    "label": [x.decode() for x in out["label"].numpy()],
    "probabilities": out["probabilities"].numpy().tolist(),
    "classes": [[c.decode() for c in row] for row in out["classes"].numpy()],
    "classify_scores": classified["scores"].numpy().tolist(),
    "classify_classes": [[c.decode() for c in row] for row in classified["classes"].numpy()],
}))
"""

AWKWARD = ["a wonderful heartfelt film", "a tedious mess", "", "   ", "x " * 50_000, "naïve café 😀 日本語"]


def test_export_round_trip_in_a_fresh_process(trained_run, tmp_path):
    work_dir, _ = trained_run
    path = runner.export(work_dir, tmp_path / "sentiment")
    assert path == tmp_path / "sentiment" / "1"
    assert runner.export(work_dir, tmp_path / "sentiment") == tmp_path / "sentiment" / "2"
    assert not [p for p in (tmp_path / "sentiment").iterdir() if not p.name.isdigit()]  # no leftovers

    run = runner.load_run(work_dir)
    definition, model, tokenizer, labels = run.definition, run.model, run.tokenizers["text"], run.labels
    ids = tokenizer.tokenize_padded(tf.constant(AWKWARD), definition.pipeline.max_length)
    expected = model({"token_ids": ids, "padding_mask": ids != 0}, training=False).numpy()

    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(path), json.dumps(AWKWARD)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["seqapp_modules"] == []  # the export needs no seqapp code to load and run
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_allclose(served["classify_scores"], expected, atol=1e-5)
    assert served["label"] == [labels[i] for i in expected.argmax(-1)]
    assert served["classes"] == served["classify_classes"] == [labels] * len(AWKWARD)
    assert served["label"][:2] == ["pos", "neg"]


def test_exported_signatures_are_tf_serving_ready(trained_run, tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    work_dir, _ = trained_run
    path = runner.export(work_dir, tmp_path / "sentiment", version=7)
    proto = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    signatures = proto.meta_graphs[0].signature_def
    assert signatures["classify"].method_name == "tensorflow/serving/classify"
    assert set(signatures["classify"].inputs) == {"inputs"}
    assert set(signatures["classify"].outputs) == {"classes", "scores"}
    assert signatures["serving_default"].method_name == "tensorflow/serving/predict"
    assert set(signatures["serving_default"].inputs) == {"text"}
    assert set(signatures["serving_default"].outputs) == {"label", "probabilities", "classes"}
    ops = {node.op for node in proto.meta_graphs[0].graph_def.node}
    ops |= {node.op for f in proto.meta_graphs[0].graph_def.library.function for node in f.node_def}
    assert not {op for op in ops if "Cudnn" in op or op.startswith("Xla") or op == "RaggedTensorToVariant"}
    assert (path / "assets" / "vocab.txt").exists()
    with pytest.raises(FileExistsError):
        runner.export(work_dir, tmp_path / "sentiment", version=7)


def test_export_carries_warmup_requests_and_a_model_card(trained_run, tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    work_dir, _ = trained_run
    path = runner.export(work_dir, tmp_path / "sentiment")
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(str(path / exporters.WARMUP_FILE))]
    assert len(records) == 6  # the validation file's six texts
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    for record in records:
        request = record.predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        text = tf.make_ndarray(request.inputs["text"])
        assert text.shape == (1,) and text[0].decode() in POSITIVE + NEGATIVE
        assert serve(text=tf.constant(text))["probabilities"].shape == (1, 2)
    card = json.loads((path / exporters.MODEL_CARD_FILE).read_text())
    assert card["task"] == "classification" and card["labels"] == ["neg", "pos"]
    assert card["metrics"]["test"]["examples"] == 6
    assert card["config"]["model"]["family"] == "bilstm"
    assert set(card["signatures"]) == {"serving_default", "classify"}
    assert card["seqapp_version"]


def test_op_check_refuses_ops_tf_serving_lacks(tmp_path):
    import tensorflow_text as tf_text

    from seqapp.errors import ExportError

    class Newer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def normalize(self, texts):
            # NormalizeUTF8WithOffsetsMap is newer than TF Serving's bundled tf-text.
            return tf_text.normalize_utf8_with_offsets_map(texts, "NFC")[0]

    def write(export_dir):
        module = Newer()
        tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.normalize})

    with pytest.raises(ExportError, match="NormalizeUTF8WithOffsetsMap"):
        exporters.publish(write, tmp_path / "model")
    assert list((tmp_path / "model").iterdir()) == []  # nothing half-written left behind


def test_cross_validation_reports_each_fold(tmp_path, seqapp_cache_dir):
    definition = _definition(tmp_path, train={"folds": 3, "epochs": 2})
    summary = runner.cross_validate(definition, tmp_path / "cv", verbose=0)
    assert len(summary["folds"]) == 3
    # Every labelled example (train, dev and test files) is tested exactly once.
    assert sum(fold["examples"] for fold in summary["folds"]) == 48 + 6 + 6
    assert summary["accuracy"]["mean"] == pytest.approx(np.mean(summary["accuracy"]["per_fold"]))


@pytest.mark.parametrize("class_weight, prior", [("none", 0.75), ("balanced", 0.5)])
def test_balanced_class_weight_trains_as_if_labels_were_balanced(tmp_path, seqapp_cache_dir, class_weight, prior):
    import keras

    # Every text is "pos" three times and "neg" once: the texts say nothing, so the model can only learn
    # the label prior, 3/4 "pos" as the data stands and 1/2 when each class weighs alike.
    definition = _definition(tmp_path, train={"class_weight": class_weight, "epochs": 1})
    texts = POSITIVE + NEGATIVE
    _write_csv(tmp_path / "train.csv", ([(t, "pos") for t in texts] * 3 + [(t, "neg") for t in texts]) * 10)
    inputter = tasks.of(definition).inputter(definition)
    assert inputter.label_names == ["neg", "pos"]
    assert inputter.label_counts.tolist() == [120, 360]
    runner.train(definition, tmp_path / "run", verbose=0)
    model = keras.models.load_model(tmp_path / "run" / "best.keras")
    positive = model.predict(inputter.dataset("train", training=False), verbose=0)[:, 1]
    assert positive.mean() == pytest.approx(prior, abs=0.07)
    assert positive.std() < 0.05


def test_a_run_does_not_depend_on_what_the_cache_held(tmp_path, monkeypatch, shared_data_dir):
    import keras

    # The first run prepares MR (which draws random numbers) and learns the vocabulary, the second
    # finds both cached: same seed, same weights.
    monkeypatch.setenv("SEQAPP_CACHE_DIR", str(tmp_path / "cache"))
    definition = config.validate({
        "task": "classification", "seed": 3, "data": {"dataset": "mr_polarity", "max_train_examples": 200},
        "tokenizer": {"vocab_size": 500}, "pipeline": {"max_length": 16, "tokens_per_batch": 256},
        "model": {"family": "gru", "embedding_dim": 8, "units": 8}, "train": {"epochs": 1},
    })
    weights = []
    for run in ("cold", "warm"):
        runner.train(definition, tmp_path / run, verbose=0)
        weights.append(keras.models.load_model(tmp_path / run / "best.keras").get_weights())
    for cold, warm in zip(*weights):
        np.testing.assert_array_equal(cold, warm)


def test_balanced_class_weights_formula():
    assert classification.balanced_class_weights(np.array([30, 10])) == {0: 40 / 60, 1: 40 / 20}
    # A class without training examples has nothing to weigh.
    assert classification.balanced_class_weights(np.array([5, 0, 5])) == {0: 10 / 15, 1: 1.0, 2: 10 / 15}


def test_killed_run_resumes_from_backup(tmp_path, seqapp_cache_dir):
    import keras

    definition = _definition(tmp_path, train={"epochs": 3})

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("killed")

    original_fit = keras.Model.fit

    def fit_then_die(self, *args, callbacks=(), **kwargs):
        return original_fit(self, *args, callbacks=list(callbacks) + [Kill()], **kwargs)

    keras.Model.fit = fit_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.train(definition, tmp_path / "run", verbose=0)
    finally:
        keras.Model.fit = original_fit
    assert any((tmp_path / "run" / "backup").iterdir())
    runner.train(definition, tmp_path / "run", verbose=0)
    epochs = [line.split(",")[0] for line in (tmp_path / "run" / "history.csv").read_text().splitlines()]
    # Epochs 0 and 1 before the kill (the kill fires after epoch 1 is logged), then only epoch 2.
    assert [e for e in epochs if e != "epoch"] == ["0", "1", "2"]


def _cli(args, tmp_path):
    import os

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "seqapp", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)


@pytest.mark.parametrize(
    "train_csv, test_csv, message",
    [
        ("text,sentiment\ngood,pos\n", "text,label\nok,pos\n", "no column 'label'"),
        ("text,label\ngood,pos\nbad,neg\n", "text,label\nfine,meh\n", "'meh'"),
        ("", "text,label\nok,pos\n", "empty"),
    ],
    ids=["unknown label column", "label only in test", "empty file"],
)
def test_cli_training_errors_name_the_problem(tmp_path, seqapp_cache_dir, train_csv, test_csv, message):
    (tmp_path / "train.csv").write_text(train_csv)
    (tmp_path / "test.csv").write_text(test_csv)
    (tmp_path / "def.yaml").write_text(
        "task: classification\ndata: {format: csv, train: train.csv, test: test.csv}\n"
        "tokenizer: {vocab_size: 50}\ntrain: {epochs: 1}\n")
    result = _cli(["train", "def.yaml", "--work-dir", "run"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert "csv" in result.stderr  # names the file


def test_cli_flags_override_the_file(tmp_path, seqapp_cache_dir):
    (tmp_path / "def.yaml").write_text("task: classification\ndata: {dataset: mr_polarity}\n")
    result = _cli(["train", "def.yaml", "--set", "model.family=lstmm"], tmp_path)
    assert result.returncode == 2
    assert "model.family" in result.stderr and "def.yaml" in result.stderr


def _same_weights(layer, other):
    return all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), other.get_weights()))


@pytest.mark.parametrize("labels, head_copied", [(["neg", "pos"], True), (["bad", "good"], False)])
def test_warm_start_copies_the_layers_that_fit(trained_run, tmp_path, labels, head_copied):
    import keras

    from seqapp.models import build_classifier

    work_dir, _ = trained_run
    definition = _definition(tmp_path)
    tokenizer = tasks.of(definition).inputter(definition).tokenizers["text"]
    model = build_classifier(tokenizer.vocab_size + 1, 2, **definition.model.model_dump())
    copied = warm_start.copy_layers(model, work_dir, tokenizer, labels, "def.yaml")
    source = keras.models.load_model(work_dir / "best.keras")
    expected = ["embedding", "bidirectional_0"] + (["probabilities"] if head_copied else [])
    assert copied == expected
    for layer in model.layers:
        if layer.weights:
            assert _same_weights(layer, source.get_layer(layer.name)) == (layer.name in expected), layer.name


@pytest.mark.parametrize("change, message", [
    ({"tokenizer": {"vocab_size": 30}}, "another vocabulary"),
    ({"model": {"family": "tcn", "embedding_dim": 8}}, "no layer"),
])
def test_warm_start_refuses_a_model_that_does_not_fit(trained_run, tmp_path, change, message):
    from seqapp.errors import ConfigError
    from seqapp.models import build_classifier

    work_dir, _ = trained_run
    definition = _definition(tmp_path, **change)
    tokenizer = tasks.of(definition).inputter(definition).tokenizers["text"]
    model = build_classifier(tokenizer.vocab_size + 1, 2, **definition.model.model_dump())
    with pytest.raises(ConfigError, match=message) as error:
        warm_start.copy_layers(model, work_dir, tokenizer, ["neg", "pos"], "def.yaml")
    assert "train.init_from" in str(error.value)


def test_init_from_a_definition_trains_it_once(tmp_path, seqapp_cache_dir, monkeypatch):
    import keras

    # The starting model learns the tiny set; the run built on it, with a learning rate too small to
    # move it, starts where that one ended and so already scores 100% on the validation split.
    pre = tmp_path / "pre.yaml"
    definition = _definition(tmp_path, train={"init_from": "pre.yaml", "epochs": 1, "learning_rate": 1e-9})
    pre.write_text(json.dumps(_definition(tmp_path).model_dump(mode="json", exclude={"origin", "base_dir"})))
    results = runner.train(definition, tmp_path / "run", verbose=0)
    first = warm_start.initial_run(definition)
    assert first.parent == seqapp_cache_dir / "init_runs"
    assert results["validation"]["accuracy"] == 1.0
    model = keras.models.load_model(tmp_path / "run" / "best.keras")
    start = keras.models.load_model(first / "best.keras")
    np.testing.assert_allclose(model.get_layer("probabilities").get_weights()[0],
                               start.get_layer("probabilities").get_weights()[0], atol=1e-6)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(runner, "train", no_training)
    assert warm_start.initial_run(definition) == first


def test_init_from_keys_train_the_start_at_this_models_size(tmp_path, seqapp_cache_dir):
    import keras

    # pre.yaml says 16 units; a 24-unit model passing model.units gets a 24-unit start (its BiLSTM
    # copied, unmoved at a learning rate of 1e-9), cached apart from the 16-unit one.
    pre = tmp_path / "pre.yaml"
    pre.write_text(json.dumps(_definition(tmp_path, train={"epochs": 2}).model_dump(
        mode="json", exclude={"origin", "base_dir"})))
    definition = _definition(tmp_path, model={"units": 24},
                             train={"init_from": "pre.yaml", "init_from_keys": ["model.units"], "epochs": 1,
                                    "learning_rate": 1e-9})
    runner.train(definition, tmp_path / "run", verbose=0)
    start = warm_start.initial_run(definition)
    assert config.load_definition(start / "definition.yaml").model.units == 24
    own_size = _definition(tmp_path, model={"units": 16}, train={"init_from": "pre.yaml",
                                                                 "init_from_keys": ["model.units"]})
    assert warm_start.initial_run(own_size) != start
    model = keras.models.load_model(tmp_path / "run" / "best.keras")
    encoder = [layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)][0]
    started = keras.models.load_model(start / "best.keras").get_layer(encoder.name)
    for trained, initial in zip(encoder.get_weights(), started.get_weights()):
        np.testing.assert_allclose(trained, initial, atol=1e-6)


@pytest.mark.parametrize("train, message", [
    ({"init_from_keys": ["model.units"]}, "set train.init_from"),
    ({"init_from": "pre.yaml", "init_from_keys": ["model.width"]}, "no key 'model.width'"),
])
def test_init_from_keys_errors_name_the_problem(tmp_path, train, message):
    from seqapp.errors import ConfigError

    with pytest.raises(ConfigError, match=message) as error:
        _definition(tmp_path, train=train)
    assert "train.init_from_keys" in str(error.value)


def test_init_from_keys_refused_for_a_trained_run(tmp_path, seqapp_cache_dir):
    from seqapp.errors import ConfigError

    runner.train(_definition(tmp_path, train={"epochs": 1}), tmp_path / "pre", verbose=0)
    definition = _definition(tmp_path, train={"init_from": "pre", "init_from_keys": ["model.units"]})
    with pytest.raises(ConfigError, match="can be passed to a definition only"):
        warm_start.initial_run(definition)


@pytest.mark.parametrize("init_from, message", [
    ("missing.yaml", "neither a run folder nor a pipeline definition"),
    (".", "holds no trained model"),
])
def test_init_from_errors_name_the_problem(tmp_path, seqapp_cache_dir, init_from, message):
    from seqapp.errors import ConfigError

    definition = _definition(tmp_path, train={"init_from": init_from})
    with pytest.raises(ConfigError, match=message) as error:
        warm_start.initial_run(definition)
    assert "train.init_from" in str(error.value)
