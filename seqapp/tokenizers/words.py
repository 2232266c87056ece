"""Word-level output vocabularies of language models: the most frequent words of a corpus."""

import collections
from pathlib import Path

import numpy as np

UNK = "<unk>"  # every word outside the vocabulary (PTB spells its own rare words so too)
EOS = "<eos>"  # ends every line of a corpus stream
RESERVED = (UNK, EOS)


def learn_word_vocabulary(lines, vocab_size, *, min_count=1):
    """The `vocab_size` most frequent whitespace-separated words of `lines`, reserved ones first.

    Args:
        lines: an iterable of strings.
        vocab_size: the most words, `<unk>` and `<eos>` included.
        min_count: the fewest occurrences a word needs.

    Returns:
        A list of words: `<unk>`, `<eos>`, then the rest by decreasing count (ties in
        alphabetical order), the order a log-uniform sampled softmax expects.

    >>> learn_word_vocabulary(["a b a", "c a b"], 4)
    ['<unk>', '<eos>', 'a', 'b']
    """
    counts = collections.Counter(word for line in lines for word in line.split())
    ranked = sorted((word for word, count in counts.items() if count >= min_count and word not in RESERVED),
                    key=lambda word: (-counts[word], word))
    return [*RESERVED, *ranked[: max(vocab_size - len(RESERVED), 0)]]


class WordVocabulary:
    """A word vocabulary read from a file of one word per line (the line number is the id).

    Args:
        path: the file `write_word_vocabulary` wrote.

    Example:
    >>> vocabulary = WordVocabulary(path)
    >>> vocabulary.lookup(np.array(["the", "qwerty"], object))
    array([5, 0], dtype=int32)
    """

    def __init__(self, path):
        self.vocab_path = str(path)
        self.words = Path(path).read_text(encoding="utf-8").split("\n")[:-1]
        self.ids = {word: index for index, word in enumerate(self.words)}
        if self.words[: len(RESERVED)] != list(RESERVED):
            raise ValueError(f"{path} is not a word vocabulary: it must start with {', '.join(RESERVED)}")

    @property
    def vocab_size(self):
        return len(self.words)

    def lookup(self, words):
        """Ids of a numpy array of words; `<unk>`'s id for words outside the vocabulary."""
        unk = self.ids[UNK]
        return np.array([self.ids.get(word, unk) for word in words], dtype=np.int32)


def write_word_vocabulary(words, path):
    """Writes one word per line."""
    Path(path).write_text("".join(f"{word}\n" for word in words), encoding="utf-8")
