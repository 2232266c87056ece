"""WordPiece vocabulary learning and the in-graph WordPiece tokenizer.

Only long-standing tf-text ops are used (BasicTokenizer's CaseFoldUTF8,
NormalizeUTF8, RegexSplitWithOffsets and WordpieceTokenizeWithOffsets), so a
SavedModel that tokenizes inside its graph loads in TF Serving's bundled tf-text.
"""

from pathlib import Path

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.python.ops.bert_tokenizer import BasicTokenizer
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset

from seqapp import atomic

RESERVED_TOKENS = ["[PAD]", "[UNK]", "[START]", "[END]"]
PAD_ID, UNK_ID, START_ID, END_ID = range(4)


def learn_vocabulary(texts, vocab_size, *, lower_case=True, normalization_form=None, min_count=2):
    """Learns a WordPiece vocabulary with tf-text's `bert_vocab_from_dataset`.

    Args:
        texts: a `tf.data.Dataset` of scalar strings (the training split).
        vocab_size: target vocabulary size, reserved tokens included.
        lower_case: fold case and strip accents before learning, as the
            tokenizer will.
        normalization_form: Unicode normalization when `lower_case` is False
            (e.g. "NFC"), as the tokenizer will.
        min_count: the lowest token count the learner may admit while it
            searches for the count threshold that yields `vocab_size`; tf-text's
            default of 10 leaves small corpora (MR) far below the target size.

    Returns:
        The vocabulary as a list of strings; `RESERVED_TOKENS` come first, so
        `[PAD]` has id 0.

    Example:
    >>> texts = tf.data.Dataset.from_tensor_slices(["a cat", "a dog"])
    >>> learn_vocabulary(texts, 50)[:4]
    ['[PAD]', '[UNK]', '[START]', '[END]']
    """
    return bert_vocab_from_dataset.bert_vocab_from_dataset(
        texts.batch(1024).prefetch(2),
        vocab_size=vocab_size,
        reserved_tokens=RESERVED_TOKENS,
        bert_tokenizer_params=_basic_params(lower_case, normalization_form),
        learn_params={"lower_thresh": min_count},
    )


def write_vocabulary(vocab, path):
    path = Path(path)
    with atomic.atomic_path(path) as tmp:  # never leave a half-written vocabulary behind
        tmp.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    return path


def _basic_params(lower_case, normalization_form):
    return {
        "lower_case": lower_case,
        "normalization_form": None if lower_case else normalization_form,
    }


class WordPieceTokenizer(tf.Module):
    """Text to WordPiece ids and back, inside the TensorFlow graph.

    The vocabulary file becomes a SavedModel asset through the lookup table's
    `TextFileInitializer`, so an exported model carries its own vocabulary.

    Args:
        vocab_path: a vocabulary file, one token per line, reserved tokens
            first (see `learn_vocabulary`).
        lower_case: fold case and strip accents (for sentiment); keep it False
            for translation, whose output must stay cased.
        normalization_form: Unicode normalization used when `lower_case` is
            False ("NFC", "NFKC", ... or None).

    Example:
    >>> tokenizer = WordPieceTokenizer("vocab.txt")
    >>> ids = tokenizer.tokenize(["A cat sat."])   # RaggedTensor [1, (tokens)]
    >>> tokenizer.detokenize(ids)                  # ["a cat sat ."]
    """

    def __init__(self, vocab_path, *, lower_case=True, normalization_form=None, name=None):
        super().__init__(name=name)
        self.vocab_path = str(vocab_path)
        self.lower_case = lower_case
        self.normalization_form = normalization_form
        self.vocab_size = sum(1 for _ in open(self.vocab_path, encoding="utf-8"))
        initializer = tf.lookup.TextFileInitializer(
            self.vocab_path,
            key_dtype=tf.string,
            key_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            value_dtype=tf.int64,
            value_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticVocabularyTable(initializer, num_oov_buckets=1)
        self.id_table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.vocab_path,
                key_dtype=tf.int64,
                key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
                value_dtype=tf.string,
                value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            ),
            default_value="[UNK]",
        )
        params = _basic_params(lower_case, normalization_form)
        self._bert = tf_text.BertTokenizer(self.table, token_out_type=tf.int64, **params)
        self._basic = BasicTokenizer(**params)

    def tokenize(self, texts):
        """Tokenizes a batch of strings.

        Args:
            texts: string tensor of shape [batch].

        Returns:
            int64 RaggedTensor [batch, (tokens)].
        """
        return self._bert.tokenize(texts).merge_dims(-2, -1)

    def tokenize_with_words(self, texts):
        """Tokenizes a batch of strings and says which word each token belongs to.

        Words are the basic tokenizer's (whitespace and punctuation split, case folded
        when `lower_case`), the ones WordPiece splits further; a model that reads words
        (a character-level biLM) and one that reads tokens meet through `word_index`.

        Args:
            texts: string tensor of shape [batch].

        Returns:
            `(token_ids, word_index, words)`: int64 RaggedTensor [batch, (tokens)], int32
            RaggedTensor [batch, (tokens)] (the index of each token's word in its text) and
            string RaggedTensor [batch, (words)].

        Example:
        >>> ids, index, words = tokenizer.tokenize_with_words(["Unbelievably good."])
        >>> index.to_list(), words.to_list()   # "unbelievably" -> 3 pieces
        ([[0, 0, 0, 1, 2]], [[b'unbelievably', b'good', b'.']])
        """
        pieces = self._bert.tokenize(texts)  # [batch, (words), (pieces)]
        words = self._basic.tokenize(texts)
        per_word = tf.ragged.range(tf.cast(pieces.row_lengths(axis=1), tf.int32))  # [batch, (words)]
        index = tf.repeat(per_word.flat_values, pieces.values.row_lengths())
        word_index = tf.RaggedTensor.from_row_lengths(index, pieces.merge_dims(-2, -1).row_lengths())
        return pieces.merge_dims(-2, -1), word_index, words

    def tokenize_padded(self, texts, max_length):
        """Tokenizes, truncates to `max_length` and pads with 0 into a dense tensor.

        At least one column, so a batch of empty strings is still a valid
        (fully masked) model input.

        Args:
            texts: string tensor of shape [batch].
            max_length: the most tokens per text.

        Returns:
            int64 tensor [batch, min(longest, max_length) or 1].
        """
        ids = self.tokenize(texts)[:, :max_length]
        width = tf.maximum(tf.cast(ids.bounding_shape(axis=1), tf.int32), 1)
        return ids.to_tensor(default_value=0, shape=tf.stack([ids.nrows(out_type=tf.int32), width]))

    def detokenize(self, token_ids):
        """Joins ids back into text, dropping reserved tokens other than [UNK].

        Args:
            token_ids: int RaggedTensor or padded Tensor [batch, tokens].

        Returns:
            string tensor [batch], words separated by single spaces.
        """
        if not isinstance(token_ids, tf.RaggedTensor):
            token_ids = tf.RaggedTensor.from_tensor(token_ids)
        token_ids = tf.cast(token_ids, tf.int64)
        keep = (token_ids == UNK_ID) | (token_ids >= len(RESERVED_TOKENS))
        words = self._bert.detokenize(tf.ragged.boolean_mask(token_ids, keep))
        return tf.strings.reduce_join(words, separator=" ", axis=-1)

    def id_to_token(self, token_ids):
        """The WordPiece string of each id (any shape; unknown ids give "[UNK]")."""
        return self.id_table.lookup(tf.cast(token_ids, tf.int64))

    def normalize(self, texts):
        """The text as the tokenizer sees it: what `detokenize(tokenize(x))` returns
        when every word is in the vocabulary."""
        return tf.strings.reduce_join(self._basic.tokenize(texts), separator=" ", axis=-1)


# Undo the basic tokenizer's split of punctuation from words ("a man , in a t - shirt ." ->
# "a man, in a t-shirt."), so output text compares with untokenized references (sacreBLEU).
_DETOKENIZE_RULES = (
    (r" ([.,!?;:%)\]}])", r"\1"),
    (r"([(\[{$]) ", r"\1"),
    (r"(\w) ' (s|t|re|ve|ll|d|m)\b", r"\1'\2"),
    (r"(\w) ([-/]) (\w)", r"\1\2\3"),
    (r'" ([^"]*?) "', r'"\1"'),
)


def join_punctuation(texts):
    """Removes the spaces `WordPieceTokenizer.detokenize` leaves around punctuation.

    Args:
        texts: string tensor, words separated by single spaces.

    Returns:
        string tensor of the same shape, with conventional punctuation spacing.
    """
    for pattern, rewrite in _DETOKENIZE_RULES:
        texts = tf.strings.regex_replace(texts, pattern, rewrite)
    return texts
