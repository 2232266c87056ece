"""`ProjectedLSTMCell`: an LSTM step with a projection after it and clipping (LSTMP, Sak et al. 2014)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="seqapp")
class ProjectedLSTMCell(keras.layers.Layer):
    """One LSTM step whose output is projected to a smaller size, as in ELMo's biLM.

    The cell reads gate pre-activations already computed from its input
    (`x @ W + b`, 4 * `units` wide): the caller computes them for all steps in
    one matrix product, which on a CPU costs far less than one per step. Per
    step: `i, f, g, o = split(inputs + h @ U)`, `c = sigmoid(f + 1) * c +
    sigmoid(i) * tanh(g)` clipped to `±cell_clip`, `h = (sigmoid(o) * tanh(c))
    @ P` clipped to `±projection_clip`. The state is `[h, c]`; the output is `h`.

    Args:
        units: memory cells.
        projection_dim: size of the projected output (and of the recurrent state `h`).
        cell_clip: clips the memory cells (None: off).
        projection_clip: clips the projected output (None: off).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[batch, 4 * units]` gate pre-activations of this step.
        states: `[h, c]`, `[batch, projection_dim]` and `[batch, units]`.

    Returns:
        `(h, [h, c])`.

    Example:

    >>> cell = ProjectedLSTMCell(8, 4)
    >>> layer = keras.layers.RNN(cell, return_sequences=True)
    >>> layer(np.zeros([2, 5, 32], "float32")).shape
    TensorShape([2, 5, 4])
    """

    def __init__(self, units, projection_dim, cell_clip=3.0, projection_clip=3.0, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.projection_dim = projection_dim
        self.cell_clip = cell_clip
        self.projection_clip = projection_clip
        self.state_size = [projection_dim, units]
        self.output_size = projection_dim

    def build(self, input_shape):
        self.recurrent_kernel = self.add_weight(
            shape=(self.projection_dim, 4 * self.units), initializer="orthogonal", name="recurrent_kernel")
        self.projection_kernel = self.add_weight(
            shape=(self.units, self.projection_dim), initializer="glorot_uniform", name="projection_kernel")

    def call(self, inputs, states, training=None):
        h, c = states
        z = inputs + ops.matmul(h, self.recurrent_kernel)
        i, f, g, o = ops.split(z, 4, axis=-1)
        # +1 on the forget gate: remember by default at the start of training (Jozefowicz et al. 2015).
        c = ops.sigmoid(f + 1.0) * c + ops.sigmoid(i) * ops.tanh(g)
        if self.cell_clip is not None:
            c = ops.clip(c, -self.cell_clip, self.cell_clip)
        h = ops.matmul(ops.sigmoid(o) * ops.tanh(c), self.projection_kernel)
        if self.projection_clip is not None:
            h = ops.clip(h, -self.projection_clip, self.projection_clip)
        return h, [h, c]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.projection_dim), self.compute_dtype),
                ops.zeros((batch_size, self.units), self.compute_dtype)]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "projection_dim": self.projection_dim,
                "cell_clip": self.cell_clip, "projection_clip": self.projection_clip}
