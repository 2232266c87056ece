"""`BiLMEncoder`: the two LSTM stacks of an ELMo-style bidirectional language model."""

import keras
import tensorflow as tf
from keras import ops

from seqapp.layers.projected_lstm_cell import ProjectedLSTMCell

DIRECTIONS = ("forward", "backward")


@keras.saving.register_keras_serializable(package="seqapp")
class BiLMEncoder(keras.layers.Layer):
    """A forward and a backward stack of projected LSTMs over token vectors (Peters et al. 2018).

    Each direction has `num_layers` `ProjectedLSTMCell` layers; every layer after
    the first adds its input to its output (the residual connection of ELMo), so
    the token vectors must be `projection_dim` wide. The forward stack reads the
    tokens left to right and its output at `t` depends on tokens `<= t` only; the
    backward stack reads them right to left (each sequence reversed within its
    length, so padding stays at the end) and its output at `t` depends on tokens
    `>= t` only. The two directions share nothing here; a language model shares
    the token encoder and the softmax between them.

    Args:
        units: LSTM memory cells per layer.
        projection_dim: width of the token vectors, of each layer's projected output.
        num_layers: LSTM layers per direction.
        cell_clip, projection_clip: see `ProjectedLSTMCell`.
        dropout: dropout on each layer's input.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[batch, time, projection_dim]` token vectors.
        mask: optional bool `[batch, time]`, True on real tokens, padding at the end.
        training: dropout on or off.

    Returns:
        ELMo's layers, `num_layers + 1` tensors `[batch, time, 2 * projection_dim]`:
        the token vectors repeated for both directions, then each LSTM layer's
        forward and backward outputs concatenated; zero at padded steps.

    Example:

    >>> encoder = BiLMEncoder(16, 8)
    >>> layers = encoder(np.zeros([2, 5, 8], "float32"))
    >>> len(layers), layers[-1].shape
    (3, TensorShape([2, 5, 16]))
    """

    def __init__(self, units, projection_dim, num_layers=2, cell_clip=3.0, projection_clip=3.0, dropout=0.1,
                 **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.projection_dim = projection_dim
        self.num_layers = num_layers
        self.cell_clip = cell_clip
        self.projection_clip = projection_clip
        self.dropout = dropout
        self.supports_masking = True
        self.input_projections = {d: [keras.layers.Dense(4 * units, name=f"{d}_gates_{k}")
                                      for k in range(num_layers)] for d in DIRECTIONS}
        self.lstms = {d: [keras.layers.RNN(ProjectedLSTMCell(units, projection_dim, cell_clip, projection_clip),
                                           return_sequences=True, return_state=True, name=f"{d}_lstm_{k}")
                          for k in range(num_layers)] for d in DIRECTIONS}
        self.dropout_layer = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        if input_shape[-1] != self.projection_dim:
            raise ValueError(f"BiLMEncoder reads vectors of projection_dim={self.projection_dim}, "
                             f"received width {input_shape[-1]}")
        for direction in DIRECTIONS:
            for gates, lstm in zip(self.input_projections[direction], self.lstms[direction]):
                gates.build((None, None, self.projection_dim))
                lstm.build((None, None, 4 * self.units))

    def run_direction(self, direction, inputs, mask=None, initial_states=None, training=None):
        """One direction's stack over tokens already in its reading order.

        A language model calls this on a stream: the backward direction on the
        reversed stream, and `initial_states` carries each layer's state over
        from the segment before.

        Args:
            direction: "forward" or "backward".
            inputs: `[batch, time, projection_dim]`, in reading order.
            mask: optional bool `[batch, time]`.
            initial_states: a `[h, c]` per layer, or None for zeros.
            training: dropout on or off.

        Returns:
            `(outputs, states)`: each layer's `[batch, time, projection_dim]` output,
            and each layer's final `[h, c]`.
        """
        outputs, states, x = [], [], inputs
        for index, (gates, lstm) in enumerate(zip(self.input_projections[direction], self.lstms[direction])):
            initial = None if initial_states is None else list(initial_states[index])
            y, h, c = lstm(gates(self.dropout_layer(x, training=training)), mask=mask, initial_state=initial,
                           training=training)
            if index > 0:
                y = y + x
            outputs.append(y)
            states.append([h, c])
            x = y
        return outputs, states

    def call(self, inputs, mask=None, training=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], "bool")
        mask = ops.cast(mask, "bool")
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        forward, _ = self.run_direction("forward", inputs, mask, training=training)
        backward, _ = self.run_direction("backward", _reverse(inputs, lengths), mask, training=training)
        keep = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        layers = [ops.concatenate([inputs, inputs], axis=-1)]
        layers += [ops.concatenate([f, _reverse(b, lengths)], axis=-1) for f, b in zip(forward, backward)]
        return [layer * keep for layer in layers]

    def compute_mask(self, inputs, mask=None):
        return [mask] * (self.num_layers + 1)

    def compute_output_shape(self, input_shape):
        return [(*input_shape[:-1], 2 * self.projection_dim)] * (self.num_layers + 1)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "projection_dim": self.projection_dim,
                "num_layers": self.num_layers, "cell_clip": self.cell_clip, "projection_clip": self.projection_clip,
                "dropout": self.dropout}


def _reverse(x, lengths):
    """Reverses each sequence of `x` within its length (padding stays at the end)."""
    return tf.reverse_sequence(x, tf.cast(lengths, tf.int64), seq_axis=1, batch_axis=0)
