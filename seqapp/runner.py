"""Training, evaluation, cross-validation and export, driven by a definition.

A run lives in one work directory:

    definition.yaml  the validated definition the run used
    vocab.txt        classification: the WordPiece vocabulary (exported with the model)
    labels.txt       classification: class names in label-id order
    source_vocab.txt, target_vocab.txt   translation: each side's vocabulary
    warmup.txt       a few real inputs, replayed by TF Serving when the export loads
    best.keras       the best checkpoint (by validation accuracy, or loss for translation)
    backup/          BackupAndRestore state: a killed run resumes from its last epoch
    logs/            TensorBoard
    history.csv      per-epoch metrics
    training.json    wall time, epochs and tokens/s of the fit
    metrics.json     classification: accuracy, macro-F1 and confusion matrix per split;
                     translation: perplexity, BLEU and chrF per split
    curves.png, confusion_<split>.png
"""

import hashlib
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml

from seqapp import config
from seqapp import embeddings
from seqapp import evaluation
from seqapp import exporters
from seqapp import plots
from seqapp import settings
from seqapp.data import sources
from seqapp.errors import ConfigError
from seqapp.inputters import Inputter
from seqapp.losses import MaskedSequenceLoss
from seqapp.losses import masked_accuracy
from seqapp.models import build_classifier
from seqapp.models import build_seq2seq
from seqapp.schedules import WarmupInverseSqrt
from seqapp.tokenizers import WordPieceTokenizer
from seqapp.translator import Translator


def classification_metrics(y_true, y_pred, num_classes):
    """Accuracy, macro-F1 and the confusion matrix (rows: true, columns: predicted)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    true_positives = np.diag(matrix).astype(float)
    precision = np.divide(true_positives, matrix.sum(0), out=np.zeros(num_classes), where=matrix.sum(0) > 0)
    recall = np.divide(true_positives, matrix.sum(1), out=np.zeros(num_classes), where=matrix.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes),
                   where=(precision + recall) > 0)
    return {
        "accuracy": float(true_positives.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(f1.mean()),
        "examples": int(matrix.sum()),
        "confusion_matrix": matrix.tolist(),
    }


def predict_labels(model, dataset):
    """`(y_true, y_pred)` over a finite `(features, labels)` dataset, in order."""
    predict = tf.function(lambda features: model(features, training=False), reduce_retracing=True)
    y_true, y_pred = [], []
    for features, labels in dataset:
        y_pred.append(np.argmax(predict(features).numpy(), axis=-1))
        y_true.append(labels.numpy())
    return np.concatenate(y_true), np.concatenate(y_pred)


def _split_or_none(inputter, split):
    try:
        return inputter.dataset(split, training=False)
    except ConfigError:  # the data has no such split
        return None


def _write_warmup_samples(inputter, field, path, count=8):
    """Keeps a few real validation (else training) inputs: the export's warmup requests."""
    try:
        texts = inputter.texts("validation", field, count)
    except ConfigError:  # no validation split
        texts = inputter.texts("train", field, count)
    path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")


def confusion_text(matrix, labels):
    width = max(len(label) for label in labels) + 2
    lines = [" " * width + "".join(f"{label:>{width}}" for label in labels) + "   <- predicted"]
    for label, row in zip(labels, matrix):
        lines.append(f"{label:>{width}}" + "".join(f"{value:>{width}}" for value in row))
    return "\n".join(lines)


def balanced_class_weights(counts):
    """`{class: examples / (classes * examples of the class)}` (sklearn's "balanced"); a class
    absent from training gets weight 1 (it has no example to weigh).

    >>> balanced_class_weights(np.array([30, 10]))
    {0: 0.6666666666666666, 1: 2.0}
    """
    counts = np.asarray(counts)
    total, classes = counts.sum(), len(counts)
    return {index: float(total / (classes * count)) if count else 1.0 for index, count in enumerate(counts)}


def _reseed(definition):
    """Seeds again just before the model is built. Preparing a dataset the first time draws from
    the global random state, and loading it from the cache does not: without this, a run's
    initial weights would depend on what the cache held."""
    keras.utils.set_random_seed(definition.seed)


def initial_run(definition):
    """The finished run folder `train.init_from` names. A definition file there is trained
    first, once, into `SEQAPP_CACHE_DIR/init_runs/` (keyed by its settings and data).

    Raises:
        ConfigError: the path is neither a run folder with a trained model nor a definition.
    """
    path = Path(definition.base_dir, definition.train.init_from)
    if path.is_dir():
        if not (path / "best.keras").exists():
            raise ConfigError(definition.origin, "train.init_from", f"{path} holds no trained model (best.keras)")
        return path
    if not path.is_file():
        raise ConfigError(definition.origin, "train.init_from",
                          f"{path} is neither a run folder nor a pipeline definition")
    source = config.load_definition(path)
    if source.train.init_from is not None:  # keeps the cache key whole (and rules out cycles)
        raise ConfigError(path, "train.init_from", "a definition used as another's init_from starts at random")
    key = json.dumps({"definition": source.model_dump(mode="json", exclude={"origin", "base_dir"}),
                      "data": sources.identity(source)}, sort_keys=True)
    work_dir = settings.cache_dir() / "init_runs" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if not (work_dir / "metrics.json").exists():  # written last: the run finished
        print(f"Training {path} first (train.init_from of {definition.origin}) in {work_dir} ...", flush=True)
        train(source, work_dir)
    return work_dir


def warm_start(model, run_dir, tokenizer, labels, origin):
    """Copies into `model` the weights of each layer of `run_dir`'s best model that has the
    same name and weight shapes; the output layer only when the labels are the same.

    Returns:
        The names of the layers copied.

    Raises:
        ConfigError: the run read another vocabulary, or no layer fits.
    """
    run_dir = Path(run_dir)
    if (run_dir / "vocab.txt").read_bytes() != Path(tokenizer.vocab_path).read_bytes():
        raise ConfigError(origin, "train.init_from", f"{run_dir} used another vocabulary: give both definitions "
                          "the same tokenizer settings and embeddings.corpus")
    source = keras.models.load_model(run_dir / "best.keras")
    same_labels = (run_dir / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1] == list(labels)
    copied = []
    for layer in model.layers:
        if not layer.weights or (layer.name == "probabilities" and not same_labels):
            continue
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        if [tuple(w.shape) for w in other.weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(other.get_weights())
            copied.append(layer.name)
    if not copied:
        raise ConfigError(origin, "train.init_from", f"no layer of {run_dir}'s model has this model's name and "
                          "weight shapes (another model family or size?)")
    print(f"Starting from {run_dir}: {', '.join(copied)}", flush=True)
    return copied


def train(definition, work_dir, *, fold=None, verbose="auto"):
    """Trains the definition's model and evaluates it on the validation and (labelled) test splits.

    Args:
        definition: a `Definition` (classification or translation).
        work_dir: the run's folder; a run killed midway resumes from `backup/`.
        fold: the held-out fold in cross-validation, or None.
        verbose: Keras `fit` verbosity.

    Returns:
        `{split: metrics}`: as in `classification_metrics`, or for translation
        perplexity, BLEU and chrF (see `evaluation.translation_metrics`).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(definition.seed)
    inputter = Inputter(definition, fold=fold)
    (work_dir / "definition.yaml").write_text(yaml.safe_dump(definition.model_dump(mode="json"), sort_keys=False))
    cfg = definition.train
    if definition.task == "classification":
        tokenizer = inputter.tokenizers["text"]
        labels = inputter.label_names
        shutil.copyfile(tokenizer.vocab_path, work_dir / "vocab.txt")
        (work_dir / "labels.txt").write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        _write_warmup_samples(inputter, "text", work_dir / "warmup.txt")
        vectors = (embeddings.pretrained_embeddings(definition, tokenizer, definition.model.embedding_dim)
                   if definition.embeddings is not None else None)
        _reseed(definition)
        model = build_classifier(definition.model, tokenizer.vocab_size + 1, len(labels))
        if vectors is not None:
            layer = model.get_layer("embedding")
            layer.set_weights([vectors])
            layer.trainable = definition.embeddings.trainable
        if cfg.init_from is not None:
            warm_start(model, initial_run(definition), tokenizer, labels, definition.origin)
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        monitor = "accuracy"
        class_weight = balanced_class_weights(inputter.label_counts) if cfg.class_weight == "balanced" else None
    else:
        for side in ("source", "target"):
            shutil.copyfile(inputter.tokenizers[side].vocab_path, work_dir / f"{side}_vocab.txt")
        _write_warmup_samples(inputter, "source", work_dir / "warmup.txt")
        _reseed(definition)
        model = build_seq2seq(definition.model, inputter.tokenizers["source"].vocab_size + 1,
                              inputter.tokenizers["target"].vocab_size + 1)
        rate = WarmupInverseSqrt(cfg.learning_rate, cfg.warmup_steps) if cfg.warmup_steps else cfg.learning_rate
        model.compile(optimizer=keras.optimizers.Adam(rate, beta_2=0.98, epsilon=1e-9, clipnorm=cfg.clipnorm),
                      loss=MaskedSequenceLoss(cfg.label_smoothing), metrics=[masked_accuracy])
        monitor = "loss"
        class_weight = None

    validation = _split_or_none(inputter, "validation")
    resuming = (work_dir / "backup").exists()  # BackupAndRestore left state: a killed run
    monitor = f"val_{monitor}" if validation is not None else monitor
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(work_dir / "best.keras"), monitor=monitor, save_best_only=True),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.early_stopping_patience,
                                      restore_best_weights=True),
        keras.callbacks.TensorBoard(str(work_dir / "logs")),
        keras.callbacks.CSVLogger(str(work_dir / "history.csv"), append=resuming),
    ]
    started = time.perf_counter()
    history = model.fit(
        inputter.dataset("train", training=True),
        validation_data=validation,
        epochs=cfg.epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the pipeline shuffles (seeded) before bucketing
        class_weight=class_weight,
    )
    seconds = time.perf_counter() - started
    epochs = len(history.history.get("loss", []))
    (work_dir / "training.json").write_text(json.dumps({
        "wall_seconds": seconds, "epochs": epochs, "parameters": model.count_params(),
        "tokens_per_second": epochs * int(inputter.train_lengths.sum()) / seconds if seconds else None,
    }, indent=2))
    plots.training_curves(history.history, work_dir / "curves.png")
    if definition.task == "translation":
        results = evaluate(work_dir, ("validation", "test"), beam_size=1)
    else:
        results = _evaluate_classifier(work_dir, inputter, validation)
    return results


def _evaluate_classifier(work_dir, inputter, validation):
    best = keras.models.load_model(work_dir / "best.keras")
    labels = inputter.label_names
    results = {}
    for split, dataset in (("validation", validation), ("test", _split_or_none(inputter, "test"))):
        if dataset is None:
            continue
        y_true, y_pred = predict_labels(best, dataset)
        if (y_true < 0).any():  # an unlabelled split (GLUE hides SST-2's test labels)
            continue
        results[split] = classification_metrics(y_true, y_pred, len(labels))
        plots.confusion_matrix(results[split]["confusion_matrix"], labels, work_dir / f"confusion_{split}.png",
                               title=f"{split}: accuracy {results[split]['accuracy']:.3f}")
    (work_dir / "metrics.json").write_text(json.dumps({"labels": labels, **results}, indent=2))
    return results


def evaluate(work_dir, splits=("test",), *, beam_size=None, cached=True):
    """Translation metrics of a finished translation run on its own splits.

    Perplexity (teacher-forced) and BLEU/chrF of the decoded split (sacreBLEU,
    cased, detokenized). Results are merged into the run's `metrics.json`.

    Args:
        work_dir: the run folder.
        splits: the splits to evaluate (those the data lacks are skipped).
        beam_size: overrides the definition's `decode.beam_size`.
        cached: decode with the incremental cache.

    Returns:
        `{split: metrics}`.
    """
    work_dir = Path(work_dir)
    definition, translator = load_translator(work_dir)
    inputter = Inputter(definition, tokenizers={"source": translator.source_tokenizer,
                                                "target": translator.target_tokenizer})
    metrics_path = work_dir / "metrics.json"
    results = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    for split in splits:
        batches = _split_or_none(inputter, split)
        if batches is None:
            continue
        hypotheses = evaluation.translate_all(translator, inputter.texts(split, "source"), beam_size=beam_size,
                                              cached=cached)
        results[split] = {**evaluation.translation_metrics(hypotheses, inputter.texts(split, "target")),
                          "perplexity": evaluation.perplexity(translator.model, batches),
                          "beam_size": beam_size or definition.decode.beam_size}
    metrics_path.write_text(json.dumps(results, indent=2))
    return results


def cross_validate(definition, work_dir, *, verbose="auto"):
    """k-fold cross-validation (k = `definition.train.folds`); one run folder per fold.

    Returns:
        `{"folds": [test metrics per fold], "accuracy": {"mean", "std"}, "macro_f1": {...}}`.
    """
    k = definition.train.folds
    if k < 2:
        raise ConfigError(definition.origin, "train.folds", "cross-validation needs at least 2 folds")
    per_fold = [train(definition, Path(work_dir) / f"fold{fold}", fold=fold, verbose=verbose)["test"]
                for fold in range(k)]
    summary = {"folds": per_fold}
    for metric in ("accuracy", "macro_f1"):
        values = np.array([result[metric] for result in per_fold])
        summary[metric] = {"mean": float(values.mean()), "std": float(values.std()), "per_fold": values.tolist()}
    (Path(work_dir) / "cv_metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_definition(work_dir):
    """The validated definition of a finished run."""
    work_dir = Path(work_dir)
    if not (work_dir / "best.keras").exists():
        raise ConfigError(work_dir, "best.keras", "no trained model in this run folder (run `seqapp train` first)")
    return config.validate(yaml.safe_load((work_dir / "definition.yaml").read_text()),
                           source=work_dir / "definition.yaml")


def _load_definition_and_model(work_dir, task):
    definition = run_definition(work_dir)
    if definition.task != task:
        raise ConfigError(Path(work_dir) / "definition.yaml", "task", f"this is a {definition.task} run, not {task}")
    return definition, keras.models.load_model(Path(work_dir) / "best.keras")


def _run_tokenizer(definition, vocab_path):
    cfg = definition.tokenizer
    return WordPieceTokenizer(vocab_path, lower_case=cfg.lower_case, normalization_form=cfg.normalization_form)


def load_run(work_dir):
    """The definition, best model, tokenizer and labels of a finished classification run."""
    definition, model = _load_definition_and_model(work_dir, "classification")
    tokenizer = _run_tokenizer(definition, Path(work_dir) / "vocab.txt")
    labels = (Path(work_dir) / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1]
    return definition, model, tokenizer, labels


def load_translator(work_dir):
    """The definition and a `Translator` over the best model of a finished translation run."""
    definition, model = _load_definition_and_model(work_dir, "translation")
    source, target = (_run_tokenizer(definition, Path(work_dir) / f"{side}_vocab.txt") for side in ("source", "target"))
    return definition, Translator(model, source, target, max_length=definition.pipeline.max_length,
                                  decode=definition.decode)


def export(work_dir, base_path, version=None):
    """Exports a run's best model to `base_path/<version>/` (see `exporters.export_classifier`
    and `exporters.export_translator`), with warmup requests from the run's own inputs and a
    model card."""
    work_dir = Path(work_dir)
    definition = run_definition(work_dir)
    metrics_path = work_dir / "metrics.json"
    warmup = work_dir / "warmup.txt"
    card = {
        "task": "translation" if definition.task == "translation" else "sentiment classification",
        "data": definition.data.model_dump(mode="json"),
        "config": definition.model_dump(mode="json", exclude={"origin", "base_dir"}),
        "metrics": json.loads(metrics_path.read_text()) if metrics_path.exists() else None,
        "run": str(work_dir.resolve()),
    }
    options = {"card": card,
               "warmup_texts": json.loads(warmup.read_text(encoding="utf-8")) if warmup.exists() else ()}
    if definition.task == "translation":
        _, translator = load_translator(work_dir)
        return exporters.export_translator(translator, base_path, version, **options)
    _, model, tokenizer, labels = load_run(work_dir)
    return exporters.export_classifier(model, tokenizer, labels, definition.pipeline.max_length, base_path,
                                       version, **options)
