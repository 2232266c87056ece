"""From a pipeline definition to tokenizers and batched `tf.data` datasets.

The one place that ties data (`seqapp.data.sources`), vocabulary learning and
tokenizers (`seqapp.tokenizers`) and batching (`seqapp.data.pipeline`) together;
training, evaluation, export and `seqapp data stats` all go through it.
"""

import functools
import hashlib
import json

import numpy as np
import tensorflow as tf

from seqapp import embeddings
from seqapp import settings
from seqapp.data import batching
from seqapp.data import pipeline
from seqapp.data import sources
from seqapp.tokenizers import wordpiece


class Inputter:
    """Tokenizers and datasets for one `seqapp.config.Definition`.

    The vocabulary is learned once from the training split (or, with an
    `embeddings` section, from its pretraining corpus) and cached under
    `SEQAPP_CACHE_DIR/vocab/` by a hash of the data and tokenizer settings;
    bucket boundaries are fitted to the training split and reused for the others.

    Args:
        definition: a validated `Definition`.
        fold: for cross-validation, the held-out fold (see `sources.examples`);
            the vocabulary is then learned from that fold's training part.
        tokenizers: ready tokenizers (a finished run's), used instead of
            learning or loading them from the cache.

    Example:
    >>> inputter = Inputter(config.load_definition("pipelines/sentiment_bilstm.yaml"))
    >>> for features, labels in inputter.dataset("train", training=True).take(1):
    ...     features["token_ids"].shape
    """

    def __init__(self, definition, fold=None, tokenizers=None):
        self.definition = definition
        self.fold = fold
        self._encoded = {}
        if tokenizers is not None:
            self.tokenizers = tokenizers  # fills the cached property

    @functools.cached_property
    def tokenizers(self):
        """`{"text": tokenizer}` or `{"source": ..., "target": ...}`."""
        if self.definition.task == "classification":
            return {"text": self._tokenizer("text")}
        if self.definition.tokenizer.shared:
            shared = self._tokenizer("source", "target")
            return {"source": shared, "target": shared}
        return {"source": self._tokenizer("source"), "target": self._tokenizer("target")}

    @functools.cached_property
    def label_names(self):
        return sources.label_names(self.definition)

    def examples(self, split):
        return sources.examples(self.definition, split, fold=self.fold)

    def texts(self, split, field, count=None):
        """The `field` strings ("text", "source" or "target") of `split`, decoded; the first
        `count` only when given."""
        examples = self.examples(split)
        examples = examples if count is None else examples.take(count)
        return [ex[field].decode("utf-8") for ex in examples.as_numpy_iterator()]

    def encoded(self, split):
        """Tokenized, truncated, unbatched examples of `split`, cached in memory."""
        if split not in self._encoded:
            self._encoded[split] = self._encode(split).cache()
        return self._encoded[split]

    def _encode(self, split):
        cfg = self.definition.pipeline
        if self.definition.task == "classification":
            return pipeline.encode_classification(
                self.examples(split), self.tokenizers["text"], max_length=cfg.max_length, overlong=cfg.overlong
            )
        return pipeline.encode_seq2seq(
            self.examples(split),
            self.tokenizers["source"],
            self.tokenizers["target"],
            max_length=cfg.max_length,
            overlong=cfg.overlong,
        )

    @functools.cached_property
    def train_lengths(self):
        return pipeline.example_lengths(self.encoded("train"))

    @functools.cached_property
    def label_counts(self):
        """Training examples per label index (classification), as a numpy array."""
        labels = self.encoded("train").map(lambda ex: ex["label"], num_parallel_calls=tf.data.AUTOTUNE)
        values = np.concatenate([batch.numpy() for batch in labels.batch(65536)] or [np.zeros([0], np.int64)])
        return np.bincount(values, minlength=len(self.label_names))

    @functools.cached_property
    def buckets(self):
        cfg = self.definition.pipeline
        return batching.fit_buckets(
            self.train_lengths,
            num_buckets=cfg.num_buckets,
            max_length=cfg.max_length,
            tokens_per_batch=cfg.tokens_per_batch,
            max_batch_size=cfg.max_batch_size,
        )

    def dataset(self, split, *, training, batching_mode=None):
        """Batched `(features, labels)` of `split`; shuffled (seeded) when `training`."""
        cfg = self.definition.pipeline
        mode = batching_mode or cfg.batching
        return pipeline.batch_dataset(
            self.encoded(split),
            mode=mode,
            buckets=self.buckets if mode == "bucket" else None,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            shuffle_buffer=cfg.shuffle_buffer if training else 0,
            seed=self.definition.seed,
            cache=False,  # `encoded` already caches
        )

    def _tokenizer(self, *fields):
        cfg = self.definition.tokenizer
        if self.definition.embeddings is not None:  # the pretraining corpus's vocabulary, whatever the fold
            origin = {"corpus": embeddings.corpus_identity(self.definition)}
        else:
            origin = {"data": sources.identity(self.definition), "fold": self.fold,
                      "folds": self.definition.train.folds if self.fold is not None else None, "fields": fields,
                      "source": self.definition.data.source, "target": self.definition.data.target}
        key = json.dumps({**origin, "tokenizer": cfg.model_dump()}, sort_keys=True)
        path = settings.cache_dir() / "vocab" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.txt"
        if not path.exists():
            if self.definition.embeddings is not None:
                texts, what = embeddings.corpus_texts(self.definition), "+".join(self.definition.embeddings.corpus)
            else:
                train = self.examples("train")
                texts, what = train.map(lambda ex: ex[fields[0]]), "+".join(fields)
                for field in fields[1:]:
                    texts = texts.concatenate(train.map(lambda ex, f=field: ex[f]))
            print(f"Learning a {cfg.vocab_size}-token WordPiece vocabulary from {what} ...", flush=True)
            vocab = wordpiece.learn_vocabulary(
                texts, cfg.vocab_size, lower_case=cfg.lower_case, normalization_form=cfg.normalization_form,
                min_count=cfg.min_count,
            )
            wordpiece.write_vocabulary(vocab, path)
        return wordpiece.WordPieceTokenizer(
            path, lower_case=cfg.lower_case, normalization_form=cfg.normalization_form
        )
