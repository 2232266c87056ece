"""ELMo's learned scalar mix of layers (Peters et al., 2018) as a Keras 3 layer."""

import keras
from keras import ops

_EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="seqapp")
class ScalarMix(keras.layers.Layer):
    """Mixes same-shaped layers as `gamma * sum_j softmax(w)_j * h_j`.

    `w` (`scalar_weights`, one per layer) starts at zero, so the mix starts as
    the plain average; `gamma` starts at 1. With `layer_norm=True` each `h_j`
    is first normalized much as in AllenNLP's `ScalarMix`: minus its mean, divided
    by its standard deviation, both scalars taken over every element of every
    unmasked position of `h_j` in each sequence (AllenNLP: in the whole batch), so
    neither padding nor the other sequences of a batch shift them.

    Args:
        num_layers: how many tensors each call mixes.
        layer_norm: whether to normalize each tensor before mixing.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a list of `num_layers` float tensors of the same shape
            `(batch, timesteps, channels)`.
        mask: optional boolean tensor of shape `(batch, timesteps)`, True on
            real steps, or a list of such masks (the first one not `None`
            counts).

    Returns:
        A tensor of shape `(batch, timesteps, channels)`, zero on masked
        steps; the mask is propagated.

    Example:

    >>> mix = ScalarMix(3)
    >>> layers = [np.full((1, 2, 4), c, "float32") for c in (1.0, 2.0, 6.0)]
    >>> np.asarray(mix(layers))[0, 0]
    array([3., 3., 3., 3.], dtype=float32)
    >>> np.asarray(mix.normalized_weights()).round(3)
    array([0.333, 0.333, 0.333], dtype=float32)
    """

    def __init__(self, num_layers, layer_norm=False, **kwargs):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be at least 1; received {num_layers}")
        self.num_layers = num_layers
        self.layer_norm = layer_norm
        self.supports_masking = True

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != self.num_layers:
            raise ValueError(f"ScalarMix({self.num_layers}) takes a list of {self.num_layers} tensors")
        self.scalar_weights = self.add_weight(name="scalar_weights", shape=(self.num_layers,), initializer="zeros")
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="ones")

    def normalized_weights(self):
        """The mixing weights `softmax(scalar_weights)`, which sum to 1."""
        return ops.softmax(self.scalar_weights)

    def call(self, inputs, mask=None):
        if len(inputs) != self.num_layers:
            raise ValueError(f"ScalarMix({self.num_layers}) received {len(inputs)} tensors")
        mask = _first_mask(mask)
        dtype = inputs[0].dtype
        # [batch, timesteps, 1]: 1 on the steps that count.
        weights = ops.ones_like(inputs[0][..., :1]) if mask is None else ops.expand_dims(ops.cast(mask, dtype), -1)
        if self.layer_norm:
            # Statistics per sequence (AllenNLP pools the whole batch): a served answer must not
            # depend on which requests were batched with it.
            count = ops.maximum(ops.sum(weights, axis=(1, 2), keepdims=True)
                                * ops.cast(ops.shape(inputs[0])[-1], dtype), 1.0)
        mixture = ops.softmax(ops.cast(self.scalar_weights, dtype))
        output = 0.0
        for index, h in enumerate(inputs):
            if self.layer_norm:
                mean = ops.sum(h * weights, axis=(1, 2), keepdims=True) / count
                variance = ops.sum(ops.square((h - mean) * weights), axis=(1, 2), keepdims=True) / count
                h = (h - mean) / ops.sqrt(variance + _EPSILON)
            output = output + mixture[index] * h
        output = ops.cast(self.gamma, dtype) * output
        if mask is not None:
            output = output * weights
        return output

    def compute_mask(self, inputs, mask=None):
        return _first_mask(mask)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, "layer_norm": self.layer_norm})
        return config


def _first_mask(mask):
    if isinstance(mask, (list, tuple)):
        return next((m for m in mask if m is not None), None)
    return mask
