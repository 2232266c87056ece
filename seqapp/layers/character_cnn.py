"""ELMo's character-convolution token encoder (Kim et al., 2016; Peters et al., 2018) as a Keras 3 layer."""

import keras
import tensorflow as tf
from keras import ops

from seqapp.layers.highway import Highway
from seqapp.tokenizers.characters import VOCAB_SIZE

ELMO_FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))


@keras.saving.register_keras_serializable(package="seqapp")
class CharacterCNN(keras.layers.Layer):
    """Encodes each word from its character ids into one vector.

    Characters are embedded (`VOCAB_SIZE + 1` ids: 0 and the ids of
    `seqapp.tokenizers.characters.CharacterTokenizer`); each `(width, count)`
    of `filters` is a `Conv1D` of `count` filters of `width` characters
    ("valid" padding) followed by a ReLU and a max over the character
    positions. The maxima are concatenated, go through `Highway` layers and a
    linear projection to `projection_dim`.

    The encoder runs once per distinct word of the batch (unique rows, encode,
    gather back), not once per occurrence: each word's vector is the same as
    if it were encoded alone. A word whose ids are all zero pads its sentence:
    it is masked and its output is exactly zero.

    Args:
        filters: `(width, count)` pairs, one convolution each; every width must
            be at least 1 and at most the inputs' `max_chars`. The default is
            ELMo's big model (2048 filters).
        char_embedding_dim: size of each character's embedding.
        highway_layers: how many `Highway` layers follow the convolutions; 0
            for none.
        projection_dim: size of each word's output vector.
        **kwargs: base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: an int tensor of shape `(batch, timesteps, max_chars)`, as
            `CharacterTokenizer.tokenize` makes.

    Returns:
        A float tensor of shape `(batch, timesteps, projection_dim)`, zero on
        padding words, with the mask `(batch, timesteps)`, False on them.

    Example:

    >>> from seqapp.tokenizers.characters import CharacterTokenizer
    >>> ids = CharacterTokenizer(max_chars=8).tokenize(["the cat sat", "a cat"])
    >>> cnn = CharacterCNN(filters=((1, 4), (2, 4), (3, 8)), projection_dim=8)
    >>> vectors = cnn(ids)
    >>> tuple(vectors.shape)
    (2, 3, 8)
    >>> np.asarray(cnn.compute_mask(ids))
    array([[ True,  True,  True],
           [ True,  True, False]])
    >>> bool(np.all(np.asarray(vectors)[1, 2] == 0))
    True
    """

    def __init__(
        self,
        filters=ELMO_FILTERS,
        char_embedding_dim=16,
        highway_layers=2,
        projection_dim=512,
        **kwargs,
    ):
        super().__init__(**kwargs)
        filters = tuple((int(width), int(count)) for width, count in filters)
        if not filters:
            raise ValueError("`filters` needs at least one (width, count) pair")
        for width, count in filters:
            if width < 1 or count < 1:
                raise ValueError(f"every (width, count) in `filters` must be positive; received {(width, count)}")
        if highway_layers < 0:
            raise ValueError(f"`highway_layers` must be 0 or more; received {highway_layers}")
        self.filters = filters
        self.char_embedding_dim = char_embedding_dim
        self.highway_layers = highway_layers
        self.projection_dim = projection_dim
        self.supports_masking = True

    def build(self, input_shape):
        max_chars = input_shape[-1]
        widest = max(width for width, _ in self.filters)
        if max_chars is not None and widest > max_chars:
            raise ValueError(f"a filter of width {widest} does not fit in words of max_chars={max_chars}")
        self._embedding = keras.layers.Embedding(
            VOCAB_SIZE + 1, self.char_embedding_dim, dtype=self.dtype_policy, name="char_embedding"
        )
        self._embedding.build((None, max_chars))
        self._convs = []
        for width, count in self.filters:
            conv = keras.layers.Conv1D(count, width, padding="valid", dtype=self.dtype_policy, name=f"conv_width{width}")
            conv.build((None, max_chars, self.char_embedding_dim))
            self._convs.append(conv)
        total = sum(count for _, count in self.filters)
        self._highway = None
        if self.highway_layers:
            self._highway = Highway(self.highway_layers, dtype=self.dtype_policy, name="highway")
            self._highway.build((None, total))
        self._projection = keras.layers.Dense(self.projection_dim, dtype=self.dtype_policy, name="projection")
        self._projection.build((None, total))

    def _encode_words(self, words):
        """`[words, max_chars]` ids -> `[words, projection_dim]` vectors."""
        chars = self._embedding(words)
        pooled = [ops.max(ops.relu(conv(chars)), axis=1) for conv in self._convs]
        x = ops.concatenate(pooled, axis=-1)
        if self._highway is not None:
            x = self._highway(x)
        return self._projection(x)

    def call(self, inputs):
        ids = ops.cast(inputs, "int32")
        shape = ops.shape(ids)
        flat = ops.reshape(ids, (-1, shape[-1]))
        # Sentences repeat words (and padding words) a lot: encoding each
        # distinct row once is what makes the encoder affordable on CPU.
        words, index = tf.raw_ops.UniqueV2(x=flat, axis=tf.constant([0], "int64"))
        vectors = ops.take(self._encode_words(words), index, axis=0)
        vectors = ops.reshape(vectors, (shape[0], shape[1], self.projection_dim))
        mask = ops.cast(self.compute_mask(ids), vectors.dtype)
        return vectors * ops.expand_dims(mask, -1)

    def compute_mask(self, inputs, mask=None):
        return ops.any(ops.not_equal(inputs, 0), axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.projection_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": [list(pair) for pair in self.filters],
                "char_embedding_dim": self.char_embedding_dim,
                "highway_layers": self.highway_layers,
                "projection_dim": self.projection_dim,
            }
        )
        return config
