"""`PortableGRU`: a GRU that never uses cuDNN (see `seqapp.layers.portable_lstm` for why)."""

import keras


@keras.saving.register_keras_serializable(package="seqapp")
class PortableGRU(keras.layers.GRU):
    """`keras.layers.GRU` on the generic kernel only (`use_cudnn=False`), also once loaded.

    Args:
        units: output size.
        **kwargs: the arguments of `keras.layers.GRU` except `use_cudnn`.

    Example:

    >>> PortableGRU(8)(np.zeros([2, 5, 3])).shape
    TensorShape([2, 8])
    """

    def __init__(self, units, **kwargs):
        super().__init__(units, use_cudnn=False, **kwargs)
