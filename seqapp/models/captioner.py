"""Image captioning models by family name (see `seqapp.models.show_attend_tell` for the interface
they share with the translation models, decoding and export)."""

from seqapp.layers import ConvImageEncoder
from seqapp.models.show_attend_tell import ShowAttendTell
from seqapp.models.transformer_captioner import TransformerCaptioner

CAPTIONER_FAMILIES = ("lstm_attention", "transformer")


def build_captioner(vocab_size, *, family="lstm_attention", image_size=64, dim=128, units=256, num_layers=2,
                    num_encoder_layers=0, num_heads=4, ffn_dim=512, dropout=0.1, encoder_filters=16,
                    encoder_blocks=3, encoder_norm="batch", encoder_colour_channels=0, backbone=None,
                    backbone_weights=None, backbone_alpha=1.0, backbone_layer=None, attention_regularization=0.0):
    """Builds an (uncompiled) image captioner with all its weights.

    Args:
        vocab_size: caption token ids (0 is padding).
        family: "lstm_attention" (`ShowAttendTell`) or "transformer"
            (`TransformerCaptioner`).
        image_size: the square size images are resized to.
        dim: width of the image memory; also the token embedding width (the
            Transformer's model width).
        units: the LSTM's width (lstm_attention).
        num_layers, num_encoder_layers, num_heads, ffn_dim: the Transformer's
            decoder layers, self-attention layers over the feature map,
            attention heads and feed-forward size (transformer).
        dropout: dropout on embeddings (and inside the Transformer's layers,
            before the LSTM's logits).
        encoder_filters, encoder_blocks, encoder_norm, encoder_colour_channels:
            the CNN trained from scratch and its pointwise colour stream (see
            `ConvImageEncoder`'s `colour_channels`).
        backbone: None (that CNN) or a `keras.applications` backbone name of
            `seqapp.layers.conv_image_encoder.BACKBONES`, e.g. "mobilenet_v2".
        backbone_weights: a file of the whole backbone's weights (e.g. Keras'
            ImageNet `..._no_top.h5`), loaded after building; None keeps the
            random initialization.
        backbone_alpha, backbone_layer: the backbone's width multiplier and the
            layer whose output is the feature map (None: the last).
        attention_regularization: lambda of the doubly stochastic attention
            penalty (lstm_attention).

    Returns:
        A `ShowAttendTell` or `TransformerCaptioner`.

    Example:

    >>> model = build_captioner(60, family="transformer", image_size=64, dim=64, num_heads=2, ffn_dim=128)
    >>> model.feature_map_shape
    (8, 8)
    """
    if family not in CAPTIONER_FAMILIES:
        raise ValueError(f"{family!r} is not a captioner family; expected one of {CAPTIONER_FAMILIES}")
    encoder = ConvImageEncoder(dim, filters=encoder_filters, blocks=encoder_blocks, norm=encoder_norm,
                               colour_channels=encoder_colour_channels,
                               backbone=backbone, backbone_alpha=backbone_alpha, backbone_layer=backbone_layer,
                               name="image_encoder")
    if family == "lstm_attention":
        model = ShowAttendTell(vocab_size, encoder, image_size=image_size, embedding_dim=dim, units=units,
                               dropout=dropout, attention_regularization=attention_regularization)
    else:
        model = TransformerCaptioner(vocab_size, encoder, image_size=image_size, num_layers=num_layers,
                                     num_encoder_layers=num_encoder_layers, num_heads=num_heads, ffn_dim=ffn_dim,
                                     dropout=dropout, norm_first=True)
    model.build()
    if backbone_weights is not None:
        encoder.load_backbone_weights(backbone_weights)
    return model
