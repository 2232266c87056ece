"""LSTM encoder-decoder with attention for translation (Luong et al., 2015).

The recurrent baseline next to `seqapp.models.transformer.Transformer`, with
the same interface, so `seqapp.decoding` and the runner treat both alike:

    call(features)                    -> logits (batch, target_steps, vocab)
    encode(source_ids, source_mask)   -> memory, memory_mask
    decoding_state(memory, mask, cached) -> state dict (batch-major tensors)
    decode_step(ids, step, state)     -> logits (batch, vocab), state
    cross_attention(features)         -> (batch, target_steps, source_steps)

Global attention without input feeding: the attention context is not fed
back into the decoder LSTM, so teacher forcing runs each decoder layer over
the whole target in one call, and the attention reads the top layer's
outputs afterwards. With `cached=True` the state keeps every decoder layer's
`(h, c)` and the memory's attention keys projected once, so a step runs each
LSTM cell once; with `cached=False` it keeps the prefix and re-runs the
teacher-forced decoder over it at every step (the baseline the cache is
measured against).

Every LSTM is a `PortableLSTM` (never cuDNN), so an exported model runs on
TensorFlow Serving's CPU build.
"""

import keras
from keras import ops

from seqapp.layers import PortableLSTM

_ATTENTION = {"luong": keras.layers.Attention, "bahdanau": keras.layers.AdditiveAttention}


@keras.saving.register_keras_serializable(package="seqapp")
class LSTMAttention(keras.Model):
    """Bidirectional-LSTM encoder, LSTM decoder with global attention.

    Encoder: source embedding -> dropout -> `num_layers` bidirectional LSTMs
    (dropout between them) honouring the source mask; the memory is the
    concatenated forward/backward outputs, `2 * units` wide.

    Decoder: its initial `(h, c)`, for every layer, is a `tanh` projection of
    the encoder's final hidden states (the top layer's forward output at the
    last real token and backward output at the first), read from the memory
    so that `decoding_state` needs nothing else. Target embedding -> dropout
    -> `num_layers` LSTMs (dropout between them) -> attention over the memory
    -> `Dense(units, tanh)` on `[output; context]` -> dropout -> logits.

    Attention: the memory is projected once to `units`-wide keys (values stay
    the memory itself). "luong" scores `h_t . (W h_s)` with
    `keras.layers.Attention` (Luong's "general" score, the matrix applied on
    the memory side so it is computed once per source); "bahdanau" scores
    `v . tanh(W_q h_t + W_k h_s)` with `keras.layers.AdditiveAttention`.

    Args:
        source_vocab_size, target_vocab_size: token ids (0 is padding).
        embedding_dim: width of both embeddings.
        units: LSTM width (each direction of the encoder, and the decoder).
        num_layers: encoder layers and decoder layers.
        dropout: dropout on embeddings, between layers and before the logits.
        attention: "luong" or "bahdanau".
        **kwargs: `keras.Model` keyword arguments.

    Example:

    >>> model = LSTMAttention(100, 120, embedding_dim=16, units=16)
    >>> logits = model({"encoder_token_ids": src, "encoder_padding_mask": src != 0,
    ...                 "decoder_token_ids": tgt, "decoder_padding_mask": tgt != 0})
    >>> logits.shape   # (batch, target_steps, 120)
    """

    def __init__(self, source_vocab_size, target_vocab_size, embedding_dim=256, units=256, num_layers=1,
                 dropout=0.2, attention="luong", **kwargs):
        super().__init__(**kwargs)
        if attention not in _ATTENTION:
            raise ValueError(f"attention must be one of {sorted(_ATTENTION)}, got {attention!r}")
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.num_layers = num_layers
        self.dropout = dropout
        self.attention = attention

        # Unit-variance embeddings: with Keras' default uniform(+-0.05) every signal starts ~100x
        # smaller and training sits at the unigram distribution for epochs (measured on Multi30k).
        embeddings = keras.initializers.RandomNormal(stddev=1.0)
        self.source_embedding = keras.layers.Embedding(source_vocab_size, embedding_dim, name="source_embedding",
                                                       embeddings_initializer=embeddings)
        self.target_embedding = keras.layers.Embedding(target_vocab_size, embedding_dim, name="target_embedding",
                                                       embeddings_initializer=embeddings)
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.layer_dropout = keras.layers.Dropout(dropout)
        self.encoder_layers = [
            keras.layers.Bidirectional(PortableLSTM(units, return_sequences=True, name=f"encoder_lstm_{i}"),
                                       name=f"encoder_{i}")
            for i in range(num_layers)
        ]
        # One projection to every decoder layer's initial (h, c).
        self.bridge = keras.layers.Dense(2 * num_layers * units, activation="tanh", name="bridge")
        self.decoder_layers = [PortableLSTM(units, return_sequences=True, return_state=True, name=f"decoder_{i}")
                               for i in range(num_layers)]
        self.memory_projection = keras.layers.Dense(units, use_bias=attention == "bahdanau",
                                                    name="memory_projection")
        self.query_projection = (keras.layers.Dense(units, use_bias=False, name="query_projection")
                                 if attention == "bahdanau" else None)
        self.attention_layer = _ATTENTION[attention](name="attention")
        self.combine = keras.layers.Dense(units, activation="tanh", name="combine")
        self.output_dropout = keras.layers.Dropout(dropout)
        self.output_projection = keras.layers.Dense(target_vocab_size, name="output_projection")

    def build(self, input_shape=None):
        """Creates every weight (so `load_weights` works on a fresh instance)."""
        units = self.units
        self.source_embedding.build((None, None))
        self.target_embedding.build((None, None))
        width = self.embedding_dim
        for layer in self.encoder_layers:
            layer.build((None, None, width))
            width = 2 * units
        self.bridge.build((None, 2 * units))
        width = self.embedding_dim
        for layer in self.decoder_layers:
            layer.build((None, None, width))
            width = units
        self.memory_projection.build((None, None, 2 * units))
        if self.query_projection is not None:
            self.query_projection.build((None, None, units))
        self.attention_layer.build([(None, None, units), (None, None, 2 * units), (None, None, units)])
        self.combine.build((None, None, 3 * units))
        self.output_projection.build((None, None, units))
        self.built = True

    def encode(self, source_ids, source_mask, training=None):
        """Encoder outputs `(batch, source_steps, 2 * units)` and the source mask."""
        source_mask = ops.cast(source_mask, "bool")
        x = self.embedding_dropout(self.source_embedding(source_ids), training=training)
        for i, layer in enumerate(self.encoder_layers):
            if i:
                x = self.layer_dropout(x, training=training)
            x = layer(x, mask=source_mask, training=training)
        return x, source_mask

    def _initial_state(self, memory, memory_mask):
        """Every decoder layer's initial `[h, c]` from the encoder's final hidden states."""
        lengths = ops.sum(ops.cast(memory_mask, "int32"), axis=1)
        last = ops.maximum(lengths - 1, 0)[:, None, None]
        forward = ops.take_along_axis(memory[:, :, :self.units], last, axis=1)[:, 0]
        backward = memory[:, 0, self.units:]
        states = self.bridge(ops.concatenate([forward, backward], axis=-1))
        states = ops.split(states, 2 * self.num_layers, axis=-1)
        return [states[2 * i:2 * i + 2] for i in range(self.num_layers)]

    def _attend(self, outputs, memory, memory_keys, memory_mask, query_mask=None, training=None):
        """Logits and attention weights `(batch, target, source)` of the top decoder outputs."""
        query = outputs if self.query_projection is None else self.query_projection(outputs)
        context, weights = self.attention_layer([query, memory, memory_keys], mask=[query_mask, memory_mask],
                                                return_attention_scores=True, training=training)
        x = self.combine(ops.concatenate([outputs, context], axis=-1))
        return self.output_projection(self.output_dropout(x, training=training)), weights

    def _decode(self, target_ids, memory, memory_mask, target_mask=None, training=None):
        """Teacher-forced decoder: logits and attention weights."""
        x = self.embedding_dropout(self.target_embedding(target_ids), training=training)
        for i, (layer, state) in enumerate(zip(self.decoder_layers, self._initial_state(memory, memory_mask))):
            if i:
                x = self.layer_dropout(x, training=training)
            x, _, _ = layer(x, initial_state=state, training=training)
        return self._attend(x, memory, self.memory_projection(memory), memory_mask, target_mask, training)

    def call(self, features, training=None):
        memory, memory_mask = self.encode(features["encoder_token_ids"], features["encoder_padding_mask"],
                                          training=training)
        logits, _ = self._decode(features["decoder_token_ids"], memory, memory_mask,
                                 ops.cast(features["decoder_padding_mask"], "bool"), training=training)
        return logits

    def cross_attention(self, features):
        """The attention weights: `(batch, target, source)`, rows summing to 1, 0 on source padding."""
        memory, memory_mask = self.encode(features["encoder_token_ids"], features["encoder_padding_mask"])
        _, weights = self._decode(features["decoder_token_ids"], memory, memory_mask)
        return weights

    def decoding_state(self, memory, memory_mask, cached=True):
        """The state `decode_step` starts from (see the module docstring).

        Cached: `memory`, `memory_mask`, the projected `memory_keys` and every
        decoder layer's `layer{i}_h`, `layer{i}_c`. Not cached: `memory`,
        `memory_mask` and an empty int32 `prefix`.
        """
        memory_mask = ops.cast(memory_mask, "bool")
        if not cached:
            batch = ops.shape(memory)[0]
            return {"memory": memory, "memory_mask": memory_mask, "prefix": ops.zeros((batch, 0), "int32")}
        state = {"memory": memory, "memory_mask": memory_mask, "memory_keys": self.memory_projection(memory)}
        for i, (h, c) in enumerate(self._initial_state(memory, memory_mask)):
            state.update({f"layer{i}_h": h, f"layer{i}_c": c})
        return state

    def decode_step(self, ids, step, state):
        """Logits of the next token after `ids` (the token at position `step`).

        `step` is unused: the recurrent state already knows the position.
        """
        if "prefix" in state:
            prefix = ops.concatenate([state["prefix"], ops.cast(ids, "int32")[:, None]], axis=1)
            logits, _ = self._decode(prefix, state["memory"], state["memory_mask"])
            return logits[:, -1], {**state, "prefix": prefix}
        x = self.target_embedding(ids)
        new_state = dict(state)
        for i, layer in enumerate(self.decoder_layers):
            # One step of the layer's cell is one step of the layer (no dropout at inference).
            x, (h, c) = layer.cell(x, [state[f"layer{i}_h"], state[f"layer{i}_c"]])
            new_state.update({f"layer{i}_h": h, f"layer{i}_c": c})
        logits, _ = self._attend(x[:, None], state["memory"], state["memory_keys"], state["memory_mask"])
        return logits[:, 0], new_state

    def get_config(self):
        return {**super().get_config(), "source_vocab_size": self.source_vocab_size,
                "target_vocab_size": self.target_vocab_size, "embedding_dim": self.embedding_dim,
                "units": self.units, "num_layers": self.num_layers, "dropout": self.dropout,
                "attention": self.attention}
