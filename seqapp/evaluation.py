"""Translation quality: batched decoding of whole splits, sacreBLEU and perplexity."""

import math

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
