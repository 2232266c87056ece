"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def seqapp_cache_dir(tmp_path_factory):
    """A fresh ``SEQAPP_CACHE_DIR`` for the session: datasets prepared once, never in ~/.cache."""
    path = tmp_path_factory.mktemp("seqapp_cache")
    previous = os.environ.get("SEQAPP_CACHE_DIR")
    os.environ["SEQAPP_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        del os.environ["SEQAPP_CACHE_DIR"]
    else:
        os.environ["SEQAPP_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def shared_data_dir():
    """The shared raw-data folder; CI points SEQAPP_DATA_DIR at it. Unset is a failure, not a skip."""
    value = os.environ.get("SEQAPP_DATA_DIR")
    assert value, "SEQAPP_DATA_DIR is not set: point it at the shared data folder (../shared/data)"
    path = Path(value).resolve()
    assert path.is_dir(), f"SEQAPP_DATA_DIR={value} is not a folder"
    os.environ["SEQAPP_DATA_DIR"] = str(path)  # subprocesses may run elsewhere
    return path


@pytest.fixture(scope="session")
def sst2_sentences(shared_data_dir):
    """The first 5,000 SST-2 training sentences and all 872 dev sentences, as read by seqapp."""
    from seqapp.data import readers

    train = readers.read_text_classification(shared_data_dir / "sst2" / "train.tsv", text_column="sentence")
    dev = readers.read_text_classification(shared_data_dir / "sst2" / "dev.tsv", text_column="sentence")
    return [row["text"] for row in train[:5000]], [row["text"] for row in dev]


@pytest.fixture(scope="session")
def wordpiece_vocab(tmp_path_factory, sst2_sentences):
    """A 2,000-token lower-cased WordPiece vocabulary learned from SST-2 sentences."""
    import tensorflow as tf

    from seqapp.tokenizers import wordpiece

    vocab = wordpiece.learn_vocabulary(tf.data.Dataset.from_tensor_slices(sst2_sentences[0]), 2000)
    return wordpiece.write_vocabulary(vocab, tmp_path_factory.mktemp("vocab") / "vocab.txt")


@pytest.fixture(scope="session")
def testdata(shared_data_dir):
    """TF Serving's own test models and answers (shared/data/tfserving_testdata/SOURCE.md)."""
    path = shared_data_dir / "tfserving_testdata"
    assert (path / "SOURCE.md").is_file(), f"{path} lacks TF Serving's test data"
    return path


@pytest.fixture(scope="session")
def sentiment_training(tmp_path_factory, seqapp_cache_dir):
    """`(run folder, results)` of `tiny_sentiment.definition` trained once per session (25 epochs,
    BiLSTM, labels neg/pos). Read it, never write to it."""
    from seqapp import runner

    import tiny_sentiment

    tmp_path = tmp_path_factory.mktemp("sentiment")
    results = runner.train(tiny_sentiment.definition(tmp_path), tmp_path / "run", verbose=0)
    return tmp_path / "run", results


@pytest.fixture(scope="session")
def sentiment_run(sentiment_training):
    """The folder of the session's trained sentiment run."""
    return sentiment_training[0]


@pytest.fixture(scope="session")
def sentiment_export(sentiment_run, tmp_path_factory):
    """`sentiment_run` exported once as version 1: returns the base path `.../saved_models/sentiment`
    (holding only `1/`), for servers to serve. Shared by every test of the session: never write to it."""
    from seqapp import runner

    base_path = tmp_path_factory.mktemp("export") / "saved_models" / "sentiment"
    path = runner.export(sentiment_run, base_path)
    assert path == base_path / "1", path
    return base_path
