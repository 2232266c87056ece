"""Text in, text out: tokenize, encode, search and detokenize inside one graph.

`Translator` is the single translation path: training-time evaluation,
`seqapp eval`, `seqapp explain`, the export's signatures and the demo all call
`translate`, so what is measured is what is served.
"""

import tensorflow as tf

from seqapp import decoding
from seqapp.tokenizers.wordpiece import END_ID
from seqapp.tokenizers.wordpiece import START_ID
from seqapp.tokenizers.wordpiece import join_punctuation


class Translator(tf.Module):
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

    def __init__(self, model, source_tokenizer, target_tokenizer, *, max_length, decode, name=None):
        super().__init__(name=name)
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.max_length = max_length
        self.decode = decode

    def max_output_lengths(self, source_mask):
        """`ratio * source length + extra`, at most `max_length`; 0 for an empty source."""
        lengths = tf.reduce_sum(tf.cast(source_mask, tf.float32), axis=1)
        limits = tf.cast(tf.math.ceil(self.decode.max_output_ratio * lengths), tf.int32) + self.decode.max_output_extra
        return tf.where(lengths > 0, tf.minimum(limits, self.max_length), 0)

    def translate(self, texts, *, beam_size=None, cached=True, with_attention=False):
        """Translates a batch of strings.

        Args:
            texts: string tensor [batch].
            beam_size: overrides `decode.beam_size` (1: greedy search).
            cached: decode with the model's incremental state (False recomputes
                the prefix at every step; same result, slower).
            with_attention: also return the tokens and cross-attention weights.

        Returns:
            A dict of dense tensors: `translation` (string [batch]), `score`
            (float [batch]: the search's ranking score), `token_ids` (int32
            [batch, steps], 0-padded) and, `with_attention`, `tokens` (string
            [batch, steps], "" on padding), `source_tokens` (string [batch,
            source_steps]) and `attention` (float [batch, steps, source_steps]).
        """
        beam_size = self.decode.beam_size if beam_size is None else beam_size
        source_ids = self.source_tokenizer.tokenize_padded(texts, self.max_length)
        source_mask = source_ids != 0
        memory, memory_mask = self.model.encode(source_ids, source_mask, training=False)
        state = self.model.decoding_state(memory, memory_mask, cached=cached)
        start_ids = tf.fill([tf.shape(source_ids)[0]], START_ID)
        search = dict(end_id=END_ID, max_lengths=self.max_output_lengths(source_mask))
        if beam_size == 1:
            result = decoding.greedy_search(self.model.decode_step, start_ids, state, **search)
        else:
            result = decoding.beam_search(self.model.decode_step, start_ids, state, beam_size=beam_size,
                                          length_penalty=self.decode.length_penalty, **search)
        outputs = {
            "translation": join_punctuation(self.target_tokenizer.detokenize(result.ids)),
            "score": result.scores,
            "token_ids": result.ids,
        }
        if with_attention:
            outputs.update(self._attention(source_ids, result.ids))
        return outputs

    def _attention(self, source_ids, target_ids):
        """Teacher-forces the decoded tokens once to read the cross-attention behind each."""
        decoder_ids = tf.concat([tf.fill([tf.shape(target_ids)[0], 1], START_ID), target_ids], axis=1)[:, :-1]
        decoder_ids = tf.where(target_ids != 0, decoder_ids, 0)
        features = {"encoder_token_ids": source_ids, "encoder_padding_mask": source_ids != 0,
                    "decoder_token_ids": decoder_ids, "decoder_padding_mask": target_ids != 0}
        attention = self.model.cross_attention(features)
        attention *= tf.cast(target_ids != 0, attention.dtype)[:, :, None]

        def tokens(tokenizer, ids):
            return tf.where(ids != 0, tokenizer.id_to_token(ids), "")

        return {"tokens": tokens(self.target_tokenizer, target_ids),
                "source_tokens": tokens(self.source_tokenizer, source_ids),
                "attention": attention}
