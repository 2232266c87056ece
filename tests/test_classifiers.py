"""Classifier models and their layers: learning, masking, receptive field, saving."""

import importlib
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from seqapp.layers import TCN
from seqapp.layers import AttentionPooling
from seqapp.layers import MaskedPooling
from seqapp.models import build_classifier
from seqapp.models import receptive_field

VOCAB = 16
FIRST, SECOND = 5, 7  # the two marker tokens of the synthetic task

# (family, causal) pairs: the TCN twice, causal and centred.
FAMILIES = [("rnn", True), ("lstm", True), ("gru", True), ("bilstm", True), ("bigru", True), ("tcn", True), ("tcn", False)]
POOLINGS = ["last", "mean", "max", "attention"]


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def tiny_config(**overrides):
    base = dict(embedding_dim=16, units=16, dropout=0.0, dilations=(1, 2, 4))
    return {**base, **overrides}


def config_id(overrides):
    return "-".join(f"{key}={value}" for key, value in overrides.items())


def features(ids):
    ids = np.asarray(ids, np.int64)
    return {"token_ids": ids, "padding_mask": ids != 0}


def order_task(n, seed, min_length=4, max_length=10):
    """Right-padded sequences holding FIRST and SECOND once each among filler tokens;
    the label is 1 when FIRST comes before SECOND. Bag-of-words models cannot solve it."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, max_length), np.int64)
    labels = np.zeros(n, np.int64)
    for row in range(n):
        length = rng.integers(min_length, max_length + 1)
        tokens = rng.integers(8, VOCAB, length)
        first, second = rng.choice(length, 2, replace=False)
        tokens[first], tokens[second] = FIRST, SECOND
        ids[row, :length] = tokens
        labels[row] = first < second
    return features(ids), labels


def padded_batches():
    """One sentence alone, and the same sentence as row 1 of a batch padded well past it."""
    rng = np.random.default_rng(1)
    sentence = rng.integers(1, VOCAB, 6)
    batch = np.zeros((3, 15), np.int64)
    batch[0, :11] = rng.integers(1, VOCAB, 11)
    batch[1, :6] = sentence
    batch[2, :3] = rng.integers(1, VOCAB, 3)
    return sentence[None], batch


# --- learning -------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        dict(family="rnn"),
        dict(family="lstm", num_layers=2, dropout=0.1, recurrent_dropout=0.1),
        dict(family="gru"),
        dict(family="bilstm"),
        dict(family="bigru", merge_mode="sum"),
        dict(family="gru", pooling="mean"),
        dict(family="gru", pooling="max"),
        dict(family="gru", pooling="attention"),
        dict(family="tcn"),
        dict(family="tcn", pooling="mean"),
        dict(family="tcn", pooling="max", normalization="none"),
        dict(family="tcn", pooling="attention"),
        dict(family="tcn", causal=False, dropout=0.1),
    ],
    ids=config_id,
)
def test_learns_an_order_dependent_task(overrides):
    x, y = order_task(256, seed=0)
    model = build_classifier(VOCAB, 2, **tiny_config(**overrides))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)  # 64 steps
    accuracy = np.mean(np.argmax(model(x, training=False).numpy(), -1) == y)
    assert accuracy >= 0.95


# --- padding invariance ---------------------------------------------------


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("family, causal", FAMILIES, ids=["rnn", "lstm", "gru", "bilstm", "bigru", "tcn", "tcn_centred"])
def test_padding_does_not_change_predictions(family, causal, pooling):
    config = tiny_config(
        family=family,
        causal=causal,
        pooling=pooling,
        num_layers=2,
        units=8,
        embedding_dim=8,
        # Causal TCNs with layer normalization, centred ones with batch normalization.
        normalization="layer" if causal else "batch",
    )
    model = build_classifier(VOCAB, 5, **config)
    alone, batch = padded_batches()
    expected = model(features(alone), training=False).numpy()[0]
    padded = model(features(batch), training=False).numpy()[1]
    np.testing.assert_allclose(padded, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
@pytest.mark.parametrize("normalization", ["layer", "batch", "none"])
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_tcn_outputs_on_real_steps_ignore_padding(causal, normalization, training):
    """In training mode too: batch normalization's statistics leave padded steps out."""
    tcn = TCN(8, kernel_size=3, dilations=(1, 2), causal=causal, normalization=normalization)
    lengths = [5, 9, 2]
    inputs = np.random.default_rng(2).normal(size=(3, 9, 4)).astype("float32")
    mask = np.arange(9) < np.array(lengths)[:, None]
    inputs *= mask[..., None]
    longer = np.concatenate([inputs, np.full((3, 7, 4), 3.0, "float32")], axis=1)  # junk under the mask
    longer_mask = np.concatenate([mask, np.zeros((3, 7), bool)], axis=1)
    short = tcn(inputs, mask=mask, training=training).numpy()
    long = tcn(longer, mask=longer_mask, training=training).numpy()
    np.testing.assert_allclose(long[:, :9] * mask[..., None], short * mask[..., None], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(long[~longer_mask], 0.0)
    if not causal:
        # Control: without the mask the centred kernels do read the junk.
        leaky = tcn(longer, training=training).numpy()[:, :9]
        assert np.abs(leaky - short)[mask].max() > 1e-3


# --- TCN receptive field --------------------------------------------------


def changed_steps(layer, inputs, step):
    """Output steps that move when input `step` is perturbed."""
    perturbed = inputs.copy()
    perturbed[:, step] += 1.0
    difference = np.abs(layer(perturbed).numpy() - layer(inputs).numpy()).max(axis=(0, 2))
    return np.flatnonzero(difference > 1e-6)


@pytest.mark.parametrize("kernel_size, dilations", [(2, (1, 2, 4)), (3, (1, 2, 4, 8)), (5, (1, 3))])
def test_tcn_receptive_field_matches_impulse_response(kernel_size, dilations):
    formula = 1 + 2 * (kernel_size - 1) * sum(dilations)
    inputs = np.random.default_rng(3).normal(size=(2, 160, 4)).astype("float32")
    step = 70

    causal = TCN(16, kernel_size=kernel_size, dilations=dilations, causal=True)
    assert causal.receptive_field == formula
    changed = changed_steps(causal, inputs, step)
    assert changed.min() == step  # nothing before the perturbed step moves
    assert changed.max() == step + formula - 1  # and nothing beyond the field
    assert len(changed) == formula

    if kernel_size % 2:  # "same" padding centres odd kernels only
        centred = TCN(16, kernel_size=kernel_size, dilations=dilations, causal=False)
        changed = changed_steps(centred, inputs, step)
        assert step - changed.min() == changed.max() - step == (formula - 1) // 2
        assert len(changed) == formula


def test_receptive_field_of_models():
    model = build_classifier(VOCAB, 2, **tiny_config(family="tcn", kernel_size=3, dilations=(1, 2, 4, 8)))
    assert receptive_field(model) == 61 == model.get_layer("tcn").receptive_field
    assert receptive_field(build_classifier(VOCAB, 2, **tiny_config(family="gru"))) is None


# --- serialization --------------------------------------------------------

ROUND_TRIP_CONFIGS = [
    dict(family="tcn", causal=False, normalization="batch", pooling="attention"),
    dict(family="bilstm", num_layers=2, pooling="last"),
    dict(family="bigru", merge_mode="ave", pooling="max"),
    dict(family="gru", pooling="mean"),
    dict(family="rnn", pooling="last"),
]


@pytest.mark.parametrize("overrides", ROUND_TRIP_CONFIGS, ids=config_id)
def test_config_round_trip(overrides):
    model = build_classifier(VOCAB, 3, **tiny_config(**overrides))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    _, batch = padded_batches()
    np.testing.assert_allclose(clone(features(batch)).numpy(), model(features(batch)).numpy(), atol=1e-6)


@pytest.mark.parametrize("overrides", ROUND_TRIP_CONFIGS, ids=config_id)
def test_keras_file_round_trip(overrides, tmp_path):
    model = build_classifier(VOCAB, 3, **tiny_config(**overrides))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    _, batch = padded_batches()
    np.testing.assert_allclose(loaded(features(batch)).numpy(), model(features(batch)).numpy(), atol=1e-6)
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]


@pytest.mark.parametrize(
    "layer",
    [
        TCN(8, kernel_size=2, dilations=(1, 4), causal=False, normalization="none", dropout=0.2),
        MaskedPooling("max"),
        AttentionPooling(units=6),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layer_config_holds_exactly_the_constructor_arguments(layer):
    config = layer.get_config()
    arguments = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    assert arguments <= set(config)
    assert set(config) - arguments <= set(keras.layers.Layer(name="base").get_config())
    assert type(layer).from_config(config).get_config() == config


# --- no cuDNN kernels -----------------------------------------------------


def traced_op_types(model):
    """Op types of the inference graph, function bodies (while loops) included."""
    spec = {
        "token_ids": tf.TensorSpec([None, None], tf.int64),
        "padding_mask": tf.TensorSpec([None, None], tf.bool),
    }
    graph = tf.function(lambda inputs: model(inputs, training=False)).get_concrete_function(spec).graph
    graph_def = graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def test_no_cudnn_ops_even_when_traced_with_a_gpu(monkeypatch, tmp_path):
    # Keras chooses the cuDNN kernel at trace time when it sees a GPU; pretend to have one.
    tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")
    monkeypatch.setattr(tf_rnn, "_is_gpu_available", lambda: True)

    # Control: a stock LSTM does get the GPU-only op, so the check below can fail.
    token_ids = keras.Input(shape=(None,), dtype="int64", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="bool", name="padding_mask")
    stock = keras.layers.LSTM(4)(keras.layers.Embedding(VOCAB, 4)(token_ids), mask=padding_mask)
    control = keras.Model({"token_ids": token_ids, "padding_mask": padding_mask}, stock)
    assert "CudnnRNNV3" in traced_op_types(control)

    for family in ["lstm", "gru", "bilstm", "bigru"]:
        model = build_classifier(VOCAB, 2, **tiny_config(family=family))
        model.save(tmp_path / f"{family}.keras")
        loaded = keras.models.load_model(tmp_path / f"{family}.keras")
        for candidate in (model, loaded):
            assert not {op for op in traced_op_types(candidate) if op.startswith("Cudnn")}, family


# --- pooling against numpy ------------------------------------------------


@pytest.fixture
def pooling_inputs():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    lengths = np.array([6, 3, 1, 0])
    mask = np.arange(6) < lengths[:, None]
    return x, mask, lengths


def test_masked_pooling_matches_numpy(pooling_inputs):
    x, mask, lengths = pooling_inputs
    junk = np.where(mask[..., None], x, 1e6).astype("float32")  # padded values must not matter
    expected = {
        "last": [x[row, length - 1] if length else np.zeros(3) for row, length in enumerate(lengths)],
        "mean": [x[row, :length].mean(0) if length else np.zeros(3) for row, length in enumerate(lengths)],
        "max": [x[row, :length].max(0) if length else np.zeros(3) for row, length in enumerate(lengths)],
    }
    for mode, values in expected.items():
        np.testing.assert_allclose(MaskedPooling(mode)(junk, mask=mask).numpy(), np.array(values), atol=1e-6, err_msg=mode)
    # Without a mask every step is real.
    np.testing.assert_allclose(MaskedPooling("last")(x).numpy(), x[:, -1])
    np.testing.assert_allclose(MaskedPooling("mean")(x).numpy(), x.mean(1), atol=1e-6)
    np.testing.assert_allclose(MaskedPooling("max")(x).numpy(), x.max(1))


def test_attention_pooling_matches_numpy(pooling_inputs):
    x, mask, lengths = pooling_inputs
    layer = AttentionPooling(units=5)
    junk = np.where(mask[..., None], x, 1e6).astype("float32")
    pooled = layer(junk, mask=mask).numpy()
    kernel, bias, score_vector = (w.numpy() for w in layer.weights)
    for row, length in enumerate(lengths):
        if not length:
            np.testing.assert_array_equal(pooled[row], 0.0)
            continue
        real = x[row, :length]
        scores = np.tanh(real @ kernel + bias) @ score_vector
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        np.testing.assert_allclose(pooled[row], weights @ real, atol=1e-5)


@pytest.mark.parametrize("layer", [MaskedPooling("last"), MaskedPooling("mean"), MaskedPooling("max"), AttentionPooling()])
def test_pooling_gradients_are_finite_and_skip_padding(pooling_inputs, layer):
    x, mask, _ = pooling_inputs
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(layer(x, mask=mask))
    gradient = tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(gradient))
    np.testing.assert_array_equal(gradient[~mask], 0.0)
