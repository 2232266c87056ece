"""Keras models of seqapp's tasks; the builders take plain keyword arguments (no config)."""

from seqapp.models.classifier import build_classifier
from seqapp.models.classifier import receptive_field
from seqapp.models.seq2seq import build_seq2seq

__all__ = ["build_classifier", "build_seq2seq", "receptive_field"]
