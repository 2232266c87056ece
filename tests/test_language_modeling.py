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


LINES = ["the cat sat on the mat", "a dog ran", "the dog sat on a log today", "cats nap"]


def _window_batches(dataset):
    return [{key: value.numpy() for key, value in batch.items()} for batch in dataset]


def test_windows_targets_count_cardinality_and_order(tmp_path):
    vocabulary = _vocabulary(tmp_path, LINES[:2], vocab_size=8)  # some words of the stream are <unk>
    stream = streams.TokenStream.from_lines(LINES)
    assert len(stream) == 23
    length, batch_size = 3, 2
    count = (len(stream) - 2) // length
    assert count == 7
    words = stream.spellings[stream.ids]
    targets = stream.targets(vocabulary)
    assert (targets == 0).any()  # <unk> targets are part of the check
    dataset = streams.windows(stream, vocabulary, length=length, max_chars=MAX_CHARS, batch_size=batch_size)
    assert int(dataset.cardinality()) == math.ceil(count / batch_size) == 4
    batches = _window_batches(dataset)
    assert len(batches) == int(dataset.cardinality())
    assert [len(batch["chars"]) for batch in batches] == [2, 2, 2, 1]
    seen = []
    for batch in batches:
        assert batch["chars"].shape[1:] == (length, MAX_CHARS)
        for chars, forward, backward in zip(batch["chars"], batch["forward_targets"], batch["backward_targets"]):
            spelled = _spell(chars).tolist()
            # Find the window's place in the stream from its words (windows start at 1, 1 + length, ...).
            (start,) = [s for s in range(1, len(stream) - length) if words[s:s + length].tolist() == spelled
                        and (s - 1) % length == 0]
            seen.append(start)
            np.testing.assert_array_equal(forward, targets[start + 1:start + 1 + length])
            np.testing.assert_array_equal(backward, targets[start - 1:start - 1 + length])
    # No shuffling: the windows come in stream order, each once.
    assert seen == [1 + length * k for k in range(count)]


def test_windows_shuffle_is_seeded_and_reshuffled_each_epoch(tmp_path):
    lines = [" ".join(f"w{3 * k + i}" for i in range(3)) for k in range(8)]  # distinct words: windows are unique
    vocabulary = _vocabulary(tmp_path, lines)
    stream = streams.TokenStream.from_lines(lines)
    args = dict(length=2, max_chars=MAX_CHARS, batch_size=4)

    def order(dataset):
        return [tuple(row) for batch in dataset for row in batch["forward_targets"].numpy()]

    in_order = order(streams.windows(stream, vocabulary, shuffle_seed=None, **args))
    shuffled = streams.windows(stream, vocabulary, shuffle_seed=3, **args)
    first, second = order(shuffled), order(shuffled)
    assert len(first) == len(in_order) == (len(stream) - 2) // 2
    assert sorted(first) == sorted(second) == sorted(in_order)
    assert first != in_order
    assert first != second  # a new order each epoch
    keras.utils.set_random_seed(0)
    again = streams.windows(stream, vocabulary, shuffle_seed=3, **args)
    assert order(again) == first  # the same seed gives the same epochs
    assert order(again) == second


def test_windows_refuse_a_stream_too_short(tmp_path):
    vocabulary = _vocabulary(tmp_path, LINES)
    stream = streams.TokenStream.from_lines(["a b"])  # <eos> a b <eos>: 4 tokens
    assert len(streams.windows(stream, vocabulary, length=2, max_chars=MAX_CHARS, batch_size=1)) == 1
    with pytest.raises(ValueError, match="too few for one window of 3"):
        streams.windows(stream, vocabulary, length=3, max_chars=MAX_CHARS, batch_size=1)
