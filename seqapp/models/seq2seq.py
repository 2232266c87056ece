"""Encoder-decoder models built from a `ModelConfig` (see `seqapp.models.transformer`
for the interface they share with decoding and export)."""

from seqapp.config import ModelConfig
from seqapp.models.lstm_attention import LSTMAttention
from seqapp.models.transformer import Transformer


def build_seq2seq(config: ModelConfig, source_vocab_size: int, target_vocab_size: int):
    """Builds an (uncompiled) translation model with all its weights.

    Args:
        config: the model section of a translation definition.
        source_vocab_size, target_vocab_size: token ids of each side (0 is padding).

    Returns:
        A `Transformer` or `LSTMAttention`.

    Example:

    >>> model = build_seq2seq(ModelConfig(family="transformer", embedding_dim=64, num_heads=2), 8000, 8000)
    """
    if config.family == "transformer":
        model = Transformer(source_vocab_size, target_vocab_size, num_layers=config.num_layers,
                            dim=config.embedding_dim, num_heads=config.num_heads, ffn_dim=config.ffn_dim,
                            dropout=config.dropout, norm_first=config.norm_first,
                            share_embeddings=config.share_embeddings)
    elif config.family == "lstm_attention":
        model = LSTMAttention(source_vocab_size, target_vocab_size, embedding_dim=config.embedding_dim,
                              units=config.units, num_layers=config.num_layers, dropout=config.dropout,
                              attention=config.attention)
    else:
        raise ValueError(f"{config.family!r} is not an encoder-decoder family")
    model.build()
    return model
