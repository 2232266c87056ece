"""A metric of what the model generates, measured at the end of every epoch.

Teacher-forced loss and token accuracy say little about generated outputs
(a captioner's loss also counts which of several equally good paraphrases
it expects), so a generating task can checkpoint and stop on a metric of
decoded outputs instead, measured on the validation split.
"""

import keras


class DecodedMetric(keras.callbacks.Callback):
    """Adds `val_<name>` to each epoch's logs: `measure(model)` on the validation split.

    Keras passes one logs dict through the callbacks in order, so this one must
    come before those that read the metric (`ModelCheckpoint`, `EarlyStopping`);
    `CSVLogger` and `History` then record it too.

    Args:
        name: the metric's name, e.g. "exact_match".
        measure: `measure(model) -> float`, called with the model being trained.

    Example:

    >>> metric = DecodedMetric("exact_match", lambda model: exact_match(model, validation_images))
    >>> model.fit(batches, callbacks=[metric, keras.callbacks.EarlyStopping("val_exact_match", mode="max")])
    """

    def __init__(self, name, measure):
        super().__init__()
        self.name = name
        self.measure = measure

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[f"val_{self.name}"] = float(self.measure(self.model))
