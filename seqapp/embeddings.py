"""Token embeddings pretrained on unlabelled text with word2vec (gensim).

A classifier trained on a few thousand labelled sentences (MR has 10,662) sees
most words a handful of times; vectors learned first on a large unlabelled,
in-domain corpus (IMDB's 50,000 reviews for movie sentiment) carry what those
words mean. Kim (2014) reports MR rising from 76.1 (random embeddings) to 81.5
(word2vec, fine-tuned) with one CNN.

The vectors are learned over the same WordPiece ids the model reads, so every
vocabulary row has a vector and tokenization stays inside the exported graph.
One pretraining is cached per (vocabulary, corpus, settings) under
`SEQAPP_CACHE_DIR/embeddings/`.
"""

import hashlib
import json
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seqapp import atomic
from seqapp import datasets
from seqapp import settings
from seqapp.data import readers
from seqapp.errors import ConfigError


def _corpus_entries(definition):
    """`(entry, builder or None, path or None)` for each corpus entry: a dataset's builder, or
    a plain-text file's path.

    Raises:
        ConfigError: an entry is neither a dataset nor a file.
    """
    for entry in definition.embeddings.corpus:
        if entry.partition("/")[0] in datasets.DATASETS:
            yield entry, datasets.builder(entry), None
            continue
        path = Path(definition.base_dir, entry)
        if not path.is_file():
            raise ConfigError(definition.origin, "embeddings.corpus",
                              f"{entry!r} is neither a dataset ({', '.join(sorted(datasets.DATASETS))}) nor a file")
        yield entry, None, path


def corpus_texts(definition):
    """The strings of `definition.embeddings.corpus`, as a `tf.data.Dataset`.

    A dataset name gives the `text` of every split (labels are never read); any
    other entry is a plain-text file, one document a line.
    """
    parts = []
    for entry, builder, path in _corpus_entries(definition):
        if builder is None:
            rows = readers.read_plain_text(path)
            parts.append(tf.data.Dataset.from_tensor_slices([row["text"] for row in rows]))
            continue
        builder.download_and_prepare()
        if "text" not in builder.info.features:
            raise ConfigError(definition.origin, "embeddings.corpus", f"{entry} has no `text` feature")
        for split in sorted(builder.info.splits):
            parts.append(builder.as_dataset(split=split, shuffle_files=False).map(lambda ex: ex["text"]))
    texts = parts[0]
    for part in parts[1:]:
        texts = texts.concatenate(part)
    # Review sites keep HTML line breaks (IMDB's `<br />`): not words.
    return texts.map(lambda text: tf.strings.regex_replace(text, r"<br\s*/?>", " "))


def corpus_identity(definition):
    """A string naming the corpus, for cache keys of what is learned from it."""
    names = []
    for entry, builder, path in _corpus_entries(definition):
        if builder is not None:
            names.append(f"dataset={entry}/{builder.info.version}")
        else:
            stat = path.stat()
            names.append(f"file={path.resolve()}/{stat.st_size}/{stat.st_mtime_ns}")
    return "+".join(names)


def pretrained_embeddings(definition, tokenizer, dim):
    """A `[tokenizer.vocab_size + 1, dim]` matrix for the classifier's `Embedding`.

    Rows of tokens seen at least `min_count` times in the corpus hold their
    word2vec vectors; the others (reserved tokens, the out-of-vocabulary id,
    rare tokens) are drawn from a normal distribution of the same scale, and
    the padding row is 0. Learned once, then read from the cache.

    Args:
        definition: a `Definition` with an `embeddings` section.
        tokenizer: the run's `WordPieceTokenizer` (its vocabulary is the rows).
        dim: the embedding size.
    """
    cfg = definition.embeddings
    key = json.dumps({"vocab": hashlib.sha256(Path(tokenizer.vocab_path).read_bytes()).hexdigest(),
                      "corpus": corpus_identity(definition), "dim": dim, "seed": definition.seed,
                      "settings": cfg.model_dump(exclude={"trainable"})}, sort_keys=True)
    path = settings.cache_dir() / "embeddings" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if not path.exists():
        matrix = _train_word2vec(tokenizer, corpus_texts(definition), cfg, dim, definition.seed)
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as out:  # never half-written vectors
            np.save(out, matrix)
    return np.load(path)


def _train_word2vec(tokenizer, texts, cfg, dim, seed):
    from gensim.models import Word2Vec  # imported here: only pretraining needs gensim
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochProgress(CallbackAny2Vec):
        def __init__(self):
            self.progress = keras.utils.Progbar(cfg.epochs, unit_name="epoch")

        def on_epoch_end(self, model):
            self.progress.add(1)

    with tempfile.TemporaryDirectory() as tmp:
        corpus_file = Path(tmp) / "corpus.txt"
        documents = _write_token_ids(tokenizer, texts, corpus_file)
        print(f"Training word2vec ({cfg.algorithm}, {dim} dims, {cfg.epochs} epochs) on {documents:,} "
              f"documents ...", flush=True)
        # One worker: gensim is then deterministic for a seed.
        model = Word2Vec(corpus_file=str(corpus_file), vector_size=dim, window=cfg.window,
                         negative=cfg.negative, sg=int(cfg.algorithm == "skipgram"), min_count=cfg.min_count,
                         epochs=cfg.epochs, seed=seed, workers=1, callbacks=[EpochProgress()])
    vectors = model.wv
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, float(vectors.vectors.std()), (tokenizer.vocab_size + 1, dim)).astype(np.float32)
    for token, index in vectors.key_to_index.items():
        matrix[int(token)] = vectors.vectors[index]
    matrix[0] = 0.0  # [PAD]: masked everywhere
    return matrix


def _write_token_ids(tokenizer, texts, path, batch_size=512):
    """Writes each text's WordPiece ids as one line of space-separated numbers (gensim's
    `LineSentence` format); returns the number of documents."""
    tokenize = tf.function(tokenizer.tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    documents = 0
    progress = keras.utils.Progbar(None, unit_name="document")
    with open(path, "w", encoding="ascii") as out:
        for batch in texts.batch(batch_size).prefetch(2):
            ids = tokenize(batch)
            for row in ids.to_list():
                out.write(" ".join(map(str, row)) + "\n")
            documents += int(ids.nrows())
            progress.update(documents)
    return documents
