"""One Transformer encoder layer: self-attention and a feed-forward block."""

import keras

from seqapp.layers.cached_multi_head_attention import CachedMultiHeadAttention


def residual(x, sublayer, norm, dropout, norm_first, training=None):
    """One residual sub-block: `x + dropout(sublayer(x))` with pre- or post-layer-norm."""
    y = sublayer(norm(x) if norm_first else x)
    x = x + dropout(y, training=training)
    return x if norm_first else norm(x)


@keras.saving.register_keras_serializable(package="seqapp")
class TransformerEncoder(keras.layers.Layer):
    """Transformer encoder layer (Vaswani et al., 2017).

    Self-attention over the real (unmasked) steps, then a position-wise
    feed-forward block; each sub-block has dropout and a residual connection,
    with layer normalization either after the residual sum (`norm_first=False`,
    the original) or at the sub-block's input (`norm_first=True`, pre-LN,
    steadier to train deep or with few warmup steps).

    Args:
        num_heads: attention heads; `dim` must divide by it.
        ffn_dim: hidden size of the feed-forward block.
        dropout: dropout after attention, inside and after the feed-forward block.
        norm_first: pre-layer-norm (True) or post-layer-norm (False).
        activation: activation of the feed-forward block.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `(batch, steps, dim)`.
        padding_mask: optional boolean `(batch, steps)`, True on real steps.
        training: whether dropout is on.

    Returns:
        `(batch, steps, dim)`.

    Example:

    >>> layer = TransformerEncoder(num_heads=2, ffn_dim=32)
    >>> layer(np.random.rand(2, 7, 16).astype("float32")).shape
    (2, 7, 16)
    """

    def __init__(self, num_heads, ffn_dim, dropout=0.1, norm_first=False, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.norm_first = norm_first
        self.activation = activation
        self.supports_masking = True

    def build(self, inputs_shape):
        dim = inputs_shape[-1]
        self.attention = CachedMultiHeadAttention(self.num_heads, dim // self.num_heads, dropout=self.dropout,
                                                  name="self_attention")
        self.attention.build(inputs_shape, inputs_shape)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention_norm.build(inputs_shape)
        self.ffn_inner = keras.layers.Dense(self.ffn_dim, activation=self.activation, name="ffn_inner")
        self.ffn_inner.build(inputs_shape)
        self.ffn_outer = keras.layers.Dense(dim, name="ffn_outer")
        self.ffn_outer.build((*inputs_shape[:-1], self.ffn_dim))
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_norm.build(inputs_shape)
        self.drop = keras.layers.Dropout(self.dropout)

    def call(self, inputs, padding_mask=None, training=None):
        mask = None if padding_mask is None else padding_mask[:, None, :]

        def self_attend(x):
            return self.attention(x, x, attention_mask=mask, training=training)[0]

        def feed_forward(x):
            return self.ffn_outer(self.drop(self.ffn_inner(x), training=training))

        x = residual(inputs, self_attend, self.attention_norm, self.drop, self.norm_first, training)
        return residual(x, feed_forward, self.ffn_norm, self.drop, self.norm_first, training)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "ffn_dim": self.ffn_dim,
                "dropout": self.dropout, "norm_first": self.norm_first, "activation": self.activation}
