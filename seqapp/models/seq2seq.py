"""Encoder-decoder models by family name (see `seqapp.models.transformer` for the interface
they share with decoding and export)."""

from seqapp.models.lstm_attention import LSTMAttention
from seqapp.models.transformer import Transformer

FAMILIES = ("transformer", "lstm_attention")


def build_seq2seq(source_vocab_size, target_vocab_size, *, family="transformer", embedding_dim=128, units=128,
                  num_layers=1, dropout=0.3, num_heads=4, ffn_dim=1024, norm_first=True, share_embeddings=False,
                  attention="luong"):
    """Builds an (uncompiled) translation model with all its weights.

    Args:
        source_vocab_size, target_vocab_size: token ids of each side (0 is padding).
        family: "transformer" or "lstm_attention".
        embedding_dim: token embedding size (the Transformer's model width).
        units: the LSTM's units per direction (lstm_attention).
        num_layers: encoder layers and decoder layers.
        dropout: dropout on embeddings and inside every layer.
        num_heads, ffn_dim, norm_first, share_embeddings: the Transformer's
            attention heads, feed-forward size, pre- or post-layer-norm, and
            one embedding for source, target and output projection.
        attention: the LSTM decoder's attention, "luong" or "bahdanau".

    Returns:
        A `Transformer` or `LSTMAttention`.

    Example:

    >>> model = build_seq2seq(8000, 8000, family="transformer", embedding_dim=64, num_heads=2)
    """
    if family == "transformer":
        model = Transformer(source_vocab_size, target_vocab_size, num_layers=num_layers, dim=embedding_dim,
                            num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout, norm_first=norm_first,
                            share_embeddings=share_embeddings)
    elif family == "lstm_attention":
        model = LSTMAttention(source_vocab_size, target_vocab_size, embedding_dim=embedding_dim, units=units,
                              num_layers=num_layers, dropout=dropout, attention=attention)
    else:
        raise ValueError(f"{family!r} is not an encoder-decoder family; expected one of {FAMILIES}")
    model.build()
    return model
