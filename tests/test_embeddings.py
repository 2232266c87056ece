"""Pretrained token embeddings: word2vec over the run's WordPiece ids, cached, loaded into the classifier."""

from pathlib import Path

import keras
import numpy as np
import pytest

from seqapp import config
from seqapp import embeddings
from seqapp import runner
from seqapp.errors import ConfigError
from seqapp import tasks

# Two word groups used in the same contexts: word2vec must put each group's members close together.
GOOD, BAD = ["superb", "splendid", "marvelous"], ["awful", "dreadful", "horrid"]


def _corpus(path, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(1500):
        good, bad = rng.choice(GOOD), rng.choice(BAD)
        lines.append(f"the cast was {good} and the story felt {good} to me")
        lines.append(f"what an {bad} plot , the acting was {bad} too")
    path.write_text("\n".join(lines) + "\n")
    return path


def _definition(tmp_path, **embedding_settings):
    _corpus(tmp_path / "corpus.txt")
    rows = [(f"the cast was {w}", "pos") for w in GOOD] * 4 + [(f"the acting was {w}", "neg") for w in BAD] * 4
    for name in ("train", "dev"):
        (tmp_path / f"{name}.csv").write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows))
    return config.validate({
        "task": "classification", "seed": 5,
        "data": {"format": "csv", "train": "train.csv", "validation": "dev.csv"},
        "tokenizer": {"vocab_size": 100, "min_count": 1},
        "pipeline": {"max_length": 16, "tokens_per_batch": 64, "num_buckets": 2},
        "model": {"family": "bilstm", "embedding_dim": 16, "units": 8, "dropout": 0.0},
        "train": {"epochs": 2},
        "embeddings": {"corpus": ["corpus.txt"], "epochs": 10, **embedding_settings},
        "base_dir": str(tmp_path),
    })


def _cosine(matrix, tokenizer, a, b):
    ids = {token: i for i, token in enumerate(open(tokenizer.vocab_path, encoding="utf-8").read().split("\n"))}
    u, v = matrix[ids[a]], matrix[ids[b]]
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


def test_vectors_follow_the_corpus_and_are_cached(tmp_path, seqapp_cache_dir):
    definition = _definition(tmp_path)
    tokenizer = tasks.of(definition).inputter(definition).tokenizers["text"]
    vocab = open(tokenizer.vocab_path, encoding="utf-8").read().split()
    assert set(GOOD + BAD) <= set(vocab)  # the vocabulary comes from the corpus
    matrix = embeddings.pretrained_embeddings(definition, tokenizer, 16)
    assert matrix.shape == (tokenizer.vocab_size + 1, 16) and matrix.dtype == np.float32
    assert not matrix[0].any()  # [PAD]
    within = [_cosine(matrix, tokenizer, a, b) for group in (GOOD, BAD) for a in group for b in group if a < b]
    across = [_cosine(matrix, tokenizer, a, b) for a in GOOD for b in BAD]
    assert min(within) > max(across), (within, across)
    cached = list((seqapp_cache_dir / "embeddings").glob("*.npy"))
    assert len(cached) == 1
    np.testing.assert_array_equal(embeddings.pretrained_embeddings(definition, tokenizer, 16), matrix)


def test_pretraining_is_deterministic_for_a_seed(tmp_path, seqapp_cache_dir):
    definition = _definition(tmp_path, window=3)
    tokenizer = tasks.of(definition).inputter(definition).tokenizers["text"]
    first = embeddings._train_word2vec(tokenizer, embeddings.corpus_texts(definition), definition.embeddings, 16, 5)
    second = embeddings._train_word2vec(tokenizer, embeddings.corpus_texts(definition), definition.embeddings, 16, 5)
    np.testing.assert_array_equal(first, second)


def test_frozen_embeddings_stay_the_pretrained_vectors(tmp_path, seqapp_cache_dir):
    definition = _definition(tmp_path, trainable=False)
    results = runner.train(definition, tmp_path / "run", verbose=0)
    assert "validation" in results
    tokenizer = tasks.of(definition).inputter(definition).tokenizers["text"]
    matrix = embeddings.pretrained_embeddings(definition, tokenizer, 16)
    trained = keras.models.load_model(tmp_path / "run" / "best.keras").get_layer("embedding").get_weights()[0]
    np.testing.assert_array_equal(trained, matrix)


def test_fine_tuned_embeddings_start_from_the_pretrained_vectors(tmp_path, seqapp_cache_dir):
    definition = _definition(tmp_path)
    runner.train(definition, tmp_path / "run", verbose=0)
    tokenizer = tasks.of(definition).inputter(definition).tokenizers["text"]
    matrix = embeddings.pretrained_embeddings(definition, tokenizer, 16)
    trained = keras.models.load_model(tmp_path / "run" / "best.keras").get_layer("embedding").get_weights()[0]
    assert not np.array_equal(trained, matrix)  # fine-tuned ...
    assert np.abs(trained - matrix).max() < 0.1  # ... from the vectors, two epochs away


@pytest.mark.parametrize("embeddings_section, key, reason", [
    ({"corpus": []}, "embeddings.corpus", "at least one"),
    ({"corpus": ["imdb"], "windw": 3}, "embeddings.windw", "Extra inputs"),
    ({"corpus": ["imdb"], "algorithm": "glove"}, "embeddings.algorithm", "skipgram"),
])
def test_bad_sections_name_the_key(embeddings_section, key, reason):
    with pytest.raises(ConfigError, match=rf"{key}.*{reason}"):
        config.validate({"task": "classification", "data": {"dataset": "sst2"}, "embeddings": embeddings_section})


def test_translation_refuses_pretrained_embeddings():
    with pytest.raises(ConfigError,
                       match=r"embeddings: Extra inputs are not permitted \(a setting for classification, not translation\)"):
        config.validate({"task": "translation", "data": {"dataset": "multi30k", "source": "de", "target": "en"},
                         "embeddings": {"corpus": ["imdb"]}})


def test_a_corpus_that_is_neither_dataset_nor_file_is_named(tmp_path, seqapp_cache_dir):
    definition = config.validate({"task": "classification", "data": {"dataset": "sst2"},
                                  "embeddings": {"corpus": ["no_such.txt"]}, "base_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="embeddings.corpus.*'no_such.txt' is neither a dataset"):
        embeddings.corpus_texts(definition)
    # Also where a run meets it first: the vocabulary's cache key names the corpus.
    with pytest.raises(ConfigError, match="embeddings.corpus.*'no_such.txt' is neither a dataset"):
        tasks.of(definition).inputter(definition).tokenizers


def test_one_string_is_a_one_entry_corpus():
    definition = config.validate({"task": "classification", "data": {"dataset": "sst2"},
                                  "embeddings": {"corpus": "imdb"}})
    assert definition.embeddings.corpus == ("imdb",)


def test_set_embeddings_null_trains_from_random_embeddings():
    path = Path(__file__).resolve().parents[1] / "pipelines" / "sentiment_mr_cv.yaml"
    assert config.load_definition(path).embeddings.corpus == ("imdb",)
    assert config.load_definition(path, {"embeddings": None}).embeddings is None
