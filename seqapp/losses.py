"""Losses and metrics over padded target sequences (id 0 is padding)."""

import keras
from keras import ops

from seqapp.schedules import WarmupInverseSqrt


@keras.saving.register_keras_serializable(package="seqapp")
def masked_accuracy(y_true, logits):
    """Token accuracy over the real (non-padding) target tokens of a batch."""
    mask = ops.cast(ops.not_equal(y_true, 0), "float32")
    hits = ops.cast(ops.equal(ops.cast(y_true, "int32"), ops.cast(ops.argmax(logits, axis=-1), "int32")), "float32")
    return ops.sum(hits * mask) / ops.maximum(ops.sum(mask), 1.0)


@keras.saving.register_keras_serializable(package="seqapp")
class MaskedSequenceLoss(keras.losses.Loss):
    """Cross-entropy per real target token, with optional label smoothing.

    Padding (id 0) contributes nothing: the loss is the mean over real tokens,
    so batches padded to different widths weigh their tokens equally. With
    smoothing epsilon the target distribution is (1 - epsilon) on the true
    token plus epsilon spread uniformly over the vocabulary.

    Args:
        label_smoothing: epsilon in [0, 1).
        name: the loss' name.

    Example:

    >>> loss = MaskedSequenceLoss(label_smoothing=0.1)
    >>> loss(y_true=[[5, 0]], y_pred=logits)   # logits (1, 2, vocab); column 1 ignored
    """

    def __init__(self, label_smoothing=0.0, name="masked_sequence_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(y_pred, axis=-1)
        vocab = ops.shape(y_pred)[-1]
        nll = -ops.sum(log_probs * ops.one_hot(ops.cast(y_true, "int32"), vocab), axis=-1)
        if self.label_smoothing:
            nll = (1.0 - self.label_smoothing) * nll - self.label_smoothing * ops.mean(log_probs, axis=-1)
        mask = ops.cast(ops.not_equal(y_true, 0), y_pred.dtype)
        # One value per batch: the reduction over the batch then leaves it unchanged.
        return ops.sum(nll * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def compile_sequence_model(model, train):
    """Compiles a teacher-forced sequence model (translation, captioning) with what they share:
    `MaskedSequenceLoss` with the definition's label smoothing, `masked_accuracy`, and Adam
    (beta_2 0.98, as for the Transformer) on the warmup + inverse-square-root schedule when
    `train.warmup_steps` is set.

    Args:
        model: the uncompiled model.
        train: a `config.SequenceTrainConfig` (learning rate, warmup, clipping, label smoothing).
    """
    rate = WarmupInverseSqrt(train.learning_rate, train.warmup_steps) if train.warmup_steps else train.learning_rate
    model.compile(optimizer=keras.optimizers.Adam(rate, beta_2=0.98, epsilon=1e-9, clipnorm=train.clipnorm),
                  loss=MaskedSequenceLoss(train.label_smoothing), metrics=[masked_accuracy])
