"""Precise batch norm (`seqapp.training.precise_batch_norm`): the re-estimated statistics are the
mean of the batch statistics under the final weights, nothing else changes, and `fit` runs it once
per epoch, after the last step."""

import keras
import numpy as np
import tensorflow as tf

from seqapp.training.precise_batch_norm import PreciseBatchNorm
from seqapp.training.precise_batch_norm import batch_norm_layers

BATCHES, BATCH, WIDTH = 4, 8, 3


def make_data():
    rng = np.random.default_rng(0)
    # Far from BatchNormalization's initial statistics (mean 0, variance 1).
    x = rng.normal(5.0, 3.0, (BATCHES * BATCH, WIDTH)).astype("float32")
    y = rng.normal(size=(BATCHES * BATCH, 1)).astype("float32")
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)


def make_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((WIDTH,))
    hidden = keras.layers.Dense(WIDTH, name="dense")(inputs)
    normed = keras.layers.BatchNormalization(name="norm")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(normed))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def expected_statistics(model, x):
    """Mean over the batches of each batch's mean and (biased) variance of the norm's input."""
    hidden = model.get_layer("dense")(x).numpy().reshape(BATCHES, BATCH, WIDTH)
    return hidden.mean(axis=1).mean(axis=0), hidden.var(axis=1).mean(axis=0)


def test_finds_nested_batch_norms_and_none_elsewhere():
    inner = keras.Sequential([keras.layers.Dense(2), keras.layers.BatchNormalization()])
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.BatchNormalization()])
    assert len(batch_norm_layers(outer)) == 2
    assert batch_norm_layers(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])) == []


def test_recalibrate_sets_the_mean_of_batch_statistics_and_changes_nothing_else():
    x, _, batches = make_data()
    model = make_model()
    norm = model.get_layer("norm")
    trainable = [w.numpy().copy() for w in model.trainable_weights]
    callback = PreciseBatchNorm(batches, steps=BATCHES)
    callback.set_model(model)

    callback.recalibrate()

    mean, variance = expected_statistics(model, x)
    np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), variance, rtol=1e-4)
    for before, after in zip(trainable, model.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert norm.momentum == 0.99  # the layer's own momentum is back for training


def test_inference_outputs_match_training_mode_after_recalibration():
    x, _, batches = make_data()
    model = make_model()
    before = np.abs(model(x, training=False) - model(x, training=True)).mean()
    callback = PreciseBatchNorm(batches, steps=BATCHES)
    callback.set_model(model)
    callback.recalibrate()
    after = np.abs(model(x, training=False) - model(x, training=True)).mean()
    assert after < 0.1 * before


def test_fit_recalibrates_once_per_epoch_after_the_last_step():
    x, y, batches = make_data()
    model = make_model()

    class Counting(PreciseBatchNorm):
        calls = []

        def recalibrate(self):
            self.calls.append(int(self.model.optimizer.iterations.numpy()))
            super().recalibrate()

    model.fit(batches, epochs=2, steps_per_epoch=BATCHES, verbose=0, shuffle=False,
              callbacks=[Counting(batches, steps=BATCHES)])

    assert Counting.calls == [BATCHES, 2 * BATCHES]
    mean, variance = expected_statistics(model, x)  # the final weights' statistics, not a moving average
    np.testing.assert_allclose(model.get_layer("norm").moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("norm").moving_variance.numpy(), variance, rtol=1e-4)
