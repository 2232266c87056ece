"""Encoder input in, text out: prepare, encode, search and detokenize inside one graph.

`Generator` is the one decoding path of every encoder-decoder task: a
subclass says how its raw input (texts, image bytes, ...) becomes the
encoder's features and how long an output may be; the search
(`seqapp.decoding`, greedy or beam, with the model's cache), the
detokenization and the attention read-out are shared. Training-time
evaluation, `seqapp eval`, `seqapp explain`, the export's signatures and the
demo all call it, so what is measured is what is served.
"""

import tensorflow as tf

from seqapp import decoding
from seqapp.tokenizers.wordpiece import END_ID
from seqapp.tokenizers.wordpiece import START_ID
from seqapp.tokenizers.wordpiece import join_punctuation


class Generator(tf.Module):
    """Wraps an encoder-decoder and its target tokenizer for in-graph generation.

    The model has the decoding interface of `seqapp.models.transformer`:
    `encode(*encoder features)`, `decoding_state`, `decode_step` and
    `cross_attention(features)`. Subclasses set `encoder_keys` (the feature
    names `encode` takes, in order) and implement `encoder_features` and
    `max_output_lengths`.

    Args:
        model: the encoder-decoder.
        target_tokenizer: the run's `WordPieceTokenizer` of the outputs.
        max_length: no output is longer (and inputs that are token sequences are
            truncated to it).
        decode: the definition's `decode` section (beam size, length penalty,
            output length limits).
    """

    encoder_keys = ()

    def __init__(self, model, target_tokenizer, *, max_length, decode, name=None):
        super().__init__(name=name)
        self.model = model
        self.target_tokenizer = target_tokenizer
        self.max_length = max_length
        self.decode = decode

    def encoder_features(self, inputs):
        """`{name: tensor}` the model's encoder reads, for a batch of raw inputs."""
        raise NotImplementedError

    def max_output_lengths(self, features):
        """int32 [batch]: how many tokens each output may have."""
        raise NotImplementedError

    def generate(self, inputs, *, beam_size=None, cached=True, with_attention=False):
        """Generates one text per input.

        Args:
            inputs: a batch of raw inputs (what `encoder_features` takes).
            beam_size: overrides `decode.beam_size` (1: greedy search).
            cached: decode with the model's incremental state (False recomputes
                the prefix at every step; same result, slower).
            with_attention: also return the tokens and the cross-attention.

        Returns:
            A dict of dense tensors: `text` (string [batch]), `score` (float
            [batch]: the search's ranking score), `token_ids` (int32 [batch,
            steps], 0-padded), the encoder `features` and, `with_attention`,
            `tokens` (string [batch, steps], "" on padding) and `attention`
            (float [batch, steps, memory positions], 0 on padding steps).
        """
        beam_size = self.decode.beam_size if beam_size is None else beam_size
        features = self.encoder_features(inputs)
        memory, memory_mask = self.model.encode(*[features[key] for key in self.encoder_keys], training=False)
        state = self.model.decoding_state(memory, memory_mask, cached=cached)
        start_ids = tf.fill([tf.shape(memory)[0]], START_ID)
        search = dict(end_id=END_ID, max_lengths=self.max_output_lengths(features))
        if beam_size == 1:
            result = decoding.greedy_search(self.model.decode_step, start_ids, state, **search)
        else:
            result = decoding.beam_search(self.model.decode_step, start_ids, state, beam_size=beam_size,
                                          length_penalty=self.decode.length_penalty, **search)
        outputs = {
            "text": join_punctuation(self.target_tokenizer.detokenize(result.ids)),
            "score": result.scores,
            "token_ids": result.ids,
            "features": features,
        }
        if with_attention:
            outputs["tokens"] = tokens_of(self.target_tokenizer, result.ids)
            outputs["attention"] = self._attention(features, result.ids)
        return outputs

    def _attention(self, features, target_ids):
        """Teacher-forces the generated tokens once to read the cross-attention behind each."""
        decoder_ids = tf.concat([tf.fill([tf.shape(target_ids)[0], 1], START_ID), target_ids], axis=1)[:, :-1]
        decoder_ids = tf.where(target_ids != 0, decoder_ids, 0)
        attention = self.model.cross_attention({**features, "decoder_token_ids": decoder_ids,
                                                "decoder_padding_mask": target_ids != 0})
        return attention * tf.cast(target_ids != 0, attention.dtype)[:, :, None]


def tokens_of(tokenizer, ids):
    """The tokens of int ids [batch, steps], "" where the id is padding."""
    return tf.where(ids != 0, tokenizer.id_to_token(ids), "")
