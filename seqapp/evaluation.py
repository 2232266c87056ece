"""How good a model is: classification metrics, translation quality (batched decoding of whole
splits, sacreBLEU, perplexity), and the run's `metrics.json` they are kept in."""

import json
import math
from pathlib import Path

import numpy as np
import sacrebleu
import tensorflow as tf

from seqapp.losses import MaskedSequenceLoss


def translate_function(translator, *, beam_size=None, cached=True):
    """`translator.translate(...)["translation"]` traced once for any batch of strings."""
    return tf.function(
        lambda texts: translator.translate(texts, beam_size=beam_size, cached=cached)["translation"],
        input_signature=[tf.TensorSpec([None], tf.string)],
    )


def translate_all(translator, sources, *, beam_size=None, cached=True, batch_size=64):
    """Translates a list of strings with one traced graph, in batches of similar length.

    Args:
        translator: a `seqapp.translator.Translator`.
        sources: source sentences.
        beam_size: overrides the translator's beam size.
        cached: decode with the incremental cache.
        batch_size: sentences per call.

    Returns:
        The translations (str), in the order of `sources`.
    """
    translate = translate_function(translator, beam_size=beam_size, cached=cached)
    # Length-sorted batches waste fewer decoding steps on finished rows.
    order = np.argsort([len(text) for text in sources], kind="stable")
    translations = [None] * len(sources)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        outputs = translate(tf.constant([sources[i] for i in chunk], tf.string)).numpy()
        for index, text in zip(chunk, outputs):
            translations[index] = text.decode("utf-8")
    return translations


def translation_metrics(hypotheses, references):
    """sacreBLEU's BLEU and chrF (cased, on detokenized text, its default 13a tokenization)."""
    references = [list(references)]
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, references).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, references).score,
        "sentences": len(hypotheses),
    }


def perplexity(model, batches):
    """exp of the mean negative log-likelihood per real target token (teacher forcing)."""
    loss = MaskedSequenceLoss()
    step = tf.function(lambda features, targets: (loss.call(targets, model(features, training=False)),
                                                  tf.reduce_sum(tf.cast(targets != 0, tf.float32))),
                       reduce_retracing=True)
    total = tokens = 0.0
    for features, targets in batches:
        mean_nll, count = step(features, targets)
        total += float(mean_nll) * float(count)
        tokens += float(count)
    return math.exp(total / tokens) if tokens else float("nan")


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


def classify(model, dataset, labels):
    """`classification_metrics` of a classifier over a `(features, labels)` dataset; None when
    the split is unlabelled (label -1, as GLUE's hidden test labels)."""
    y_true, y_pred = predict_labels(model, dataset)
    if (y_true < 0).any():
        return None
    return classification_metrics(y_true, y_pred, len(labels))


def confusion_text(matrix, labels):
    """A confusion matrix as aligned text, rows true and columns predicted."""
    width = max(len(label) for label in labels) + 2
    lines = [" " * width + "".join(f"{label:>{width}}" for label in labels) + "   <- predicted"]
    for label, row in zip(labels, matrix):
        lines.append(f"{label:>{width}}" + "".join(f"{value:>{width}}" for value in row))
    return "\n".join(lines)


def merge_metrics(work_dir, results, **facts):
    """Merges `{split: metrics}` (and `facts`) into the run's `metrics.json`; returns `results`."""
    path = Path(work_dir) / "metrics.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**kept, **facts, **results}, indent=2))
    return results
