"""An ELMo-style bidirectional language model over character-encoded words (Peters et al. 2018)."""

import keras
from keras import ops

from seqapp.layers import BiLMEncoder
from seqapp.layers import CharacterCNN
from seqapp.layers import WordSoftmax


@keras.saving.register_keras_serializable(package="seqapp")
class BiLanguageModel(keras.Model):
    """A character CNN token encoder, a forward and a backward LSTM stack, and one softmax for both.

    The forward stack predicts each word from the words before it, the
    backward stack from the words after it; both read the same token vectors
    and score with the same `WordSoftmax`. Its loss is the mean of the two
    directions' negative log-likelihood per word (sampled softmax in training
    when `num_sampled` is set), so `exp(loss)` is their mean perplexity's
    geometric mean. `layers_of(chars)` gives ELMo's layers for downstream models.

    Args:
        vocab_size: words of the output vocabulary.
        filters: `(width, count)` convolutions of the character CNN.
        char_embedding_dim: character embedding size.
        highway_layers: highway layers after the convolutions.
        projection_dim: width of the token vectors and of each LSTM's projection.
        units: LSTM memory cells per layer.
        num_layers: LSTM layers per direction.
        cell_clip, projection_clip: LSTM clipping (None: off).
        dropout: dropout on each LSTM's input and on the softmax's input.
        num_sampled: sampled softmax's sample in training; None: the full softmax.

    Call arguments:
        inputs: `{"chars": int [batch, time, max_chars]}` (`CharacterTokenizer` ids;
            all-zero words are padding); training also reads `forward_targets` and
            `backward_targets`, int `[batch, time]` word ids.

    Returns:
        `{"forward", "backward"}`: each direction's top layer, `[batch, time, projection_dim]`.

    Example:

    >>> model = BiLanguageModel(100, filters=((1, 4), (2, 4)), projection_dim=8, units=16)
    >>> model({"chars": np.ones([2, 5, 10], "int32")})["forward"].shape
    TensorShape([2, 5, 8])
    """

    def __init__(self, vocab_size, *, filters, char_embedding_dim=16, highway_layers=1, projection_dim=128,
                 units=512, num_layers=2, cell_clip=3.0, projection_clip=3.0, dropout=0.1, num_sampled=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(vocab_size=vocab_size, filters=tuple(tuple(f) for f in filters),
                             char_embedding_dim=char_embedding_dim, highway_layers=highway_layers,
                             projection_dim=projection_dim, units=units, num_layers=num_layers, cell_clip=cell_clip,
                             projection_clip=projection_clip, dropout=dropout, num_sampled=num_sampled)
        self.token_encoder = CharacterCNN(filters=self.settings["filters"], char_embedding_dim=char_embedding_dim,
                                          highway_layers=highway_layers, projection_dim=projection_dim,
                                          name="token_encoder")
        self.encoder = BiLMEncoder(units, projection_dim, num_layers=num_layers, cell_clip=cell_clip,
                                   projection_clip=projection_clip, dropout=dropout, name="bilm_encoder")
        self.output_dropout = keras.layers.Dropout(dropout)
        self.softmax = WordSoftmax(vocab_size, num_sampled, name="softmax")

    def build(self, input_shape):
        chars = input_shape["chars"] if isinstance(input_shape, dict) else input_shape
        self.token_encoder.build(chars)
        self.encoder.build((*chars[:2], self.settings["projection_dim"]))
        self.softmax.build((None, self.settings["projection_dim"]))

    def tokens(self, chars):
        """Token vectors `[batch, time, projection_dim]` and the word mask of character ids."""
        return self.token_encoder(chars), ops.any(ops.not_equal(chars, 0), axis=-1)

    def layers_of(self, chars, training=None):
        """ELMo's layers of character ids (see `BiLMEncoder`) and the word mask."""
        vectors, mask = self.tokens(chars)
        return self.encoder(vectors, mask=mask, training=training), mask

    def call(self, inputs, training=None):
        layers, _ = self.layers_of(inputs["chars"], training=training)
        top = self.output_dropout(layers[-1], training=training)
        width = self.settings["projection_dim"]
        return {"forward": top[..., :width], "backward": top[..., width:]}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        mask = ops.cast(ops.any(ops.not_equal(x["chars"], 0), axis=-1), "float32")
        nll = (self.softmax.nll(y_pred["forward"], x["forward_targets"], training=training)
               + self.softmax.nll(y_pred["backward"], x["backward_targets"], training=training)) / 2
        return ops.sum(nll * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {**super().get_config(), **self.settings}
