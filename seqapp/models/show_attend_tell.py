"""Show, Attend and Tell (Xu et al., 2015): a CNN feature map read by an LSTM with soft attention.

An image captioner with the decoding interface of the translation models
(`seqapp.models.transformer`), so `seqapp.decoding` and the generator treat
it alike; images are float `(batch, size, size, 3)` in [0, 1]:

    call(features)                    -> logits (batch, target_steps, vocab)
    encode(images)                    -> memory (batch, positions, dim), memory_mask (all True)
    decoding_state(memory, mask, cached) -> state dict (batch-major tensors)
    decode_step(ids, step, state)     -> logits (batch, vocab), state
    cross_attention(features)         -> (batch, target_steps, positions)
    feature_map_shape                 -> (H', W'), positions = H' * W' row by row

With `cached=True` the state keeps the memory, its attention keys (projected
once) and the LSTM's `(h, c)`, so a step runs the attention and the cell
once; with `cached=False` it keeps the prefix and re-runs the teacher-forced
decoder over it at every step (the baseline the cache is measured against).
"""

import keras
from keras import ops

from seqapp.layers import SoftAttentionLSTM


@keras.saving.register_keras_serializable(package="seqapp")
class ShowAttendTell(keras.Model):
    """Image encoder, then an LSTM that attends over the feature map at every step.

    Decoder (`SoftAttentionLSTM`): initial `(h, c)` from the mean feature
    vector, then at step t additive attention over the positions with
    `h_{t-1}`, a gated context `z_t`, and the LSTM fed `[E y_{t-1}; z_t]`.
    Deep output: `tanh(W [h_t; z_t; E y_{t-1}])` -> dropout -> logits.

    Args:
        vocab_size: caption token ids (0 is padding).
        encoder: a `ConvImageEncoder` (or its serialized config); its `dim` is
            the memory width.
        image_size: the (square) image size the model is built for.
        embedding_dim: token embedding width (and of the deep output).
        units: LSTM width.
        attention_units: width of the additive attention (default: `units`).
        gate: whether the context is gated.
        dropout: dropout on the embeddings and before the logits.
        attention_regularization: lambda of the doubly stochastic attention
            penalty added in training (0: none); see `SoftAttentionLSTM`.
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> model = ShowAttendTell(20, ConvImageEncoder(16, filters=8, blocks=2), image_size=32,
    ...                        embedding_dim=16, units=32)
    >>> model.build()
    >>> logits = model({"image": images, "decoder_token_ids": ids, "decoder_padding_mask": ids != 0})
    >>> logits.shape   # (batch, target_steps, 20)
    """

    def __init__(self, vocab_size, encoder, image_size=64, embedding_dim=128, units=256, attention_units=None,
                 gate=True, dropout=0.2, attention_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        self.vocab_size = vocab_size
        self.encoder = encoder
        self.image_size = image_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.attention_units = attention_units
        self.gate = gate
        self.dropout = dropout
        self.attention_regularization = attention_regularization

        # Unit-variance embeddings, as in seqapp.models.lstm_attention (Keras' default starts ~100x smaller).
        self.target_embedding = keras.layers.Embedding(
            vocab_size, embedding_dim, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
            name="target_embedding")
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.decoder = SoftAttentionLSTM(units, attention_units=attention_units, gate=gate,
                                         attention_regularization=attention_regularization, name="decoder")
        self.deep_output = keras.layers.Dense(embedding_dim, activation="tanh", name="deep_output")
        self.output_dropout = keras.layers.Dropout(dropout)
        self.output_projection = keras.layers.Dense(vocab_size, name="output_projection")

    @property
    def feature_map_shape(self):
        """`(H', W')` of the encoder's feature map (once built)."""
        return self.encoder.feature_map_shape

    def build(self, input_shape=None):
        """Creates every weight (so `load_weights` works on a fresh instance)."""
        if not self.encoder.built:  # a deserialized encoder comes built
            self.encoder.build((None, self.image_size, self.image_size, 3))
        memory_dim = self.encoder.dim
        self.target_embedding.build((None, None))
        self.decoder.build((None, None, self.embedding_dim), (None, None, memory_dim))
        self.deep_output.build((None, None, self.units + memory_dim + self.embedding_dim))
        self.output_projection.build((None, None, self.embedding_dim))
        self.built = True

    def encode(self, images, mask=None, training=None):
        """The feature map as memory `(batch, positions, dim)` and its mask (all True)."""
        memory = self.encoder(images, training=training)
        return memory, ops.ones(ops.shape(memory)[:2], "bool")

    def _logits(self, outputs, contexts, embedded, training=None):
        x = self.deep_output(ops.concatenate([outputs, contexts, embedded], axis=-1))
        return self.output_projection(self.output_dropout(x, training=training))

    def _decode(self, target_ids, memory, memory_mask, target_mask=None, training=None):
        """Teacher-forced decoder: logits and attention weights `(batch, target, positions)`."""
        embedded = self.embedding_dropout(self.target_embedding(target_ids), training=training)
        outputs, contexts, weights = self.decoder(embedded, memory, mask=target_mask, memory_mask=memory_mask,
                                                  training=training)
        return self._logits(outputs, contexts, embedded, training), weights

    def call(self, features, training=None):
        memory, memory_mask = self.encode(features["image"], training=training)
        logits, _ = self._decode(features["decoder_token_ids"], memory, memory_mask,
                                 ops.cast(features["decoder_padding_mask"], "bool"), training=training)
        return logits

    def cross_attention(self, features):
        """The attention weights `(batch, target, positions)`, rows summing to 1."""
        memory, memory_mask = self.encode(features["image"])
        _, weights = self._decode(features["decoder_token_ids"], memory, memory_mask)
        return weights

    def decoding_state(self, memory, memory_mask, cached=True):
        """The state `decode_step` starts from (see the module docstring).

        Cached: `memory`, `memory_mask`, the attention keys `memory_keys` and
        the LSTM's `h`, `c`. Not cached: `memory`, `memory_mask` and an empty
        int32 `prefix`.
        """
        memory_mask = ops.cast(memory_mask, "bool")
        state = {"memory": memory, "memory_mask": memory_mask}
        if not cached:
            return {**state, "prefix": ops.zeros((ops.shape(memory)[0], 0), "int32")}
        h, c = self.decoder.initial_state(memory, memory_mask)
        return {**state, "memory_keys": self.decoder.project_memory(memory), "h": h, "c": c}

    def decode_step(self, ids, step, state):
        """Logits of the next token after `ids` (the token at position `step`, unused by the LSTM)."""
        if "prefix" in state:
            prefix = ops.concatenate([state["prefix"], ops.cast(ids, "int32")[:, None]], axis=1)
            logits, _ = self._decode(prefix, state["memory"], state["memory_mask"])
            return logits[:, -1], {**state, "prefix": prefix}
        embedded = self.target_embedding(ids)
        h, c, context, _ = self.decoder.step(embedded, [state["h"], state["c"]], state["memory"],
                                             state["memory_keys"], state["memory_mask"])
        return self._logits(h, context, embedded), {**state, "h": h, "c": c}

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "encoder": keras.saving.serialize_keras_object(self.encoder), "image_size": self.image_size,
                "embedding_dim": self.embedding_dim, "units": self.units, "attention_units": self.attention_units,
                "gate": self.gate, "dropout": self.dropout,
                "attention_regularization": self.attention_regularization}
