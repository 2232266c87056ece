"""Fixed sinusoidal position encodings (Vaswani et al., 2017)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="seqapp")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Adds sine/cosine position encodings to a sequence of vectors.

    Position p, channel 2i gets `sin(p / 10000^(2i/d))` and channel 2i+1 the
    cosine. The encodings are computed, not learned, so there is no maximum
    length; `start_index` places a single decoding step at its true position.

    Args:
        max_wavelength: the base of the geometric progression of wavelengths.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `(batch, steps, dim)` with an even `dim`.
        start_index: the position of the first step (int scalar tensor or int).

    Returns:
        `inputs` plus the encodings, same shape.

    Example:

    >>> layer = SinusoidalPositionEncoding()
    >>> layer(np.zeros((1, 3, 4), "float32"))[0, 0]   # position 0: sin 0, cos 0, ...
    [0., 1., 0., 1.]
    """

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.supports_masking = True

    def call(self, inputs, start_index=0):
        steps, dim = ops.shape(inputs)[1], inputs.shape[-1]
        positions = ops.cast(ops.arange(steps) + start_index, self.compute_dtype)
        # Each channel pair (2i, 2i+1) shares the timescale 10000^(2i/d).
        rates = ops.power(self.max_wavelength, -ops.cast(ops.arange(0, dim, 2), self.compute_dtype) / dim)
        angles = positions[:, None] * rates[None, :]
        encoding = ops.reshape(ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1), (steps, dim))
        return inputs + ops.cast(encoding, inputs.dtype)[None]

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}
