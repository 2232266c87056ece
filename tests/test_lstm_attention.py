"""The LSTM encoder-decoder with attention (`seqapp.models.lstm_attention`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from seqapp.decoding import greedy_search
from seqapp.models.lstm_attention import LSTMAttention

SOURCE_VOCAB, TARGET_VOCAB, START, END = 50, 40, 1, 2

# Three sources of different lengths, right-padded; targets start with [START].
SOURCE = np.array([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 0, 0, 0, 0], [15, 16, 17, 18, 19, 0, 0]], "int32")
TARGET = np.array([[START, 3, 4, 5, 6, 7], [START, 8, 9, 10, 0, 0], [START, 11, 12, 13, 14, 15]], "int32")


def features(source=SOURCE, target=TARGET):
    return {"encoder_token_ids": tf.constant(source), "encoder_padding_mask": tf.constant(source != 0),
            "decoder_token_ids": tf.constant(target), "decoder_padding_mask": tf.constant(target != 0)}


def make_model(attention="luong", num_layers=2, **kwargs):
    keras.utils.set_random_seed(0)
    model = LSTMAttention(SOURCE_VOCAB, TARGET_VOCAB, embedding_dim=12, units=8, num_layers=num_layers,
                          dropout=0.3, attention=attention, **kwargs)
    model(features())
    # Larger weights than the initializers give, so attention is far from uniform
    # and every check below sees real differences between positions.
    for weight in model.weights:
        weight.assign(weight.numpy() * 4.0)
    return model


def step_by_step(model, cached):
    memory, memory_mask = model.encode(tf.constant(SOURCE), tf.constant(SOURCE != 0))
    state = model.decoding_state(memory, memory_mask, cached=cached)
    logits = []
    for step in range(TARGET.shape[1]):
        step_logits, state = model.decode_step(tf.constant(TARGET[:, step]), tf.constant(step, tf.int32), state)
        assert all(value.shape[0] == SOURCE.shape[0] for value in state.values())
        logits.append(step_logits)
    return np.stack(logits, axis=1), state


@pytest.mark.parametrize("attention", ["luong", "bahdanau"])
@pytest.mark.parametrize("cached", [True, False])
def test_decode_step_matches_teacher_forcing(attention, cached):
    model = make_model(attention)
    expected = model(features()).numpy()
    logits, state = step_by_step(model, cached)
    real = TARGET != 0
    np.testing.assert_allclose(logits[real], expected[real], atol=1e-5)
    if cached:
        assert {"memory", "memory_mask", "layer0_h", "layer0_c", "layer1_h", "layer1_c"} <= set(state)
    else:
        assert set(state) == {"memory", "memory_mask", "prefix"}
        np.testing.assert_array_equal(state["prefix"].numpy(), TARGET)


@pytest.mark.parametrize("cached", [True, False])
def test_greedy_search_in_a_graph_matches_eager_steps(cached):
    """`decode_step` inside `tf.function` + `tf.while_loop` whose state tensors change shape."""
    model = make_model("bahdanau")

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def translate(source):
        memory, memory_mask = model.encode(source, source != 0)
        state = model.decoding_state(memory, memory_mask, cached=cached)
        start = tf.fill([tf.shape(source)[0]], START)
        return greedy_search(model.decode_step, start, state, end_id=END,
                             max_lengths=tf.fill([tf.shape(source)[0]], 6)).ids

    ids = translate(tf.constant(SOURCE)).numpy()
    # The same greedy decode, eagerly, from teacher-forced logits of the prefix so far.
    prefix = np.full((len(SOURCE), 1), START, "int32")
    for _ in range(6):
        logits = model(features(target=prefix)).numpy()[:, -1]
        prefix = np.concatenate([prefix, logits.argmax(-1)[:, None].astype("int32")], axis=1)
    for row, expected in zip(ids, prefix[:, 1:]):
        expected = list(expected[:list(expected).index(END)] if END in expected else expected)
        assert list(row[:len(expected)]) == expected and not row[len(expected):].any()


def test_causal():
    model = make_model()
    target = np.array([[START, 3, 4, 5, 6, 7]] * 3, "int32")
    logits = model(features(target=target)).numpy()
    for t in range(target.shape[1] - 1):
        changed = target.copy()
        changed[:, t + 1:] = (changed[:, t + 1:] + 11) % (TARGET_VOCAB - 1) + 1
        changed_logits = model(features(target=changed)).numpy()
        np.testing.assert_allclose(changed_logits[:, :t + 1], logits[:, :t + 1], atol=1e-6)
        assert np.abs(changed_logits[:, t + 1:] - logits[:, t + 1:]).max() > 1e-3


@pytest.mark.parametrize("attention", ["luong", "bahdanau"])
def test_source_padding_changes_nothing(attention):
    model = make_model(attention)
    padded = np.pad(SOURCE, [(0, 0), (0, 4)])
    np.testing.assert_allclose(model(features(source=padded)).numpy(), model(features()).numpy(), atol=1e-5)
    weights = model.cross_attention(features(source=padded)).numpy()
    np.testing.assert_allclose(weights[:, :, :SOURCE.shape[1]], model.cross_attention(features()).numpy(),
                               atol=1e-6)
    # ... while a real token in place of padding does change the logits of that row.
    changed = SOURCE.copy()
    changed[1, 3] = 20
    assert np.abs(model(features(source=changed)).numpy()[1] - model(features()).numpy()[1]).max() > 1e-3


@pytest.mark.parametrize("attention", ["luong", "bahdanau"])
def test_attention_weights(attention):
    model = make_model(attention)
    weights = model.cross_attention(features()).numpy()
    assert weights.shape == (len(SOURCE), TARGET.shape[1], SOURCE.shape[1])
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(weights[np.broadcast_to((SOURCE == 0)[:, None], weights.shape)], 0.0)
    assert (weights[np.broadcast_to((SOURCE != 0)[:, None], weights.shape)] > 0).all()
    assert weights[0].std(axis=-1).max() > 0.01  # not uniform: the scores depend on the source


def test_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="attention"):
        LSTMAttention(10, 10, attention="dot")


@pytest.mark.parametrize("attention", ["luong", "bahdanau"])
def test_save_and_load(tmp_path, attention):
    model = make_model(attention)
    expected = model(features()).numpy()

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, LSTMAttention) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(features()).numpy(), expected, atol=1e-6)

    model.save_weights(tmp_path / "model.weights.h5")
    fresh = LSTMAttention.from_config(model.get_config())
    fresh.build()
    assert len(fresh.weights) == len(model.weights)
    fresh.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(fresh(features()).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(step_by_step(fresh, cached=True)[0][TARGET != 0], expected[TARGET != 0], atol=1e-5)


def test_learns_to_reverse():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    count, longest = 2048, 6
    lengths = rng.integers(2, longest + 1, size=count)
    source = np.zeros((count, longest), "int32")
    decoder_input = np.zeros((count, longest + 1), "int32")
    labels = np.zeros((count, longest + 1), "int32")
    for row, length in enumerate(lengths):
        tokens = rng.integers(3, 13, size=length)
        source[row, :length] = tokens
        decoder_input[row, :length + 1] = [START, *tokens[::-1]]
        labels[row, :length + 1] = [*tokens[::-1], END]
    inputs = {"encoder_token_ids": source, "encoder_padding_mask": source != 0,
              "decoder_token_ids": decoder_input, "decoder_padding_mask": decoder_input != 0}

    model = LSTMAttention(13, 13, embedding_dim=16, units=32, dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    weights = (decoder_input != 0).astype("float32")
    initial = model.evaluate(inputs, labels, sample_weight=weights, verbose=0)
    history = model.fit(inputs, labels, sample_weight=weights, batch_size=64, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert initial > 1.0
    assert losses[-1] < 0.05, losses


def test_graph_has_no_cudnn_or_xla_op():
    model = make_model()
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.LSTM):
            assert layer.use_cudnn is False, layer.name
    memory, memory_mask = model.encode(tf.constant(SOURCE), tf.constant(SOURCE != 0))
    state = model.decoding_state(memory, memory_mask, cached=True)
    state_spec = {key: tf.TensorSpec([None] * value.shape.rank, value.dtype) for key, value in state.items()}
    step = tf.function(model.decode_step).get_concrete_function(
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32), state_spec)
    graph = step.graph.as_graph_def()
    op_types = {node.op for node in graph.node}
    op_types |= {node.op for function in graph.library.function for node in function.node_def}
    assert "MatMul" in op_types
    assert not [op for op in op_types if op.startswith(("Cudnn", "Xla"))], sorted(op_types)
