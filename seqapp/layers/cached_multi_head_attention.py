"""Multi-head attention that can keep the keys and values it has already projected."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="seqapp")
class CachedMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` with a key/value cache for step-by-step decoding.

    Without a cache it is plain multi-head attention. With a cache it serves
    incremental decoding, as KerasHub's layer of the same name does, without
    ever recomputing a past position:

    - self-attention: the keys and values projected from `value` (the new
      positions) are appended to `cache`, and the queries attend over all of it;
    - cross-attention: pass `value=None` and a cache made once by
      `project_memory(memory)`; the memory is never projected again.

    The cache only grows by concatenation (core TF ops, no XLA update ops), so
    a decoding loop exported for TF Serving stays within what its CPU server runs.

    Args:
        Those of `keras.layers.MultiHeadAttention`.

    Call arguments:
        query: `(batch, target_steps, dim)`.
        value: `(batch, source_steps, dim)`, or None to attend over `cache` only.
        key: optional; defaults to `value`.
        attention_mask: optional boolean `(batch, target_steps, source_steps)`,
            True where attention is allowed (over the cache plus new positions).
        cache: optional `{"key", "value"}` of projected tensors
            `(batch, steps, num_heads, key_dim)`.
        training: whether attention dropout is on.

    Returns:
        `(outputs, scores, cache)`: outputs `(batch, target_steps, output_dim)`,
        attention scores `(batch, num_heads, target_steps, source_steps)` and the
        updated cache (None when no cache was given).

    Example:

    >>> attention = CachedMultiHeadAttention(num_heads=2, key_dim=4)
    >>> memory = np.random.rand(1, 5, 8).astype("float32")
    >>> cache = attention.project_memory(memory)
    >>> outputs, scores, _ = attention(np.ones((1, 1, 8), "float32"), None, cache=cache)
    >>> scores.shape
    (1, 2, 1, 5)
    """

    def build(self, query_shape, value_shape=None, key_shape=None):
        super().build(query_shape, query_shape if value_shape is None else value_shape, key_shape)

    def project_memory(self, memory):
        """The cache of a cross-attention over `memory`: its projected keys and values."""
        return {"key": self.key_dense(memory), "value": self.value_dense(memory)}

    def call(self, query, value, key=None, attention_mask=None, cache=None, training=None):
        if value is None:
            keys, values = cache["key"], cache["value"]
        else:
            keys = self.key_dense(value if key is None else key)
            values = self.value_dense(value)
            if cache is not None:
                keys = ops.concatenate([cache["key"], keys], axis=1)
                values = ops.concatenate([cache["value"], values], axis=1)
        new_cache = None if cache is None else {"key": keys, "value": values}
        # Scores requested: the einsum path (the fused kernel cannot return them).
        outputs, scores = self._compute_attention(
            self.query_dense(query), keys, values, attention_mask, training, return_attention_scores=True
        )
        return self.output_dense(outputs), scores, new_cache
