"""Transformer encoder-decoder for translation (Vaswani et al., 2017).

Trained with teacher forcing on the seq2seq features of `seqapp.data.pipeline`
and decoded step by step by `seqapp.decoding` through the interface every
seqapp translation model has:

    call(features)                    -> logits (batch, target_steps, vocab)
    encode(source_ids, source_mask)   -> memory, memory_mask
    decoding_state(memory, mask, cached) -> state dict (batch-major tensors)
    decode_step(ids, step, state)     -> logits (batch, vocab), state
    cross_attention(features)         -> (batch, target_steps, source_steps)

With `cached=True` the state keeps every decoder layer's past keys and
values and the memory projected once, so a step costs one position; with
`cached=False` it keeps the prefix and recomputes it at every step (the
baseline the cache is measured against).
"""

import math

import keras
from keras import ops

from seqapp.layers import SinusoidalPositionEncoding
from seqapp.layers import TransformerDecoder
from seqapp.layers import TransformerEncoder


class TransformerDecoding:
    """The Transformer decoder's side of a model: teacher forcing, the key/value cache and the
    uncached baseline, written once for every model whose decoder is a Transformer's.

    A model that mixes it in has `dim`, `target_embedding`, `positions` (a
    `SinusoidalPositionEncoding`), `embedding_dropout`, `decoder_layers`
    (`TransformerDecoder`s), `decoder_norm` (or None) and `output_projection`
    (or None: logits from the tied `target_embedding`).
    """

    def _embed(self, embedding, ids, start_index=0, training=None):
        x = embedding(ids) * math.sqrt(self.dim)
        return self.embedding_dropout(self.positions(x, start_index=start_index), training=training)

    def _logits(self, x):
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        if self.output_projection is None:
            return ops.matmul(x, ops.transpose(self.target_embedding.embeddings))
        return self.output_projection(x)

    def _decode(self, target_ids, memory, memory_mask, training=None):
        """Teacher-forced decoder: logits and the last layer's cross-attention weights."""
        x = self._embed(self.target_embedding, target_ids, training=training)
        for layer in self.decoder_layers:
            x, weights, _ = layer(x, memory, memory_mask, training=training)
        return self._logits(x), weights

    def decoding_state(self, memory, memory_mask, cached=True):
        """The state `decode_step` starts from (see the module docstring)."""
        batch = ops.shape(memory)[0]
        if not cached:
            return {"memory": memory, "memory_mask": memory_mask, "prefix": ops.zeros((batch, 0), "int32")}
        state = {"memory_mask": memory_mask}
        for i, layer in enumerate(self.decoder_layers):
            state.update({f"layer{i}_{key}": value for key, value in layer.initial_cache(memory).items()})
        return state

    def decode_step(self, ids, step, state):
        """Logits of the next token after `ids` (the token at position `step`)."""
        if "prefix" in state:
            prefix = ops.concatenate([state["prefix"], ops.cast(ids, "int32")[:, None]], axis=1)
            logits, _ = self._decode(prefix, state["memory"], state["memory_mask"])
            return logits[:, -1], {**state, "prefix": prefix}
        x = self._embed(self.target_embedding, ids[:, None], start_index=step)
        new_state = {"memory_mask": state["memory_mask"]}
        for i, layer in enumerate(self.decoder_layers):
            keys = ("self_key", "self_value", "memory_key", "memory_value")
            x, _, cache = layer(x, memory_mask=state["memory_mask"],
                                cache={key: state[f"layer{i}_{key}"] for key in keys})
            new_state.update({f"layer{i}_{key}": value for key, value in cache.items()})
        return self._logits(x)[:, 0], new_state


@keras.saving.register_keras_serializable(package="seqapp")
class Transformer(TransformerDecoding, keras.Model):
    """Transformer encoder-decoder with sinusoidal positions.

    Args:
        source_vocab_size, target_vocab_size: token ids (0 is padding).
        num_layers: encoder layers and decoder layers.
        dim: model width (embeddings, attention, residual stream).
        num_heads: attention heads.
        ffn_dim: feed-forward hidden size.
        dropout: dropout on embeddings and inside every layer.
        norm_first: pre-layer-norm (with a final norm on each stack) or post-layer-norm.
        share_embeddings: one embedding matrix for source, target and the output
            projection (needs a shared vocabulary, so equal sizes).
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> model = Transformer(100, 120, num_layers=1, dim=16, num_heads=2, ffn_dim=32)
    >>> logits = model({"encoder_token_ids": src, "encoder_padding_mask": src != 0,
    ...                 "decoder_token_ids": tgt, "decoder_padding_mask": tgt != 0})
    >>> logits.shape   # (batch, target_steps, 120)
    """

    def __init__(self, source_vocab_size, target_vocab_size, num_layers=3, dim=256, num_heads=4, ffn_dim=1024,
                 dropout=0.1, norm_first=True, share_embeddings=False, **kwargs):
        super().__init__(**kwargs)
        if share_embeddings and source_vocab_size != target_vocab_size:
            raise ValueError("share_embeddings needs one shared vocabulary (equal source and target sizes)")
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.num_layers = num_layers
        self.dim = dim
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.norm_first = norm_first
        self.share_embeddings = share_embeddings

        self.source_embedding = keras.layers.Embedding(source_vocab_size, dim, name="source_embedding")
        self.target_embedding = (self.source_embedding if share_embeddings
                                 else keras.layers.Embedding(target_vocab_size, dim, name="target_embedding"))
        self.positions = SinusoidalPositionEncoding(name="positions")
        self.embedding_dropout = keras.layers.Dropout(dropout)
        layer_args = dict(num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout, norm_first=norm_first)
        self.encoder_layers = [TransformerEncoder(**layer_args, name=f"encoder_{i}") for i in range(num_layers)]
        self.decoder_layers = [TransformerDecoder(**layer_args, name=f"decoder_{i}") for i in range(num_layers)]
        # Pre-LN leaves the residual stream unnormalized; each stack ends with a norm.
        self.encoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="encoder_norm") if norm_first else None
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="decoder_norm") if norm_first else None
        self.output_projection = (None if share_embeddings
                                  else keras.layers.Dense(target_vocab_size, name="output_projection"))

    def build(self, input_shape=None):
        """Creates every weight (so `load_weights` works on a fresh instance)."""
        sequence = (None, None, self.dim)
        self.source_embedding.build((None, None))
        self.target_embedding.build((None, None))
        for layer in self.encoder_layers:
            layer.build(sequence)
        for layer in self.decoder_layers:
            layer.build(sequence, sequence)
        for norm in (self.encoder_norm, self.decoder_norm):
            if norm is not None:
                norm.build(sequence)
        if self.output_projection is not None:
            self.output_projection.build(sequence)
        self.built = True

    def encode(self, source_ids, source_mask, training=None):
        """Encoder outputs `(batch, source_steps, dim)` and the source mask."""
        x = self._embed(self.source_embedding, source_ids, training=training)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask=source_mask, training=training)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x, source_mask

    def call(self, features, training=None):
        memory, memory_mask = self.encode(features["encoder_token_ids"], features["encoder_padding_mask"],
                                          training=training)
        logits, _ = self._decode(features["decoder_token_ids"], memory, memory_mask, training=training)
        return logits

    def cross_attention(self, features):
        """The last decoder layer's cross-attention, averaged over heads: `(batch, target, source)`."""
        memory, memory_mask = self.encode(features["encoder_token_ids"], features["encoder_padding_mask"])
        _, weights = self._decode(features["decoder_token_ids"], memory, memory_mask)
        return ops.mean(weights, axis=1)

    def get_config(self):
        return {**super().get_config(), "source_vocab_size": self.source_vocab_size,
                "target_vocab_size": self.target_vocab_size, "num_layers": self.num_layers, "dim": self.dim,
                "num_heads": self.num_heads, "ffn_dim": self.ffn_dim, "dropout": self.dropout,
                "norm_first": self.norm_first, "share_embeddings": self.share_embeddings}
