"""Highway layers (Srivastava, Greff and Schmidhuber, 2015) as a Keras 3 layer."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="seqapp")
class Highway(keras.layers.Layer):
    """A stack of highway layers that keep the width of their input.

    Each layer computes `gate = sigmoid(x W_g + b_g)` and
    `out = gate * relu(x W_h + b_h) + (1 - gate) * x`. The gate bias starts at
    -2, so a fresh layer mostly carries its input through (gate ~ 0.12), as in
    ELMo's character encoder.

    Args:
        num_layers: how many highway layers to stack.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a float tensor of shape `(..., width)`.

    Returns:
        A tensor of the input's shape; an input mask is propagated.

    Example:

    >>> highway = Highway(num_layers=2)
    >>> tuple(highway(np.random.rand(3, 5, 6).astype("float32")).shape)
    (3, 5, 6)
    >>> [weight.path for weight in highway.weights[:4]]
    ['highway/layer0_transform_kernel', 'highway/layer0_transform_bias', 'highway/layer0_gate_kernel', 'highway/layer0_gate_bias']
    """

    def __init__(self, num_layers=1, **kwargs):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be at least 1; received {num_layers}")
        self.num_layers = num_layers
        self.supports_masking = True

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None:
            raise ValueError("Highway needs a known last dimension (its width)")
        self._stack = []
        for index in range(self.num_layers):
            self._stack.append(
                (
                    self.add_weight(name=f"layer{index}_transform_kernel", shape=(width, width), initializer="glorot_uniform"),
                    self.add_weight(name=f"layer{index}_transform_bias", shape=(width,), initializer="zeros"),
                    self.add_weight(name=f"layer{index}_gate_kernel", shape=(width, width), initializer="glorot_uniform"),
                    self.add_weight(
                        name=f"layer{index}_gate_bias", shape=(width,), initializer=keras.initializers.Constant(-2.0)
                    ),
                )
            )

    def call(self, inputs):
        x = inputs
        for transform_kernel, transform_bias, gate_kernel, gate_bias in self._stack:
            gate = ops.sigmoid(ops.matmul(x, gate_kernel) + gate_bias)
            transformed = ops.relu(ops.matmul(x, transform_kernel) + transform_bias)
            x = gate * transformed + (1.0 - gate) * x
        return x

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["num_layers"] = self.num_layers
        return config
