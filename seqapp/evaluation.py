"""How good a model is: classification metrics, translation quality (batched decoding of whole
splits, sacreBLEU, perplexity), caption quality (BLEU-4 and CIDEr-D against every reference, exact
match, and what a caption says of a generated scene), and the run's `metrics.json` they are kept in."""

import collections
import json
import math
import re
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


def caption_metrics(hypotheses, references, scenes=None):
    """Caption quality, every figure a fraction in [0, 1] except CIDEr-D (0 to 10).

    Args:
        hypotheses: one caption per image.
        references: every reference caption of each image (lists of any lengths).
        scenes: for `shapes_captions`, each image's scene
            (`seqapp.datasets.shapes_captions.scenes`): adds `slot_accuracy` (the
            caption names exactly the scene's objects and only true relations) and,
            over the images that hold a held-out colour-shape pair,
            `heldout_pair_recall` (every such pair is named).

    Returns:
        `{"bleu4", "cider_d", "exact_match", "images"}` and, with scenes,
        `slot_accuracy` and `heldout_pair_recall` (None when no image holds a held-out pair).
    """
    normalized = [normalize_caption(h) for h in hypotheses]
    refs = [[normalize_caption(r) for r in rs] for rs in references]
    streams = [[rs[i] if i < len(rs) else None for rs in refs] for i in range(max(map(len, refs), default=0))]
    metrics = {
        "bleu4": sacrebleu.corpus_bleu(normalized, streams).score / 100 if normalized else 0.0,
        "cider_d": cider_d(normalized, refs),
        "exact_match": float(np.mean([h in rs for h, rs in zip(normalized, refs)])) if refs else 0.0,
        "images": len(hypotheses),
    }
    if scenes is not None:
        from seqapp.datasets.shapes_captions import grammar

        metrics["slot_accuracy"] = float(np.mean([grammar.describes(h, scene)
                                                  for h, scene in zip(hypotheses, scenes)]))
        held = [all(grammar.mentions_pair(h, colour, shape) for colour, shape in grammar.heldout_pairs(scene))
                for h, scene in zip(hypotheses, scenes) if grammar.heldout_pairs(scene)]
        metrics["heldout_pair_recall"] = float(np.mean(held)) if held else None
    return metrics


def normalize_caption(text):
    """Lower case, punctuation removed, words separated by one space."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def cider_d(hypotheses, references, *, sigma=6.0, max_n=4):
    """CIDEr-D (Vedantam et al., 2015) of tokenized captions (words split on spaces).

    Each caption is a TF-IDF vector of its 1- to 4-grams, document frequencies
    counted over the images' reference sets; a hypothesis scores, per n, the
    cosine with each reference with its counts clipped to the reference's, times
    a Gaussian penalty on the length difference; the image's score is the mean
    over references and n, times 10, and the corpus score the mean over images.
    """
    def grams(text):
        words = text.split()
        return [collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
                for n in range(1, max_n + 1)], len(words)

    refs = [[grams(r) for r in rs] for rs in references]
    # An n-gram's document frequency: the number of images whose references hold it.
    document_frequency = collections.Counter(
        g for rs in refs for g in {g for counts, _ in rs for c in counts for g in c})
    log_images = math.log(max(len(refs), 1))

    def vector(counts):
        vec = [{g: tf_ * (log_images - math.log(max(1.0, document_frequency[g]))) for g, tf_ in c.items()}
               for c in counts]
        return vec, [math.sqrt(sum(v * v for v in n.values())) for n in vec]

    scores = []
    for hypothesis, rs in zip(hypotheses, refs):
        (hyp_vec, hyp_norm), hyp_len = vector(grams(hypothesis)[0]), len(hypothesis.split())
        total = 0.0
        for counts, ref_len in rs:
            ref_vec, ref_norm = vector(counts)
            penalty = math.exp(-((hyp_len - ref_len) ** 2) / (2 * sigma ** 2))
            for n in range(max_n):
                dot = sum(min(v, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0) for g, v in hyp_vec[n].items())
                if hyp_norm[n] and ref_norm[n]:
                    total += penalty * dot / (hyp_norm[n] * ref_norm[n])
        scores.append(10.0 * total / (max_n * max(len(rs), 1)))
    return float(np.mean(scores)) if scores else 0.0


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
