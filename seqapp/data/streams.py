"""A corpus as one stream of words, cut into windows for a bidirectional language model.

Language models read text the way PTB is measured: every line's words followed
by `<eos>`, all lines one after the other. The stream keeps each word's own
spelling (the character encoder reads it) next to its id in the output
vocabulary (the softmax predicts it), so a rare word is `<unk>` only as a target.
"""

import dataclasses
import itertools

import numpy as np
import tensorflow as tf
from tensorflow_text.python.ops.bert_tokenizer import BasicTokenizer

from seqapp.tokenizers.characters import CharacterTokenizer
from seqapp.tokenizers.words import EOS


@dataclasses.dataclass
class TokenStream:
    """The words of a corpus as one stream: `<eos>`, then each line's words and `<eos>`.

    The leading `<eos>` is the context of the first word, so every word of the
    corpus and every line's `<eos>` is predicted once by the forward model, and
    every word and the leading `<eos>` once by the backward one.

    Attributes:
        spellings: the distinct words, in order of first appearance (`<eos>` first).
        ids: int32 `[tokens]`: each stream position's index into `spellings`.

    Example:
    >>> stream = TokenStream.from_lines(["a b", "b"])
    >>> stream.spellings[stream.ids].tolist()
    ['<eos>', 'a', 'b', '<eos>', 'b', '<eos>']
    """

    spellings: np.ndarray
    ids: np.ndarray

    @classmethod
    def from_lines(cls, lines, split="whitespace", lower_case=False):
        """Args:
            lines: an iterable of strings.
            split: "whitespace" keeps every whitespace-separated word as it is (PTB);
                "basic" splits punctuation off words, as `WordPieceTokenizer` finds the
                words a classifier's biLM reads (`split_words`).
            lower_case: fold case and strip accents (with "basic" only).
        """
        index = {EOS: 0}
        ids = [0]
        for words in split_words(lines, split, lower_case):
            ids.extend(index.setdefault(word, len(index)) for word in words)
            ids.append(0)
        return cls(np.array(list(index), dtype=object), np.array(ids, dtype=np.int32))

    def __len__(self):
        return len(self.ids)

    def targets(self, vocabulary):
        """int32 `[tokens]`: each position's id in `vocabulary` (a `WordVocabulary`)."""
        return vocabulary.lookup(self.spellings)[self.ids]

    def characters(self, max_chars):
        """int32 `[distinct words, max_chars]`: each spelling's `CharacterTokenizer` ids."""
        return CharacterTokenizer(max_chars).encode_words(tf.constant(self.spellings, tf.string)).numpy()


def split_words(lines, split="whitespace", lower_case=False, chunk=1024):
    """Yields each line's words (see `TokenStream.from_lines`)."""
    if split == "whitespace":
        yield from (line.split() for line in lines)
        return
    lines = iter(lines)
    while batch := list(itertools.islice(lines, chunk)):
        for words in words_of(tf.constant(batch, tf.string), split, lower_case).to_list():
            yield [word.decode("utf-8") for word in words]


def words_of(texts, split="whitespace", lower_case=False):
    """In the graph: string RaggedTensor `[batch, (words)]` of a string tensor `[batch]` (see `split_words`)."""
    if split == "whitespace":
        return tf.strings.split(texts)
    return BasicTokenizer(lower_case=lower_case).tokenize(texts)


def windows(stream, vocabulary, *, length, max_chars, batch_size, shuffle_seed=None):
    """Batches of `length`-word windows of a stream, each word's neighbours as targets.

    The stream is cut into consecutive windows; window `k` reads positions
    `[1 + k*length, 1 + (k+1)*length)`, and its forward targets are the words one
    position later, its backward targets those one position earlier (both come
    from the stream, across window edges). A last window that the stream cannot
    fill is dropped.

    Args:
        stream: a `TokenStream`.
        vocabulary: the `WordVocabulary` of the targets.
        length: words per window.
        max_chars: the character width of a word.
        batch_size: windows per batch (the last batch may hold fewer).
        shuffle_seed: shuffle the windows, in a new order each epoch, from this seed; None keeps them in order.

    Returns:
        `tf.data.Dataset` of `{"chars": [batch, length, max_chars], "forward_targets",
        "backward_targets": [batch, length]}` with a known cardinality.
    """
    count = (len(stream) - 2) // length
    if count < 1:
        raise ValueError(f"the stream has {len(stream)} tokens: too few for one window of {length}")
    starts = 1 + length * np.arange(count)[:, None]
    span = starts - 1 + np.arange(length + 2)[None, :]  # one extra word on each side for the targets
    ids, targets = stream.ids[span], stream.targets(vocabulary)[span]
    characters = tf.constant(stream.characters(max_chars))
    examples = tf.data.Dataset.from_tensor_slices((ids, targets))
    if shuffle_seed is not None:
        examples = examples.shuffle(count, seed=shuffle_seed, reshuffle_each_iteration=True)

    def features(ids, targets):
        return {"chars": tf.gather(characters, ids[:, 1:-1]), "forward_targets": targets[:, 2:],
                "backward_targets": targets[:, :-2]}

    return examples.batch(batch_size).map(features, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
