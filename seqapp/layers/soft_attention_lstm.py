"""`SoftAttentionLSTM`: the decoder recurrence of Show, Attend and Tell (Xu et al., 2015)."""

import keras
from keras import ops


def doubly_stochastic_penalty(weights, mask=None):
    """`sum_i (1 - sum_t alpha_ti)^2`, averaged over the batch (Xu et al., 2015, eq. 14).

    The penalty of the "doubly stochastic" attention: every position should
    receive a total attention of about 1 over the whole output.

    Args:
        weights: attention weights `(batch, steps, positions)`.
        mask: optional boolean `(batch, steps)`, True on real steps; the
            others do not count.

    Returns:
        A float scalar.

    Example:

    >>> float(doubly_stochastic_penalty(np.array([[[0.5, 0.5], [1.0, 0.0]]])))  # (1-1.5)^2 + (1-0.5)^2
    0.5
    """
    weights = ops.convert_to_tensor(weights)
    if mask is not None:
        weights = weights * ops.cast(mask, weights.dtype)[:, :, None]
    return ops.mean(ops.sum(ops.square(1.0 - ops.sum(weights, axis=1)), axis=-1))


@keras.saving.register_keras_serializable(package="seqapp")
class SoftAttentionLSTM(keras.layers.Layer):
    """LSTM whose every step reads an attention context over a memory (soft "Show, Attend and Tell").

    At step t, with the previous state `(h, c)`:

        alpha_t = softmax_i(v . tanh(W_a a_i + W_h h + b))      additive attention
        z_t = beta_t * sum_i alpha_ti a_i,  beta_t = sigmoid(W_b h + b_b)   (gate optional)
        h, c = LSTMCell([x_t; z_t], (h, c))

    so the context enters the recurrence at every step (unlike
    `seqapp.models.lstm_attention`, whose Luong attention reads the LSTM's
    outputs afterwards). The gate is one sigmoid per memory channel. The
    initial `(h, c)` are `tanh` projections of the mean memory vector (over
    the real positions). The memory's attention keys `W_a a_i + b` are
    computed once per memory (`project_memory`).

    `call` runs the recurrence over time with `keras.ops.scan` (a
    `tf.while_loop` on TensorFlow: any number of steps and any batch, in
    graph mode too); `step` is one step of it, which cached decoding calls
    directly, so both follow one code path. The cell is Keras' `LSTMCell`
    (what `PortableLSTM` runs: never cuDNN). At masked steps `(h, c)` are
    carried over unchanged.

    With `attention_regularization` lambda > 0, training adds
    `lambda * doubly_stochastic_penalty(weights, mask)` with `add_loss` (Keras'
    `fit` adds it to the compiled loss). The penalty is summed over positions
    as in the paper, whose loss is summed over tokens; next to a per-token mean
    loss a lambda well below 1 is of the paper's strength.

    Args:
        units: LSTM width.
        attention_units: width of the additive attention (default: `units`).
        gate: whether the context is gated by `beta_t`.
        attention_regularization: lambda >= 0 (0: no penalty).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `(batch, steps, features)`, e.g. the previous tokens' embeddings.
        memory: `(batch, positions, memory_dim)`.
        mask: optional boolean `(batch, steps)`, True on real steps.
        memory_mask: optional boolean `(batch, positions)`, True on real positions.
        initial_state: optional `[h, c]` (default: `initial_state(memory, memory_mask)`).
        training: whether the penalty is added.

    Returns:
        `(outputs, contexts, weights)`: the hidden states `(batch, steps,
        units)`, the (gated) contexts `(batch, steps, memory_dim)` and the
        attention weights `(batch, steps, positions)`, rows summing to 1.

    Example:

    >>> layer = SoftAttentionLSTM(8)
    >>> memory = np.random.rand(2, 5, 6).astype("float32")
    >>> outputs, contexts, weights = layer(np.random.rand(2, 3, 4).astype("float32"), memory)
    >>> outputs.shape, contexts.shape, weights.shape
    ((2, 3, 8), (2, 3, 6), (2, 3, 5))
    """

    def __init__(self, units, attention_units=None, gate=True, attention_regularization=0.0, **kwargs):
        super().__init__(**kwargs)
        if attention_regularization < 0:
            raise ValueError(f"attention_regularization must be >= 0, got {attention_regularization}")
        self.units = units
        self.attention_units = attention_units
        self.gate = gate
        self.attention_regularization = attention_regularization
        self.supports_masking = True

    def build(self, inputs_shape, memory_shape):
        memory_dim = memory_shape[-1]
        attention_units = self.attention_units or self.units
        self.init_h = keras.layers.Dense(self.units, activation="tanh", name="init_h")
        self.init_c = keras.layers.Dense(self.units, activation="tanh", name="init_c")
        self.memory_projection = keras.layers.Dense(attention_units, name="memory_projection")
        self.query_projection = keras.layers.Dense(attention_units, use_bias=False, name="query_projection")
        self.score = keras.layers.Dense(1, use_bias=False, name="score")
        for layer in (self.init_h, self.init_c):
            layer.build((None, memory_dim))
        self.memory_projection.build((None, None, memory_dim))
        self.query_projection.build((None, self.units))
        self.score.build((None, None, attention_units))
        self.gate_projection = None
        if self.gate:
            self.gate_projection = keras.layers.Dense(memory_dim, activation="sigmoid", name="gate")
            self.gate_projection.build((None, self.units))
        self.cell = keras.layers.LSTMCell(self.units, name="cell")
        self.cell.build((None, inputs_shape[-1] + memory_dim))

    def initial_state(self, memory, memory_mask=None):
        """`[h, c]` from the mean of the memory over its real positions."""
        if memory_mask is None:
            mean = ops.mean(memory, axis=1)
        else:
            weights = ops.cast(memory_mask, memory.dtype)[:, :, None]
            mean = ops.sum(memory * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)
        return [self.init_h(mean), self.init_c(mean)]

    def project_memory(self, memory):
        """The attention keys `W_a a_i + b`: `(batch, positions, attention_units)`."""
        return self.memory_projection(memory)

    def step(self, inputs, state, memory, memory_keys, memory_mask=None):
        """One step: `(h, c, context, weights)` after `inputs` `(batch, features)` from `state` `[h, c]`."""
        h, c = state
        scores = self.score(ops.tanh(memory_keys + self.query_projection(h)[:, None, :]))[:, :, 0]
        if memory_mask is not None:
            scores = ops.where(memory_mask, scores, ops.cast(-1e9, scores.dtype))
        weights = ops.softmax(scores, axis=-1)
        context = ops.sum(weights[:, :, None] * memory, axis=1)
        if self.gate_projection is not None:
            context = context * self.gate_projection(h)
        _, (h, c) = self.cell(ops.concatenate([inputs, context], axis=-1), [h, c])
        return h, c, context, weights

    def call(self, inputs, memory, mask=None, memory_mask=None, initial_state=None, training=None):
        if initial_state is None:
            initial_state = self.initial_state(memory, memory_mask)
        memory_keys = self.project_memory(memory)
        batch, steps = ops.shape(inputs)[0], ops.shape(inputs)[1]
        step_mask = ops.ones((batch, steps), "bool") if mask is None else ops.cast(mask, "bool")

        def body(carry, step_inputs):
            x, real = step_inputs[:, :-1], step_inputs[:, -1:] > 0
            h, c, context, weights = self.step(x, carry[:2], memory, memory_keys, memory_mask)
            carry = (ops.where(real, h, carry[0]), ops.where(real, c, carry[1]), context, weights)
            return carry, carry  # Keras' TF scan wants outputs shaped like the carry

        # The carry holds the last context and weights too, only so the outputs can match it. The mask
        # travels as a last input channel: Keras' TF scan fails on several inputs of unknown length.
        initial = (*initial_state, ops.zeros_like(memory[:, 0]), ops.zeros_like(memory[:, :, 0]))
        scanned = ops.concatenate([inputs, ops.cast(step_mask, inputs.dtype)[:, :, None]], axis=-1)
        _, (outputs, _, contexts, weights) = ops.scan(body, initial, ops.transpose(scanned, (1, 0, 2)))
        outputs, contexts, weights = (ops.transpose(x, (1, 0, 2)) for x in (outputs, contexts, weights))
        if training and self.attention_regularization > 0:
            self.add_loss(self.attention_regularization * doubly_stochastic_penalty(weights, step_mask))
        return outputs, contexts, weights

    def compute_mask(self, inputs, mask=None):
        return None if mask is None else (mask, mask, mask)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "attention_units": self.attention_units,
                "gate": self.gate, "attention_regularization": self.attention_regularization}
