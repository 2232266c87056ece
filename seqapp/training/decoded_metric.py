"""A metric of what the model generates, measured at the end of every epoch.

Teacher-forced loss and token accuracy say little about generated outputs
(a captioner's loss also counts which of several equally good paraphrases
it expects), so a generating task can checkpoint and stop on a metric of
decoded outputs instead, measured on the validation split.
"""

import keras


class DecodedMetric(keras.callbacks.Callback):
    """Adds `val_<name>` to each epoch's logs for every metric `measure(model)` gives on the
    validation split (one decoding serves several metrics).

    Keras passes one logs dict through the callbacks in order, so this one must
    come before those that read the metric (`ModelCheckpoint`, `EarlyStopping`);
    `CSVLogger` and `History` then record it too.

    Args:
        measure: `measure(model) -> {name: float}` (e.g. `{"exact_match": 0.8}`), called with
            the model being trained.

    Example:

    >>> metric = DecodedMetric(lambda model: {"exact_match": exact_match(model, validation_images)})
    >>> model.fit(batches, callbacks=[metric, keras.callbacks.EarlyStopping("val_exact_match", mode="max")])
    """

    def __init__(self, measure):
        super().__init__()
        self.measure = measure

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in self.measure(self.model).items()})
