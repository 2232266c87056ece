"""Text in, text out: tokenize, encode, search and detokenize inside one graph.

`Translator` is the translation task's `seqapp.generator.Generator`:
training-time evaluation, `seqapp eval`, `seqapp explain`, the export's
signatures and the demo all call `translate`, so what is measured is what is
served.
"""

import tensorflow as tf

from seqapp.generator import Generator
from seqapp.generator import tokens_of


class Translator(Generator):
    """Wraps a seqapp encoder-decoder and its tokenizers for in-graph translation.

    Args:
        model: a `Transformer` or `LSTMAttention` (see `seqapp.models.transformer`).
        source_tokenizer, target_tokenizer: the run's `WordPieceTokenizer`s.
        max_length: sources are truncated to this many tokens, and no output is longer.
        decode: the definition's `decode` section (`seqapp.tasks.translation.DecodeConfig`: beam
            size, length penalty, output length limit).

    Example:

    >>> translator = Translator(model, source_tokenizer, target_tokenizer, max_length=64, decode=DecodeConfig())
    >>> translator.translate(tf.constant(["Ein Hund läuft."]))["translation"]
    <tf.Tensor: shape=(1,), dtype=string, numpy=array([b'A dog runs.'], dtype=object)>
    """

    encoder_keys = ("encoder_token_ids", "encoder_padding_mask")

    def __init__(self, model, source_tokenizer, target_tokenizer, *, max_length, decode, name=None):
        super().__init__(model, target_tokenizer, max_length=max_length, decode=decode, name=name)
        self.source_tokenizer = source_tokenizer

    def encoder_features(self, texts):
        source_ids = self.source_tokenizer.tokenize_padded(texts, self.max_length)
        return {"encoder_token_ids": source_ids, "encoder_padding_mask": source_ids != 0}

    def max_output_lengths(self, features):
        """`ratio * source length + extra`, at most `max_length`; 0 for an empty source."""
        lengths = tf.reduce_sum(tf.cast(features["encoder_padding_mask"], tf.float32), axis=1)
        limits = tf.cast(tf.math.ceil(self.decode.max_output_ratio * lengths), tf.int32) + self.decode.max_output_extra
        return tf.where(lengths > 0, tf.minimum(limits, self.max_length), 0)

    def translate(self, texts, *, beam_size=None, cached=True, with_attention=False):
        """Translates a batch of strings.

        Args:
            texts: string tensor [batch].
            beam_size, cached, with_attention: as `Generator.generate`.

        Returns:
            A dict of dense tensors: `translation` (string [batch]), `score`
            (float [batch]: the search's ranking score), `token_ids` (int32
            [batch, steps], 0-padded) and, `with_attention`, `tokens` (string
            [batch, steps], "" on padding), `source_tokens` (string [batch,
            source_steps]) and `attention` (float [batch, steps, source_steps]).
        """
        outputs = self.generate(texts, beam_size=beam_size, cached=cached, with_attention=with_attention)
        outputs["translation"] = outputs.pop("text")
        features = outputs.pop("features")
        if with_attention:
            outputs["source_tokens"] = tokens_of(self.source_tokenizer, features["encoder_token_ids"])
        return outputs
