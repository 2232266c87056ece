"""tf.data input pipelines: tokenize, truncate, bucket, pad, mask, shuffle, prefetch.

Elements before batching are dicts of int64 tensors: token sequences under
keys ending in `token_ids`, and one more key holding what the model predicts (a
scalar `label`, or a sequence of `target_ids`). Batches are `(features, labels)`
as Keras' `fit` takes them, with KerasHub's feature names, every `*token_ids`
getting its `*padding_mask`:

- classification: `{"token_ids", "padding_mask"}`, `label`;
- seq2seq (teacher forcing): `{"encoder_token_ids", "encoder_padding_mask",
  "decoder_token_ids", "decoder_padding_mask"}`, target ids; the decoder input
  is `[START] y1 .. yn` and the target `y1 .. yn [END]`;
- captioning: `{"image", "decoder_token_ids", "decoder_padding_mask"}`, target
  ids (`image` is one of the `DENSE_FEATURES`, which pass through as they are).

Padding is id 0 (`[PAD]`) and every `*_padding_mask` is True exactly on real tokens.
"""

import numpy as np
import tensorflow as tf

from seqapp.data import batching
from seqapp.tokenizers.wordpiece import END_ID
from seqapp.tokenizers.wordpiece import START_ID

AUTOTUNE = tf.data.AUTOTUNE
BATCHING_MODES = ("bucket", "batch_max", "global_max")
# Inputs that are not token sequences: fixed-shape tensors batched as they are (captioning's images).
DENSE_FEATURES = ("image",)
# Inputs padded along with the token ids but not masked by them: each token's word and the words'
# character ids, for a classifier that reads a character-level biLM (`encode_classification`).
WORD_FEATURES = ("word_index", "chars")
# Tokenizing a thousand strings per call amortizes the per-call cost of tf-text ops.
_TOKENIZE_CHUNK = 1024


def _tokenize(dataset, tokenize_fields):
    """Maps `{field: tokenizer}` over string fields, in parallel and in order.

    Returns elements whose fields hold 1-D int64 token ids; other fields pass through.
    """

    def tokenize_chunk(chunk):
        out = dict(chunk)
        for field, tokenizer in tokenize_fields.items():
            out[field] = tokenizer.tokenize(chunk[field])
        return out

    return dataset.batch(_TOKENIZE_CHUNK).map(tokenize_chunk, num_parallel_calls=AUTOTUNE).unbatch()


def _fit_length(ids, max_length, overlong):
    if overlong == "truncate":
        return ids[:max_length]
    return ids


def encode_classification(examples, tokenizer, *, max_length, overlong="truncate", characters=None):
    """Tokenizes `{"text", "label"}` examples into `{"token_ids", "label"}`.

    Args:
        examples: dataset of `{"text": string, "label": int}`.
        tokenizer: has `tokenize(strings [batch]) -> RaggedTensor`.
        max_length: the most tokens an example keeps.
        overlong: "truncate" longer texts, or "drop" them.
        characters: a `CharacterTokenizer`: examples also get `word_index` (each
            token's word, see `WordPieceTokenizer.tokenize_with_words`) and `chars`
            (each word's character ids, `[words, max_chars]`).
    """
    examples = examples.map(lambda ex: {"text": ex["text"], "label": ex["label"]})
    if characters is None:
        encoded = _tokenize(examples, {"text": tokenizer})
    else:
        encoded = examples.batch(_TOKENIZE_CHUNK).map(
            lambda chunk: {**word_features(tokenizer, characters, chunk["text"]), "label": chunk["label"]},
            num_parallel_calls=AUTOTUNE).unbatch()
    encoded = encoded.map(
        lambda ex: {**{key: ex[key][:max_length] for key in WORD_FEATURES if key in ex},
                    "token_ids": _fit_length(ex["text"], max_length, overlong), "label": ex["label"]},
        num_parallel_calls=AUTOTUNE,
    )
    if overlong == "drop":
        encoded = encoded.filter(lambda ex: tf.size(ex["token_ids"]) <= max_length)
    return encoded


def word_features(tokenizer, characters, texts):
    """`{"text": token ids, "word_index", "chars"}` of a batch of texts, ragged, one row per text
    (`tokenizer` is a `WordPieceTokenizer`, `characters` a `CharacterTokenizer`)."""
    ids, word_index, words = tokenizer.tokenize_with_words(texts)
    return {"text": ids, "word_index": word_index, "chars": words.with_flat_values(
        characters.encode_words(words.flat_values))}


def encode_seq2seq(examples, source_tokenizer, target_tokenizer, *, max_length, overlong="truncate"):
    """Tokenizes `{"source", "target"}` pairs for teacher forcing.

    Returns elements `{"encoder_token_ids", "decoder_token_ids", "target_ids"}`
    where the decoder input starts with `[START]` and the target ends with `[END]`;
    both are at most `max_length` long.
    """
    encoded = _tokenize(
        examples.map(lambda ex: {"source": ex["source"], "target": ex["target"]}),
        {"source": source_tokenizer, "target": target_tokenizer},
    )
    encoded = encoded.map(
        lambda ex: {"encoder_token_ids": _fit_length(ex["source"], max_length, overlong),
                    **_teacher_forcing(ex["target"], max_length, overlong)},
        num_parallel_calls=AUTOTUNE,
    )
    if overlong == "drop":
        encoded = encoded.filter(lambda ex: sequence_length(ex) <= max_length)
    return encoded


def encode_captions(examples, tokenizer, *, max_length, overlong="truncate"):
    """Tokenizes `{"image", "caption"}` examples for teacher forcing.

    Returns elements `{"image", "decoder_token_ids", "target_ids"}` (the image as
    it was, the caption as `encode_seq2seq`'s target).
    """
    encoded = _tokenize(examples.map(lambda ex: {"image": ex["image"], "caption": ex["caption"]}),
                        {"caption": tokenizer})
    encoded = encoded.map(lambda ex: {"image": ex["image"], **_teacher_forcing(ex["caption"], max_length, overlong)},
                          num_parallel_calls=AUTOTUNE)
    if overlong == "drop":
        encoded = encoded.filter(lambda ex: sequence_length(ex) <= max_length)
    return encoded


def _teacher_forcing(target, max_length, overlong):
    """Decoder input `[START] y1 .. yn` and target `y1 .. yn [END]`, at most `max_length` each."""
    target = _fit_length(target, max_length - 1, overlong)
    return {"decoder_token_ids": tf.concat([[tf.constant(START_ID, tf.int64)], target], 0),
            "target_ids": tf.concat([target, [tf.constant(END_ID, tf.int64)]], 0)}


def sequence_length(element):
    """The length an element is bucketed by: its longest sequence (scalars do not count)."""
    lengths = [tf.size(value) for value in element.values() if value.shape.rank == 1]
    return tf.cast(tf.reduce_max(tf.stack(lengths)), tf.int32)


def example_lengths(encoded):
    """All `sequence_length`s of a (finite) encoded dataset, as a numpy array."""
    # tf.data sizes a batch's buffer by the batch size: 4096 costs a small split 0.2 s where 65536 cost 1.2 s.
    lengths = encoded.map(sequence_length, num_parallel_calls=AUTOTUNE).batch(4096)
    return np.concatenate([batch.numpy() for batch in lengths] or [np.zeros([0], np.int32)])


def _to_features(batch):
    """Splits a padded batch into Keras `(features, labels)`: each `*token_ids` with its
    `*padding_mask` (True on real tokens) and the `DENSE_FEATURES` are the features, the one
    other key the labels."""
    features = {key: batch[key] for key in DENSE_FEATURES + WORD_FEATURES if key in batch}
    (labels,) = [value for key, value in batch.items() if not key.endswith("token_ids") and key not in features]
    for key, ids in batch.items():
        if key.endswith("token_ids"):
            features[key] = ids
            features[key[: -len("token_ids")] + "padding_mask"] = ids != 0
    return features, labels


def batch_dataset(
    encoded,
    *,
    mode="bucket",
    buckets=None,
    batch_size=64,
    max_length=None,
    shuffle_buffer=0,
    seed=None,
    cache=True,
    drop_remainder=False,
):
    """Caches, shuffles, batches with padding, adds masks and prefetches.

    Args:
        encoded: output of `encode_classification` or `encode_seq2seq`.
        mode: "bucket" (length buckets, each batch padded to its own max),
            "batch_max" (batches of `batch_size` padded to the batch max) or
            "global_max" (batches of `batch_size` padded to `max_length`).
        buckets: a `batching.Buckets`, required in "bucket" mode.
        batch_size: examples per batch in the other modes.
        max_length: padded width in "global_max" mode.
        shuffle_buffer: 0 keeps the order (evaluation); > 0 shuffles with `seed`,
            a new order each epoch, the same sequence of orders for the same seed.
        seed: shuffle seed.
        cache: keep the tokenized examples in memory after the first epoch.
        drop_remainder: drop partial batches.

    Returns:
        A dataset of `(features, labels)` batches.
    """
    if mode not in BATCHING_MODES:
        raise ValueError(f"unknown batching mode {mode!r}; expected one of {BATCHING_MODES}")
    dataset = encoded.cache() if cache else encoded
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if mode == "bucket":
        if buckets is None:
            raise ValueError("bucket mode needs buckets (see batching.fit_buckets)")
        dataset = batching.bucket_by_length(dataset, buckets, sequence_length, drop_remainder=drop_remainder)
    else:
        width = max_length if mode == "global_max" else None
        shapes = {key: spec.shape if key in DENSE_FEATURES or spec.shape.rank == 0 else [width, *spec.shape[1:]]
                  for key, spec in dataset.element_spec.items()}
        dataset = dataset.padded_batch(batch_size, padded_shapes=shapes, drop_remainder=drop_remainder)
    return dataset.map(_to_features, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def padding_efficiency(batches):
    """Real tokens / padded tokens over every `*_padding_mask` of a finite dataset."""
    real = padded = 0
    for features, _ in batches:
        for key, mask in features.items():
            if key.endswith("padding_mask"):
                real += int(tf.reduce_sum(tf.cast(mask, tf.int64)))
                padded += int(tf.size(mask))
    return real / padded if padded else 1.0
