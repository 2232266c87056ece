"""Transformer image captioner: a CNN feature map as the memory of a Transformer decoder.

The image side is a `ConvImageEncoder` (optionally followed by Transformer
encoder layers over the feature map); the text side *is* the decoder of the
translation `seqapp.models.transformer.Transformer`: the same layers, and
the same `TransformerDecoding` methods (`_embed`, `_logits`, `_decode`,
`decoding_state`, `decode_step`), so teacher forcing, the key/value cache and
the uncached baseline are written once for both tasks. Interface (images are float
`(batch, size, size, 3)` in [0, 1]):

    call(features)                    -> logits (batch, target_steps, vocab)
    encode(images)                    -> memory (batch, positions, dim), memory_mask (all True)
    decoding_state(memory, mask, cached) -> state dict (batch-major tensors)
    decode_step(ids, step, state)     -> logits (batch, vocab), state
    cross_attention(features)         -> (batch, target_steps, positions)
    feature_map_shape                 -> (H', W'), positions = H' * W' row by row
"""

import keras
from keras import ops

from seqapp.layers import SinusoidalPositionEncoding
from seqapp.layers import TransformerDecoder
from seqapp.layers import TransformerEncoder
from seqapp.models.transformer import TransformerDecoding


@keras.saving.register_keras_serializable(package="seqapp")
class TransformerCaptioner(TransformerDecoding, keras.Model):
    """Image encoder, `num_encoder_layers` self-attention layers, `num_layers` Transformer decoders.

    Args:
        vocab_size: caption token ids (0 is padding).
        encoder: a `ConvImageEncoder` (or its serialized config); its `dim` is
            the model width.
        image_size: the (square) image size the model is built for.
        num_layers: decoder layers.
        num_encoder_layers: `TransformerEncoder` layers over the feature map
            (0: the decoders attend to the encoder's map directly).
        num_heads: attention heads.
        ffn_dim: feed-forward hidden size.
        dropout: dropout on the embeddings and inside every layer.
        norm_first: pre-layer-norm (with a final norm on the memory and on the
            decoder stack) or post-layer-norm.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> model = TransformerCaptioner(20, ConvImageEncoder(16, filters=8, blocks=2), image_size=32,
    ...                              num_layers=1, num_heads=2, ffn_dim=32)
    >>> model.build()
    >>> logits = model({"image": images, "decoder_token_ids": ids, "decoder_padding_mask": ids != 0})
    >>> logits.shape   # (batch, target_steps, 20)
    """

    def __init__(self, vocab_size, encoder, image_size=64, num_layers=2, num_encoder_layers=0, num_heads=4,
                 ffn_dim=512, dropout=0.1, norm_first=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        self.vocab_size = vocab_size
        self.encoder = encoder
        self.image_size = image_size
        self.num_layers = num_layers
        self.num_encoder_layers = num_encoder_layers
        self.dim = encoder.dim
        self.num_heads = num_heads
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.norm_first = norm_first

        layer_args = dict(num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout, norm_first=norm_first)
        self.encoder_layers = [TransformerEncoder(**layer_args, name=f"encoder_{i}")
                               for i in range(num_encoder_layers)]
        self.memory_dropout = keras.layers.Dropout(dropout)
        self.target_embedding = keras.layers.Embedding(vocab_size, self.dim, name="target_embedding")
        self.positions = SinusoidalPositionEncoding(name="positions")
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.decoder_layers = [TransformerDecoder(**layer_args, name=f"decoder_{i}") for i in range(num_layers)]
        # Pre-LN leaves the residual streams unnormalized: the memory and the decoder stack end with a norm.
        self.memory_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="memory_norm") if norm_first else None
        self.decoder_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="decoder_norm") if norm_first else None
        self.output_projection = keras.layers.Dense(vocab_size, name="output_projection")

    @property
    def feature_map_shape(self):
        """`(H', W')` of the encoder's feature map (once built)."""
        return self.encoder.feature_map_shape

    def build(self, input_shape=None):
        """Creates every weight (so `load_weights` works on a fresh instance)."""
        if not self.encoder.built:  # a deserialized encoder comes built
            self.encoder.build((None, self.image_size, self.image_size, 3))
        sequence = (None, None, self.dim)
        self.target_embedding.build((None, None))
        for layer in self.encoder_layers:
            layer.build(sequence)
        for layer in self.decoder_layers:
            layer.build(sequence, sequence)
        for norm in (self.memory_norm, self.decoder_norm):
            if norm is not None:
                norm.build(sequence)
        self.output_projection.build(sequence)
        self.built = True

    def encode(self, images, mask=None, training=None):
        """The feature map as memory `(batch, positions, dim)` and its mask (all True)."""
        x = self.memory_dropout(self.encoder(images, training=training), training=training)
        for layer in self.encoder_layers:
            x = layer(x, training=training)
        if self.memory_norm is not None:
            x = self.memory_norm(x)
        return x, ops.ones(ops.shape(x)[:2], "bool")

    def call(self, features, training=None):
        memory, memory_mask = self.encode(features["image"], training=training)
        logits, _ = self._decode(features["decoder_token_ids"], memory, memory_mask, training=training)
        return logits

    def cross_attention(self, features):
        """The last decoder layer's cross-attention, averaged over heads: `(batch, target, positions)`."""
        memory, memory_mask = self.encode(features["image"])
        _, weights = self._decode(features["decoder_token_ids"], memory, memory_mask)
        return ops.mean(weights, axis=1)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "encoder": keras.saving.serialize_keras_object(self.encoder), "image_size": self.image_size,
                "num_layers": self.num_layers, "num_encoder_layers": self.num_encoder_layers,
                "num_heads": self.num_heads, "ffn_dim": self.ffn_dim, "dropout": self.dropout,
                "norm_first": self.norm_first}
