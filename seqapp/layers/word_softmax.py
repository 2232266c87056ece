"""`WordSoftmax`: a language model's output layer, with sampled softmax for large vocabularies."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="seqapp")
class WordSoftmax(keras.layers.Layer):
    """Scores every word of a vocabulary from a hidden state, and the negative log-likelihood of targets.

    `call` gives full logits. `nll` gives each target's negative log-likelihood:
    with `num_sampled` set and in training, by sampled softmax (Jean et al.
    2015) over that many words drawn log-uniformly, which assumes ids sorted by
    decreasing frequency (`learn_word_vocabulary`'s order); otherwise by the
    full softmax, as evaluation must.

    Args:
        vocab_size: words in the vocabulary.
        num_sampled: words sampled per batch in training; None trains on the full softmax.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: `[..., dim]` hidden states.

    Returns:
        `[..., vocab_size]` logits.

    Example:

    >>> softmax = WordSoftmax(10)
    >>> softmax.nll(np.zeros([2, 3, 4], "float32"), np.ones([2, 3], "int32")).shape
    TensorShape([2, 3])
    """

    def __init__(self, vocab_size, num_sampled=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_sampled = num_sampled

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(self.vocab_size, input_shape[-1]), initializer="glorot_uniform",
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="bias")

    def call(self, inputs):
        return ops.matmul(inputs, ops.transpose(self.kernel)) + self.bias

    def nll(self, inputs, targets, training=False):
        """`[...]` negative log-likelihood (nats) of each target id given `inputs` `[..., dim]`."""
        if not self.built:
            self.build(inputs.shape)
        targets = ops.cast(targets, "int64")
        if training and self.num_sampled and self.num_sampled < self.vocab_size:
            flat = ops.reshape(inputs, (-1, ops.shape(inputs)[-1]))
            losses = tf.nn.sampled_softmax_loss(self.kernel, self.bias, ops.reshape(targets, (-1, 1)), flat,
                                                self.num_sampled, self.vocab_size)
            return ops.reshape(losses, ops.shape(targets))
        return ops.sparse_categorical_crossentropy(targets, self(inputs), from_logits=True)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "num_sampled": self.num_sampled}
