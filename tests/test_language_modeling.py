"""Language modelling: word vocabulary, token streams and windows, the biLM's causality and padding,
stream perplexity against a hand computation, a tiny corpus overfitted end to end, eval and ELMo export."""

import json
import math
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from seqapp import config
from seqapp import runner
from seqapp.data import streams
from seqapp.errors import ConfigError
from seqapp.layers import BiLMEncoder
from seqapp.models.language_model import BiLanguageModel
from seqapp.tasks import language_modeling
from seqapp.tokenizers import words as word_vocabulary
from seqapp.tokenizers.characters import CharacterTokenizer

MAX_CHARS = 10


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _vocabulary(tmp_path, lines, vocab_size=50, min_count=1):
    words = word_vocabulary.learn_word_vocabulary(lines, vocab_size, min_count=min_count)
    path = tmp_path / "words.txt"
    word_vocabulary.write_word_vocabulary(words, path)
    return word_vocabulary.WordVocabulary(path)


def _spell(chars):
    """Words of `[..., max_chars]` character ids (CharacterTokenizer's byte + 1 between the markers)."""
    chars = np.asarray(chars)
    flat = chars.reshape(-1, chars.shape[-1])
    words = [bytes(int(c) - 1 for c in row if 1 <= c <= 256).decode("utf-8") for row in flat]
    return np.array(words, dtype=object).reshape(chars.shape[:-1])


# ---------------------------------------------------------------- word vocabulary


def test_learn_word_vocabulary_order_size_and_min_count():
    lines = ["b a c a", "d c a b", "e <unk> <unk> f <eos>", "c"]
    # counts: a 3, c 3, b 2, d 1, e 1, f 1 (and <unk> 2, <eos> 1, reserved)
    assert word_vocabulary.learn_word_vocabulary(lines, 100) == ["<unk>", "<eos>", "a", "c", "b", "d", "e", "f"]
    assert word_vocabulary.learn_word_vocabulary(lines, 5) == ["<unk>", "<eos>", "a", "c", "b"]
    assert word_vocabulary.learn_word_vocabulary(lines, 3) == ["<unk>", "<eos>", "a"]
    assert word_vocabulary.learn_word_vocabulary(lines, 100, min_count=2) == ["<unk>", "<eos>", "a", "c", "b"]
    assert word_vocabulary.learn_word_vocabulary(lines, 100, min_count=4) == ["<unk>", "<eos>"]
    learned = word_vocabulary.learn_word_vocabulary(lines, 100)
    assert learned.count("<unk>") == 1 and learned.count("<eos>") == 1


def test_word_vocabulary_round_trip_unknown_words_and_bad_files(tmp_path):
    words = word_vocabulary.learn_word_vocabulary(["the cat sat on the mat", "the dog"], 6)
    assert words == ["<unk>", "<eos>", "the", "cat", "dog", "mat"]
    path = tmp_path / "words.txt"
    word_vocabulary.write_word_vocabulary(words, path)
    vocabulary = word_vocabulary.WordVocabulary(path)
    assert vocabulary.words == words and vocabulary.vocab_size == 6
    assert vocabulary.vocab_path == str(path)
    ids = vocabulary.lookup(np.array(["the", "sat", "<eos>", "mat", "<unk>", "qwerty"], object))
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [2, 0, 1, 5, 0, 0])
    for bad in (["<eos>", "<unk>", "the"], ["the", "<unk>", "<eos>"], ["<unk>"]):
        word_vocabulary.write_word_vocabulary(bad, tmp_path / "bad.txt")
        with pytest.raises(ValueError, match="not a word vocabulary"):
            word_vocabulary.WordVocabulary(tmp_path / "bad.txt")


# ---------------------------------------------------------------- streams and windows


def test_token_stream_from_lines_targets_and_characters(tmp_path):
    vocabulary = _vocabulary(tmp_path, ["the cat", "the dog"], vocab_size=4)  # <unk> <eos> the cat
    stream = streams.TokenStream.from_lines(["the cat sat", "", "the  dog", "<unk> cat"])
    assert len(stream) == 12
    # A leading <eos>, then each line's words and its <eos> (an empty line is only its <eos>).
    expected = ["<eos>", "the", "cat", "sat", "<eos>", "<eos>", "the", "dog", "<eos>", "<unk>", "cat", "<eos>"]
    assert stream.spellings[stream.ids].tolist() == expected
    assert stream.spellings.tolist() == ["<eos>", "the", "cat", "sat", "dog", "<unk>"]
    assert stream.ids.dtype == np.int32
    targets = stream.targets(vocabulary)
    np.testing.assert_array_equal(targets, [1, 2, 3, 0, 1, 1, 2, 0, 1, 0, 3, 1])
    # The spelling of an out-of-vocabulary word is kept for the character encoder.
    assert stream.spellings[stream.ids[3]] == "sat" and stream.spellings[stream.ids[7]] == "dog"
    chars = stream.characters(MAX_CHARS)
    assert chars.shape == (6, MAX_CHARS) and chars.dtype == np.int32
    np.testing.assert_array_equal(chars, CharacterTokenizer(MAX_CHARS).encode_words(
        tf.constant(["<eos>", "the", "cat", "sat", "dog", "<unk>"])).numpy())
    assert _spell(chars).tolist() == stream.spellings.tolist()
