"""`PortableLSTM`: an LSTM that never uses cuDNN, so its graph runs on TF Serving's CPU build.

Keras 3 decides at trace time: with `use_cudnn="auto"` (the default) and a GPU
visible, the traced graph holds `CudnnRNNV3` ops, which have no CPU kernel, so a
model exported on a GPU machine could not be served on CPU. `use_cudnn=False` is
the fix, but LSTM does not save that setting (a loaded model is back to "auto"),
hence a subclass that always sets it. The price is slower training on a GPU.
"""

import keras


@keras.saving.register_keras_serializable(package="seqapp")
class PortableLSTM(keras.layers.LSTM):
    """`keras.layers.LSTM` on the generic kernel only (`use_cudnn=False`), also once loaded.

    Args:
        units: output size.
        **kwargs: the arguments of `keras.layers.LSTM` except `use_cudnn`.

    Example:

    >>> layer = PortableLSTM(8, return_sequences=True)
    >>> layer(np.zeros([2, 5, 3]), mask=np.ones([2, 5], bool)).shape
    TensorShape([2, 5, 8])
    """

    def __init__(self, units, **kwargs):
        super().__init__(units, use_cudnn=False, **kwargs)
