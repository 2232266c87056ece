"""WordPiece and character tokenizers: round trips, reserved ids, bad input, SavedModel assets."""

import os

import numpy as np
import tensorflow as tf

from seqapp.tokenizers import CharacterTokenizer
from seqapp.tokenizers import RESERVED_TOKENS
from seqapp.tokenizers import WordPieceTokenizer
from seqapp.tokenizers import characters
from seqapp.tokenizers import wordpiece


def _has_unknown(ids):
    return wordpiece.UNK_ID in ids


def test_reserved_tokens_come_first(wordpiece_vocab):
    vocab = wordpiece_vocab.read_text(encoding="utf-8").split("\n")[:-1]
    assert vocab[:4] == RESERVED_TOKENS == ["[PAD]", "[UNK]", "[START]", "[END]"]
    assert len(vocab) == len(set(vocab))


def test_wordpiece_round_trip_returns_normalized_text(wordpiece_vocab, sst2_sentences):
    tokenizer = WordPieceTokenizer(wordpiece_vocab)
    dev = sst2_sentences[1]
    ids = tokenizer.tokenize(dev)
    restored = tokenizer.detokenize(ids).numpy()
    normalized = tokenizer.normalize(dev).numpy()
    known = [i for i, row in enumerate(ids.to_list()) if not _has_unknown(row)]
    # Held-out sentences: nearly all are covered by subwords, so the check is not vacuous.
    assert len(known) > 0.9 * len(dev)
    mismatches = [(restored[i], normalized[i]) for i in known if restored[i] != normalized[i]]
    assert mismatches == []
    # Normalization lower-cases and splits punctuation, as BERT's basic tokenizer does.
    assert tokenizer.normalize(["It's GREAT!"]).numpy()[0] == b"it ' s great !"


def test_tokenizer_never_emits_pad_start_or_end(wordpiece_vocab, sst2_sentences):
    tokenizer = WordPieceTokenizer(wordpiece_vocab)
    ids = tokenizer.tokenize(sst2_sentences[1] + ["[PAD] [START] [END]"]).flat_values.numpy()
    assert not np.isin(ids, [wordpiece.PAD_ID, wordpiece.START_ID, wordpiece.END_ID]).any()


def test_cased_tokenizer_keeps_case_and_umlauts(tmp_path, shared_data_dir):
    from seqapp.data import readers

    # 300 sentences: ß, umlauts and capitals are all there (all 1,014 take four times as long to learn).
    german = [row["source"] for row in readers.read_parallel(
        shared_data_dir / "multi30k" / "val.de.gz", shared_data_dir / "multi30k" / "val.en.gz")][:300]
    vocab = wordpiece.learn_vocabulary(
        tf.data.Dataset.from_tensor_slices(german), 3000, lower_case=False, normalization_form="NFC")
    tokenizer = WordPieceTokenizer(
        wordpiece.write_vocabulary(vocab, tmp_path / "de.txt"), lower_case=False, normalization_form="NFC")
    assert {"Zwei", "Männer", "weiß"} <= set(vocab)  # learned cased, umlauts and ß kept
    sentence = "Zwei junge weiße Männer sind im Freien."
    assert tokenizer.detokenize(tokenizer.tokenize([sentence])).numpy()[0].decode() == (
        "Zwei junge weiße Männer sind im Freien .")


def _greedy_wordpieces(word, vocab):
    """BERT's WordPiece of one word: the longest vocabulary prefix, then the longest "##" piece of the
    rest, and so on; ["[UNK]"] for the whole word when some rest starts no piece."""
    pieces, start = [], 0
    while start < len(word):
        end = next((end for end in range(len(word), start, -1)
                    if (word[start:end] if start == 0 else "##" + word[start:end]) in vocab), None)
        if end is None:
            return ["[UNK]"]
        pieces.append(word[start:end] if start == 0 else "##" + word[start:end])
        start = end
    return pieces


def test_awkward_input_tokenizes(wordpiece_vocab):
    tokenizer = WordPieceTokenizer(wordpiece_vocab)
    vocab = {token: i for i, token in enumerate(wordpiece_vocab.read_text(encoding="utf-8").split("\n")[:-1])}
    texts = ["", "   \t ", "x" * 100_000, "naïve café 😀", "日本語"]
    ids = tokenizer.tokenize(texts)
    rows = ids.to_list()
    assert rows[0] == [] and rows[1] == []
    assert rows[2] == [wordpiece.UNK_ID]  # an over-long word (over 100 bytes) is one [UNK], not an error
    # Lower-casing also strips accents (NFD, combining marks dropped); each CJK ideograph is a word of its
    # own; an emoji is a symbol, not punctuation: a word of its own here because of the space.
    assert tokenizer.normalize(texts[3:]).numpy().tolist() == ["naive cafe 😀".encode(), "日 本 語".encode()]
    # SST-2's sentences hold none of these characters: each of those words is one [UNK]. "naive" and
    # "cafe" are spelled from SST-2's pieces.
    assert not {"😀", "日", "本", "語", "##😀", "##日", "##本", "##語"} & set(vocab)
    expected = [vocab[piece] for word in ("naive", "cafe") for piece in _greedy_wordpieces(word, vocab)]
    assert wordpiece.UNK_ID not in expected
    assert rows[3] == expected + [wordpiece.UNK_ID]
    assert rows[4] == [wordpiece.UNK_ID] * 3
    assert tokenizer.detokenize(ids).numpy().tolist() == [b"", b"", b"[UNK]", b"naive cafe [UNK]",
                                                          b"[UNK] [UNK] [UNK]"]


def test_vocabulary_travels_as_a_savedmodel_asset(tmp_path, wordpiece_vocab, sst2_sentences):
    vocab_copy = tmp_path / "vocab.txt"
    vocab_copy.write_bytes(wordpiece_vocab.read_bytes())
    tokenizer = WordPieceTokenizer(vocab_copy)

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.tokenizer = tokenizer

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def tokenize(self, texts):
            return self.tokenizer.tokenize(texts).to_tensor()

    module = Module()
    expected = module.tokenize(tf.constant(sst2_sentences[1][:20])).numpy()
    tf.saved_model.save(module, str(tmp_path / "saved"))
    os.remove(vocab_copy)  # the export must not need the original file
    assert (tmp_path / "saved" / "assets" / "vocab.txt").exists()
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_array_equal(reloaded.tokenize(tf.constant(sst2_sentences[1][:20])).numpy(), expected)


def test_character_ids_mark_words_and_pad_with_zeros():
    tokenizer = CharacterTokenizer(max_chars=8)
    ids = tokenizer.tokenize(["hi there", "a"]).numpy()
    assert ids.shape == (2, 2, 8)
    np.testing.assert_array_equal(
        ids[0, 0], [characters.BOW_ID, ord("h") + 1, ord("i") + 1, characters.EOW_ID] + [characters.PAD_ID] * 4)
    np.testing.assert_array_equal(ids[1, 1], np.zeros(8))  # a padding word
    assert ids.max() < characters.VOCAB_SIZE


def test_character_ids_use_utf8_bytes_and_truncate_long_words():
    tokenizer = CharacterTokenizer(max_chars=6)
    ids = tokenizer.tokenize(["é abcdefgh"]).numpy()[0]
    np.testing.assert_array_equal(ids[0], [characters.BOW_ID, 0xC3 + 1, 0xA9 + 1, characters.EOW_ID,
                                           characters.PAD_ID, characters.PAD_ID])
    np.testing.assert_array_equal(ids[1][1:5], [ord(c) + 1 for c in "abcd"])
    assert ids[1][5] == characters.EOW_ID


def test_character_round_trip():
    tokenizer = CharacterTokenizer()
    texts = ["the  cat sat\ton the mat", "naïve café 😀", ""]
    restored = tokenizer.detokenize(tokenizer.tokenize(texts)).numpy()
    assert [r.decode() for r in restored] == [" ".join(t.split()) for t in texts]
