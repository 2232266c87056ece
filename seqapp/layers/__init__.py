"""Keras layers of seqapp's models, registered for saving under the package "seqapp"."""

from seqapp.layers.attention_pooling import AttentionPooling
from seqapp.layers.bilm_encoder import BiLMEncoder
from seqapp.layers.cached_multi_head_attention import CachedMultiHeadAttention
from seqapp.layers.character_cnn import CharacterCNN
from seqapp.layers.conv_image_encoder import ConvImageEncoder
from seqapp.layers.highway import Highway
from seqapp.layers.masked_pooling import MaskedPooling
from seqapp.layers.portable_gru import PortableGRU
from seqapp.layers.portable_lstm import PortableLSTM
from seqapp.layers.projected_lstm_cell import ProjectedLSTMCell
from seqapp.layers.scalar_mix import ScalarMix
from seqapp.layers.sinusoidal_position_encoding import SinusoidalPositionEncoding
from seqapp.layers.soft_attention_lstm import SoftAttentionLSTM
from seqapp.layers.tcn import TCN
from seqapp.layers.transformer_decoder import TransformerDecoder
from seqapp.layers.transformer_encoder import TransformerEncoder
from seqapp.layers.word_softmax import WordSoftmax

__all__ = [
    "AttentionPooling",
    "BiLMEncoder",
    "CachedMultiHeadAttention",
    "CharacterCNN",
    "ConvImageEncoder",
    "Highway",
    "MaskedPooling",
    "PortableGRU",
    "PortableLSTM",
    "ProjectedLSTMCell",
    "ScalarMix",
    "SinusoidalPositionEncoding",
    "SoftAttentionLSTM",
    "TCN",
    "TransformerDecoder",
    "TransformerEncoder",
    "WordSoftmax",
]
