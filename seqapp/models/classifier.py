"""Sequence classifiers of token ids.

The model takes KerasHub's named inputs `token_ids` (int64 `[batch, time]`)
and `padding_mask` (bool `[batch, time]`, True on real tokens) and returns
class probabilities:

    Embedding -> Dropout -> encoder -> pooling -> Dropout -> Dense(softmax)

The mask comes from the `padding_mask` input rather than `mask_zero`, so a
served model receives it as data like any other input. Every layer after the
embedding honours it: predictions do not depend on how much padding follows a
sequence. LSTM and GRU layers are `PortableLSTM`/`PortableGRU` (never cuDNN).
"""

import keras
from keras import ops

from seqapp.layers import TCN
from seqapp.layers import AttentionPooling
from seqapp.layers import BiLMEncoder
from seqapp.layers import CharacterCNN
from seqapp.layers import MaskedPooling
from seqapp.layers import PortableGRU
from seqapp.layers import PortableLSTM
from seqapp.layers import ScalarMix

FAMILIES = ("rnn", "lstm", "gru", "bilstm", "bigru", "tcn")
_RECURRENT_LAYERS = {
    "rnn": keras.layers.SimpleRNN,
    "lstm": PortableLSTM,
    "gru": PortableGRU,
    "bilstm": PortableLSTM,
    "bigru": PortableGRU,
}


def build_classifier(vocab_size, num_classes, *, family="bilstm", embedding_dim=128, units=128, num_layers=1,
                     merge_mode="concat", dropout=0.3, recurrent_dropout=0.0, pooling="last", kernel_size=3,
                     dilations=(1, 2, 4, 8), causal=True, normalization="layer", bilm=None, name="classifier"):
    """Builds an (uncompiled) sequence classifier.

    Args:
        vocab_size: number of token ids (id 0 is padding).
        num_classes: number of labels.
        family: "rnn" (SimpleRNN), "lstm", "gru" (stacked), "bilstm", "bigru"
            (bidirectional) or "tcn" (temporal convolutional network).
        embedding_dim: token embedding size.
        units: recurrent units per direction, or TCN filters.
        num_layers: stacked recurrent layers (the TCN has one block per dilation).
        merge_mode: how bidirectional outputs combine.
        dropout: dropout on embeddings, between layers and before the output.
        recurrent_dropout: dropout on recurrent connections.
        pooling: "last" (final state), "mean"/"max" over real tokens, or "attention".
        kernel_size, dilations, causal, normalization: the TCN's residual blocks.
        bilm: None, or an ELMo-style biLM whose layers feed the encoder: a dict of
            `BiLanguageModel`'s encoder arguments (`filters`, `char_embedding_dim`,
            `highway_layers`, `projection_dim`, `units`, `num_layers`, `cell_clip`,
            `projection_clip`), `max_chars`, `mix` ("concat": each token's
            embedding followed by its word's `ScalarMix` of the biLM's layers;
            "replace": the mix alone), `layer_norm` (of each layer, in the mix) and
            `standardize` (each layer's units through a `Normalization` layer,
            `bilm_standardize_<j>`, to be adapted to the training words: see
            `warm_start.PretrainedBiLM`).
            The model then also takes `chars` (int32 `[batch, words, max_chars]`)
            and `word_index` (int32 `[batch, time]`, each token's word).
        name: the model's name.

    Returns:
        A functional `keras.Model` taking `{"token_ids", "padding_mask"}` (and
        `chars`, `word_index` with a biLM) and returning float32 probabilities of
        shape `[batch, num_classes]`.

    Example:

    >>> model = build_classifier(8000, 2, family="gru", units=32)
    >>> model.output_shape
    (None, 2)
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown classifier family {family!r}; expected one of {FAMILIES}")
    token_ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(token_ids)
    if bilm is not None:
        inputs["chars"] = keras.Input(shape=(None, bilm["max_chars"]), dtype="int32", name="chars")
        inputs["word_index"] = keras.Input(shape=(None,), dtype="int32", name="word_index")
        x = _with_bilm(x, inputs["chars"], inputs["word_index"], **bilm)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    if family == "tcn":
        x = TCN(units, kernel_size=kernel_size, dilations=dilations, causal=causal, normalization=normalization,
                dropout=dropout, name="tcn")(x, mask=padding_mask)
    else:
        x = _recurrent_stack(x, padding_mask, family=family, units=units, num_layers=num_layers,
                             merge_mode=merge_mode, dropout=dropout, recurrent_dropout=recurrent_dropout,
                             last_state=pooling == "last")
    if pooling == "attention":
        x = AttentionPooling(units, name="attention_pooling")(x, mask=padding_mask)
    elif pooling != "last" or family == "tcn":
        x = MaskedPooling(pooling, name=f"{pooling}_pooling")(x, mask=padding_mask)
    # else: the recurrent stack already returned its final state.
    x = keras.layers.Dropout(dropout, name="pooled_dropout")(x)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, probabilities, name=name)


def _with_bilm(embedded, chars, word_index, *, max_chars, filters, char_embedding_dim, highway_layers,
               projection_dim, units, num_layers, cell_clip, projection_clip, mix, layer_norm, standardize):
    """Token embeddings with (or replaced by) each token's word's mix of the biLM's layers."""
    vectors = CharacterCNN(filters, char_embedding_dim, highway_layers, projection_dim,
                           name="bilm_token_encoder")(chars)
    layers = BiLMEncoder(units, projection_dim, num_layers=num_layers, cell_clip=cell_clip,
                         projection_clip=projection_clip, dropout=0.0, name="bilm_encoder")(vectors)
    if standardize:
        # A biLM's units sit far from zero with spreads from 0 to ~14 (units held at the projection clip,
        # a wide token layer): fed as they are, they saturate the encoder's gates and it barely learns.
        layers = [keras.layers.Normalization(axis=-1, name=f"bilm_standardize_{index}")(layer)
                  for index, layer in enumerate(layers)]
    mixed = ScalarMix(num_layers + 1, layer_norm=layer_norm, name="bilm_mix")(layers)  # the word mask propagates
    per_token = ops.take_along_axis(mixed, ops.expand_dims(word_index, -1), axis=1)
    return per_token if mix == "replace" else ops.concatenate([embedded, per_token], axis=-1)


def _recurrent_stack(x, padding_mask, *, family, units, num_layers, merge_mode, dropout, recurrent_dropout,
                     last_state):
    """`num_layers` recurrent layers with dropout between them.

    The last layer returns its final state when `last_state` (the mask makes
    it the state after the last real token), else all steps.
    """
    layer_class = _RECURRENT_LAYERS[family]
    for index in range(num_layers):
        last = index == num_layers - 1
        layer = layer_class(
            units,
            return_sequences=not (last and last_state),
            recurrent_dropout=recurrent_dropout,
            name=f"{family}_{index}",
        )
        if family.startswith("bi"):
            layer = keras.layers.Bidirectional(layer, merge_mode=merge_mode, name=f"bidirectional_{index}")
        x = layer(x, mask=padding_mask)
        if not last:
            x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
    return x


def receptive_field(model):
    """The receptive field of a classifier's TCN encoder (see `TCN.receptive_field`).

    Returns None for recurrent encoders, whose outputs may depend on every
    earlier step (and, bidirectional, every later one).
    """
    for layer in model.layers:
        if isinstance(layer, TCN):
            return layer.receptive_field
    return None
