"""From a pipeline definition to tokenizers and batched `tf.data` datasets.

`Inputter` ties data (`seqapp.data.sources`), vocabulary learning and tokenizers
(`seqapp.tokenizers`) and batching (`seqapp.data.pipeline`) together; each task
(`seqapp.tasks`) subclasses it with what its examples are and how they are
tokenized. Training, evaluation, export and `seqapp data stats` all go through it.
"""

import functools
import hashlib
import json

import tensorflow as tf

from seqapp import settings
from seqapp.data import batching
from seqapp.data import pipeline
from seqapp.data import sources
from seqapp.tokenizers import wordpiece


class Inputter:
    """Tokenizers and datasets for one task's `Definition`.

    Vocabularies are learned once from the training split (or from what
    `vocabulary_corpus` names) and cached under `SEQAPP_CACHE_DIR/vocab/` by a
    hash of the data and tokenizer settings; bucket boundaries are fitted to the
    training split and reused for the others.

    Subclasses give `tokenizers`, `raw_examples(split)` and `encode(examples)`.

    Args:
        definition: a validated `Definition`.
        fold: for cross-validation, the held-out fold; the vocabulary is then
            learned from that fold's training part.
        tokenizers: ready tokenizers (a finished run's), used instead of
            learning or loading them from the cache.

    Example:
    >>> inputter = tasks.get("classification").inputter(config.load_definition("pipelines/sentiment_bilstm.yaml"))
    >>> for features, labels in inputter.dataset("train", training=True).take(1):
    ...     features["token_ids"].shape
    """

    def __init__(self, definition, fold=None, tokenizers=None):
        self.definition = definition
        self.fold = fold
        self._encoded = {}
        self._lengths = {}
        if tokenizers is not None:
            self.tokenizers = tokenizers  # fills the cached property

    @functools.cached_property
    def tokenizers(self):
        """`{field: tokenizer}` for the string fields the task tokenizes."""
        raise NotImplementedError

    def raw_examples(self, split):
        """The unbatched raw examples (dicts of strings and labels) of `split`."""
        raise NotImplementedError

    def encode(self, examples):
        """Tokenizes and truncates raw examples (see `seqapp.data.pipeline`)."""
        raise NotImplementedError

    def examples(self, split):
        """`raw_examples(split)`; for "train", only the first `data.max_train_examples` when set."""
        return sources.limit(self.definition, split, self.raw_examples(split))

    def texts(self, split, field, count=None):
        """The `field` strings of `split`, decoded; the first `count` only when given."""
        examples = self.examples(split)
        examples = examples if count is None else examples.take(count)
        return [ex[field].decode("utf-8") for ex in examples.as_numpy_iterator()]

    def encoded(self, split):
        """Tokenized, truncated, unbatched examples of `split`, cached in memory."""
        if split not in self._encoded:
            self._encoded[split] = self.encode(self.examples(split)).cache()
        return self._encoded[split]

    def lengths(self, split):
        """Every example's bucketing length in `split` (numpy), counted once."""
        if split not in self._lengths:
            self._lengths[split] = pipeline.example_lengths(self.encoded(split))
        return self._lengths[split]

    @property
    def train_lengths(self):
        return self.lengths("train")

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

    def batching_report(self):
        """How training batches are made, for `seqapp data stats`: `{"limit": text, "lines": [text]}`
        and the figures behind them (bucket boundaries, padding efficiency of each batching mode)."""
        cfg = self.definition.pipeline
        buckets = self.buckets
        efficiency = {mode: pipeline.padding_efficiency(self.dataset("train", training=True, batching_mode=mode))
                      for mode in pipeline.BATCHING_MODES}
        lines = [f"buckets: {len(buckets.boundaries) + 1} (boundaries {list(buckets.boundaries)})",
                 "padding efficiency (real / padded tokens):"]
        lines += [f"  {mode:<11} {value:.3f}{'  <- configured' if mode == cfg.batching else ''}"
                  for mode, value in efficiency.items()]
        return {"limit": f"max_length {cfg.max_length}", "lines": lines,
                "buckets": {"boundaries": list(buckets.boundaries), "batch_sizes": list(buckets.batch_sizes)},
                "padding_efficiency": efficiency, "configured_batching": cfg.batching}

    def dataset(self, split, *, training, batching_mode=None, input_context=None):
        """Batched `(features, labels)` of `split` with a known number of batches; shuffled
        (seeded) when `training`.

        Args:
            split: "train", "validation" or "test".
            training: shuffle, a new order each epoch.
            batching_mode: overrides `pipeline.batching`.
            input_context: a `tf.distribute.InputContext`: this input pipeline reads
                only its shard of the examples, taken before shuffling and bucketing.
        """
        cfg = self.definition.pipeline
        mode = batching_mode or cfg.batching
        encoded, lengths = self.encoded(split), self.lengths(split)
        if input_context is not None and input_context.num_input_pipelines > 1:
            shards, index = input_context.num_input_pipelines, input_context.input_pipeline_id
            encoded, lengths = encoded.shard(shards, index), lengths[index::shards]
        buckets = self.buckets if mode == "bucket" else None
        batches = pipeline.batch_dataset(
            encoded,
            mode=mode,
            buckets=buckets,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            shuffle_buffer=cfg.shuffle_buffer if training else 0,
            seed=self.definition.seed,
            cache=False,  # `encoded` already caches
        )
        count = batching.count_batches(lengths, buckets=buckets, batch_size=cfg.batch_size)
        return batches.apply(tf.data.experimental.assert_cardinality(count))

    def vocabulary_corpus(self, fields):
        """`(identity, texts, description)` of the text a vocabulary for `fields` is learned from:
        by default the training split's `fields`. `texts` is called only when the cache lacks it."""
        definition = self.definition
        identity = {"data": sources.identity(definition), "fold": self.fold,
                    "folds": definition.train.folds if self.fold is not None else None, "fields": fields}

        def texts():
            train = self.examples("train")
            strings = train.map(lambda ex: ex[fields[0]])
            for field in fields[1:]:
                strings = strings.concatenate(train.map(lambda ex, f=field: ex[f]))
            return strings

        return identity, texts, "+".join(fields)

    def learned_tokenizer(self, *fields):
        """A `WordPieceTokenizer` whose vocabulary is learned from `vocabulary_corpus(fields)`,
        once, then read from the cache."""
        cfg = self.definition.tokenizer
        identity, texts, what = self.vocabulary_corpus(fields)
        key = json.dumps({**identity, "tokenizer": cfg.model_dump()}, sort_keys=True)
        path = settings.cache_dir() / "vocab" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.txt"
        if not path.exists():
            print(f"Learning a {cfg.vocab_size}-token WordPiece vocabulary from {what} ...", flush=True)
            vocab = wordpiece.learn_vocabulary(
                texts(), cfg.vocab_size, lower_case=cfg.lower_case, normalization_form=cfg.normalization_form,
                min_count=cfg.min_count,
            )
            wordpiece.write_vocabulary(vocab, path)
        return wordpiece.WordPieceTokenizer(
            path, lower_case=cfg.lower_case, normalization_form=cfg.normalization_form
        )
