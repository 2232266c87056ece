"""One Transformer decoder layer, for teacher-forced training and cached step-by-step decoding."""

import keras
from keras import ops

from seqapp.layers.cached_multi_head_attention import CachedMultiHeadAttention
from seqapp.layers.transformer_encoder import residual


@keras.saving.register_keras_serializable(package="seqapp")
class TransformerDecoder(keras.layers.Layer):
    """Transformer decoder layer: causal self-attention, cross-attention, feed-forward.

    One layer serves both uses (as KerasHub's decoder does):

    - teacher forcing (`cache=None`): the whole target at once, each step
      attending to itself and earlier steps only;
    - incremental decoding: `inputs` holds the new step(s) only and `cache`
      the keys/values of every earlier step plus the projected memory (see
      `initial_cache`); the returned cache has the new steps appended, so no
      earlier step is ever recomputed.

    Args:
        num_heads: attention heads; `dim` must divide by it.
        ffn_dim: hidden size of the feed-forward block.
        dropout: dropout after each sub-block and inside the feed-forward block.
        norm_first: pre-layer-norm (True) or post-layer-norm (False).
        activation: activation of the feed-forward block.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `(batch, steps, dim)`.
        memory: the encoder outputs `(batch, source_steps, dim)`; may be None
            when `cache` is given (its projected memory is used).
        memory_mask: boolean `(batch, source_steps)`, True on real source steps.
        cache: None, or `{"self_key", "self_value", "memory_key", "memory_value"}`.
        training: whether dropout is on.

    Returns:
        `(outputs, cross_attention, cache)`: outputs `(batch, steps, dim)`,
        cross-attention weights `(batch, num_heads, steps, source_steps)` and
        the updated cache (None without one).

    Example:

    >>> layer = TransformerDecoder(num_heads=2, ffn_dim=32)
    >>> memory = np.random.rand(2, 5, 16).astype("float32")
    >>> outputs, weights, _ = layer(np.random.rand(2, 3, 16).astype("float32"), memory)
    >>> weights.shape
    (2, 2, 3, 5)
    """

    def __init__(self, num_heads, ffn_dim, dropout=0.1, norm_first=False, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.norm_first = norm_first
        self.activation = activation

    def build(self, inputs_shape, memory_shape=None):
        dim = inputs_shape[-1]
        memory_shape = inputs_shape if memory_shape is None else memory_shape
        head_dim = dim // self.num_heads
        self.self_attention = CachedMultiHeadAttention(self.num_heads, head_dim, dropout=self.dropout,
                                                       name="self_attention")
        self.self_attention.build(inputs_shape, inputs_shape)
        self.cross_attention = CachedMultiHeadAttention(self.num_heads, head_dim, dropout=self.dropout,
                                                        name="cross_attention")
        self.cross_attention.build(inputs_shape, memory_shape)
        self.ffn_inner = keras.layers.Dense(self.ffn_dim, activation=self.activation, name="ffn_inner")
        self.ffn_inner.build(inputs_shape)
        self.ffn_outer = keras.layers.Dense(dim, name="ffn_outer")
        self.ffn_outer.build((*inputs_shape[:-1], self.ffn_dim))
        self.norms = [keras.layers.LayerNormalization(epsilon=1e-6, name=f"norm_{i}") for i in range(3)]
        for norm in self.norms:
            norm.build(inputs_shape)
        self.drop = keras.layers.Dropout(self.dropout)

    def initial_cache(self, memory):
        """The cache before the first step: no past steps, the memory projected once."""
        projected = self.cross_attention.project_memory(memory)
        batch = ops.shape(memory)[0]
        empty = ops.zeros((batch, 0, self.num_heads, self.self_attention.key_dim), dtype=projected["key"].dtype)
        return {"self_key": empty, "self_value": empty,
                "memory_key": projected["key"], "memory_value": projected["value"]}

    def call(self, inputs, memory=None, memory_mask=None, cache=None, training=None):
        memory_attention_mask = None if memory_mask is None else memory_mask[:, None, :]
        if cache is None:
            steps = ops.shape(inputs)[1]
            causal = ops.tril(ops.ones((steps, steps), dtype="bool"))[None]
            self_cache = memory_cache = None
        else:
            causal = None  # one new step attends to every cached step and itself
            self_cache = {"key": cache["self_key"], "value": cache["self_value"]}
            memory_cache = {"key": cache["memory_key"], "value": cache["memory_value"]}
        new_self_cache = weights = None

        def self_attend(x):
            nonlocal new_self_cache
            y, _, new_self_cache = self.self_attention(x, x, attention_mask=causal, cache=self_cache,
                                                       training=training)
            return y

        def cross_attend(x):
            nonlocal weights
            y, weights, _ = self.cross_attention(x, None if cache is not None else memory,
                                                 attention_mask=memory_attention_mask, cache=memory_cache,
                                                 training=training)
            return y

        def feed_forward(x):
            return self.ffn_outer(self.drop(self.ffn_inner(x), training=training))

        x = inputs
        for norm, sublayer in zip(self.norms, (self_attend, cross_attend, feed_forward)):
            x = residual(x, sublayer, norm, self.drop, self.norm_first, training)
        if cache is not None:
            cache = {**cache, "self_key": new_self_cache["key"], "self_value": new_self_cache["value"]}
        return x, weights, cache

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
                "dropout": self.dropout, "norm_first": self.norm_first, "activation": self.activation}
