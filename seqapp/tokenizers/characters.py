"""ELMo-style character ids: every word becomes a fixed-width vector of byte ids."""

import tensorflow as tf

# Id 0 is kept for padding words out to the sentence length, so a word's ids
# never sum to zero and `mask_zero`-style masks work on the word axis.
BOW_ID = 257  # begin-of-word
EOW_ID = 258  # end-of-word
PAD_ID = 259  # pads a word out to `max_chars`
VOCAB_SIZE = 260


class CharacterTokenizer(tf.Module):
    """Splits text on whitespace and maps each word to `max_chars` character ids.

    As in ELMo (Peters et al., 2018) characters are UTF-8 bytes: byte `b` has id
    `b + 1`; each word is `[BOW] bytes... [EOW]`, cut to `max_chars - 2` bytes and
    padded with `PAD_ID`. Words that pad a sentence are all zeros. Only core TF ops
    (StringSplitV2, StringSplit on bytes, a hash-table lookup) are used.

    Args:
        max_chars: width of each word's vector, markers included (ELMo: 50).

    Example:
    >>> CharacterTokenizer(max_chars=6).tokenize(["hi"])
    <tf.Tensor: shape=(1, 1, 6), dtype=int32,
     numpy=array([[[257, 105, 106, 258, 259, 259]]], dtype=int32)>
    """

    def __init__(self, max_chars=50, name=None):
        super().__init__(name=name)
        if max_chars < 3:
            raise ValueError(f"max_chars must be at least 3 (two markers and a byte), got {max_chars}")
        self.max_chars = max_chars
        self.byte_strings = tf.constant([bytes([b]) for b in range(256)])
        self.byte_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.byte_strings, tf.range(1, 257, dtype=tf.int32)),
            default_value=PAD_ID,
        )

    def tokenize(self, texts):
        """Args:
            texts: string tensor [batch].

        Returns:
            int32 Tensor [batch, max_words, max_chars]; all-zero rows pad shorter texts.
        """
        words = tf.strings.split(texts)
        return words.with_flat_values(self.encode_words(words.flat_values)).to_tensor(default_value=0)

    def encode_words(self, words):
        """Args:
            words: string tensor [n], one word each (not split further).

        Returns:
            int32 Tensor [n, max_chars].
        """
        byte_ids = self.byte_table.lookup(tf.strings.bytes_split(words))
        byte_ids = byte_ids[:, : self.max_chars - 2]
        markers = tf.ones_like(byte_ids[:, :1])
        word_ids = tf.concat([markers * BOW_ID, byte_ids, markers * EOW_ID], axis=1)
        return word_ids.to_tensor(default_value=PAD_ID, shape=[None, self.max_chars])

    def detokenize(self, char_ids):
        """Inverse of `tokenize` up to whitespace and the `max_chars` cut.

        Args:
            char_ids: int Tensor [batch, words, max_chars].

        Returns:
            string tensor [batch], words joined by single spaces.
        """
        char_ids = tf.cast(char_ids, tf.int32)
        is_byte = (char_ids >= 1) & (char_ids <= 256)
        byte_strings = tf.gather(self.byte_strings, tf.ragged.boolean_mask(char_ids - 1, is_byte))
        words = tf.strings.reduce_join(byte_strings, axis=-1)
        words = tf.ragged.boolean_mask(words, tf.reduce_any(char_ids != 0, axis=-1))
        return tf.strings.reduce_join(words, separator=" ", axis=-1)
