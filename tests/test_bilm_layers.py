"""The ELMo-style biLM's layers: character ids, CharacterCNN, Highway and ScalarMix."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from seqapp.exporters import graph_ops
from seqapp.layers import CharacterCNN
from seqapp.layers import Highway
from seqapp.layers import ScalarMix
from seqapp.tokenizers.characters import BOW_ID
from seqapp.tokenizers.characters import EOW_ID
from seqapp.tokenizers.characters import PAD_ID
from seqapp.tokenizers.characters import CharacterTokenizer

MAX_CHARS = 8
FILTERS = ((1, 4), (2, 4), (3, 8))
PROJECTION = 8


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def char_ids(texts, max_chars=MAX_CHARS):
    return CharacterTokenizer(max_chars=max_chars).tokenize(texts).numpy()


def tiny_cnn(**overrides):
    return CharacterCNN(**{"filters": FILTERS, "char_embedding_dim": 4, "projection_dim": PROJECTION, **overrides})


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# --- character ids ----------------------------------------------------------


def test_known_word_ids():
    np.testing.assert_array_equal(char_ids(["hi"])[0, 0], [BOW_ID, 105, 106, EOW_ID] + [PAD_ID] * 4)
    assert (BOW_ID, EOW_ID, PAD_ID) == (257, 258, 259)


def test_long_word_is_cut_between_its_markers():
    ids = char_ids(["abcdefghijkl"])[0, 0]
    np.testing.assert_array_equal(ids, [BOW_ID] + [ord(c) + 1 for c in "abcdef"] + [EOW_ID])


def test_shorter_sentences_get_all_zero_words():
    ids = char_ids(["the cat sat", "a"])
    assert ids.shape == (2, 3, MAX_CHARS)
    np.testing.assert_array_equal(ids[1, 1:], 0)
    assert np.all(ids[0] != 0) and np.all(ids[1, 0] != 0)


def test_non_ascii_word_is_its_utf8_bytes():
    ids = char_ids(["née"])[0, 0]
    expected = [BOW_ID] + [b + 1 for b in "née".encode("utf-8")] + [EOW_ID]
    assert len(expected) == 6  # é is two bytes
    np.testing.assert_array_equal(ids, expected + [PAD_ID] * 2)


# --- CharacterCNN -----------------------------------------------------------


def test_cnn_shape_mask_and_zero_padding():
    cnn = tiny_cnn()
    ids = char_ids(["the cat sat", "a dog"])
    out = cnn(ids).numpy()
    assert out.shape == (2, 3, PROJECTION)
    assert cnn.compute_output_shape((None, None, MAX_CHARS)) == (None, None, PROJECTION)
    np.testing.assert_array_equal(cnn.compute_mask(ids).numpy(), [[True, True, True], [True, True, False]])
    np.testing.assert_array_equal(out[1, 2], 0.0)
    assert np.all(np.abs(out[0]).sum(-1) > 0)


def test_cnn_word_vectors_ignore_their_batch():
    cnn = tiny_cnn()
    alone = cnn(char_ids(["the cat"])).numpy()[0]
    batch = cnn(char_ids(["a much longer sentence with the words", "the cat"])).numpy()
    np.testing.assert_allclose(batch[1, :2], alone, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(batch[1, 2:], 0.0)
    # "the" occurs in both sentences and gets one vector.
    np.testing.assert_allclose(batch[0, 5], batch[1, 0], atol=1e-6, rtol=0)


def test_cnn_unique_path_equals_per_token_encoding():
    cnn = tiny_cnn()
    ids = char_ids(["the cat sat on the mat", "the the cat", "x"])
    out = cnn(ids).numpy()
    one_by_one = np.stack(
        [np.stack([cnn(ids[b, t][None, None]).numpy()[0, 0] for t in range(ids.shape[1])]) for b in range(ids.shape[0])]
    )
    np.testing.assert_allclose(out, one_by_one, atol=1e-6, rtol=0)
    # Every token through the encoder, duplicates and padding included, then masked.
    direct = cnn._encode_words(ids.reshape(-1, MAX_CHARS)).numpy().reshape(out.shape)
    direct *= np.any(ids != 0, axis=-1, keepdims=True)
    np.testing.assert_allclose(out, direct, atol=1e-6, rtol=0)


def test_cnn_gradients_reach_embedding_and_convolutions():
    cnn = tiny_cnn()
    ids = tf.constant(char_ids(["the cat sat", "the dog"]))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(cnn(ids)))
    variables = cnn.trainable_variables
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    checked = [path for path in grads if "char_embedding" in path or ("conv_width" in path and "kernel" in path)]
    assert len(checked) == 1 + len(FILTERS)
    for path in checked:
        assert grads[path] is not None, path
        assert float(tf.norm(tf.convert_to_tensor(grads[path]))) > 0, path


def test_cnn_config_round_trip():
    cnn = CharacterCNN(filters=[[1, 4], [3, 8]], char_embedding_dim=5, highway_layers=0, projection_dim=6, name="chars")
    assert cnn.filters == ((1, 4), (3, 8))
    config = yaml.safe_load(yaml.safe_dump(cnn.get_config()))
    clone = CharacterCNN.from_config(config)
    assert clone.get_config() == cnn.get_config()
    assert (clone.filters, clone.char_embedding_dim, clone.highway_layers, clone.projection_dim) == (((1, 4), (3, 8)), 5, 0, 6)
    ids = char_ids(["hello there"])
    cnn(ids)
    clone(ids)
    assert len(clone.weights) == len(cnn.weights) == 1 + 2 * 2 + 2  # no highway weights


def test_cnn_rejects_filters_wider_than_words():
    with pytest.raises(ValueError, match="max_chars"):
        tiny_cnn(filters=((1, 4), (9, 4)))(char_ids(["hi"]))
    with pytest.raises(ValueError):
        tiny_cnn(filters=((0, 4),))


def test_cnn_and_mix_save_and_load_keras(tmp_path):
    inputs = keras.Input((None, MAX_CHARS), dtype="int32")
    words = tiny_cnn()(inputs)
    outputs = ScalarMix(2, layer_norm=True)([words, Highway(1)(words)])
    model = keras.Model(inputs, outputs)
    ids = char_ids(["the cat sat", "a dog"])
    expected = model(ids).numpy()
    np.testing.assert_array_equal(expected[1, 2], 0.0)
    model.save(tmp_path / "bilm.keras")
    loaded = keras.models.load_model(tmp_path / "bilm.keras")
    np.testing.assert_allclose(loaded(ids).numpy(), expected, atol=1e-6, rtol=0)


# --- Highway ----------------------------------------------------------------


def test_highway_gate_bias_starts_at_minus_two():
    highway = Highway(2)
    highway.build((None, 5))
    biases = [w for w in highway.weights if w.path.endswith("gate_bias")]
    assert len(biases) == 2
    for bias in biases:
        np.testing.assert_array_equal(bias.numpy(), -2.0)


def test_highway_with_zero_transform_carries_a_gated_input():
    x = np.random.default_rng(0).normal(size=(3, 4, 5)).astype("float32")
    highway = Highway(2)
    highway.build((None, 5))
    gate_kernels = {}
    for weight in highway.weights:
        if "transform" in weight.path:
            weight.assign(np.zeros(weight.shape, "float32"))
        elif weight.path.endswith("gate_kernel"):
            gate_kernels[weight.path] = weight.numpy()
    # relu(0) = 0, so each layer gives (1 - sigmoid(x W_g - 2)) * x.
    expected = x
    for kernel in gate_kernels.values():
        expected = (1.0 - sigmoid(expected @ kernel - 2.0)) * expected
    np.testing.assert_allclose(highway(x).numpy(), expected, atol=1e-6, rtol=1e-5)
    # With the gate kernels zeroed too, every layer scales by 1 - sigmoid(-2).
    for weight in highway.weights:
        if weight.path.endswith("gate_kernel"):
            weight.assign(np.zeros(weight.shape, "float32"))
    np.testing.assert_allclose(highway(x).numpy(), x * (1.0 - sigmoid(-2.0)) ** 2, atol=1e-6, rtol=1e-5)


def test_highway_matches_its_formula():
    x = np.random.default_rng(1).normal(size=(6, 3)).astype("float32")
    highway = Highway(1)
    out = highway(x).numpy()
    w_h, b_h, w_g, b_g = (w.numpy() for w in highway.weights)
    gate = sigmoid(x @ w_g + b_g)
    np.testing.assert_allclose(out, gate * np.maximum(x @ w_h + b_h, 0) + (1 - gate) * x, atol=1e-5, rtol=1e-5)


def test_highway_config_round_trip():
    highway = Highway(3, name="hw")
    clone = Highway.from_config(highway.get_config())
    assert clone.num_layers == 3 and clone.name == "hw"
    assert clone.get_config() == highway.get_config()


# --- ScalarMix --------------------------------------------------------------


def constant_layers(values, shape=(2, 3, 4)):
    return [np.full(shape, value, "float32") for value in values]


def test_scalar_mix_starts_as_the_mean():
    mix = ScalarMix(3)
    out = mix(constant_layers([1.0, 2.0, 6.0])).numpy()
    weights = mix.normalized_weights().numpy()
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weights, [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(out, 3.0, rtol=1e-6)


def test_scalar_mix_gamma_scales_and_weights_select():
    mix = ScalarMix(3)
    layers = constant_layers([1.0, 2.0, 6.0])
    mix.build([layer.shape for layer in layers])
    mix.gamma.assign(2.0)
    np.testing.assert_allclose(mix(layers).numpy(), 6.0, rtol=1e-6)
    mix.gamma.assign(1.0)
    mix.scalar_weights.assign([0.0, 50.0, 0.0])
    np.testing.assert_allclose(mix.normalized_weights().numpy().sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mix(layers).numpy(), 2.0, rtol=1e-6)


def test_scalar_mix_zeroes_masked_steps_and_passes_the_mask():
    mix = ScalarMix(2)
    mask = np.array([[True, True, False], [True, False, False]])
    layers = constant_layers([1.0, 3.0])
    out = mix(layers, mask=mask).numpy()
    np.testing.assert_array_equal(out[~mask], 0.0)
    np.testing.assert_allclose(out[mask], 2.0, rtol=1e-6)
    np.testing.assert_array_equal(mix.compute_mask(layers, [None, mask]), mask)
    np.testing.assert_allclose(mix(layers, mask=[None, mask]).numpy(), out)


def test_scalar_mix_layer_norm_ignores_masked_steps():
    rng = np.random.default_rng(3)
    mask = np.array([[True, True, True, False], [True, True, False, False]])
    layers = [rng.normal(size=(2, 4, 5)).astype("float32") for _ in range(2)]
    mix = ScalarMix(2, layer_norm=True)
    out = mix(layers, mask=mask).numpy()
    junk = [np.where(mask[..., None], h, 100.0 * rng.normal(size=h.shape)).astype("float32") for h in layers]
    np.testing.assert_allclose(mix(junk, mask=mask).numpy(), out, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out[~mask], 0.0)
    # AllenNLP's normalization, per sequence: one mean and variance over each sequence's unmasked elements.
    expected = np.zeros_like(out)
    for h in layers:
        for row in range(2):
            real = h[row][mask[row]]
            expected[row] += 0.5 * (h[row] - real.mean()) / np.sqrt(real.var() + 1e-12)
    np.testing.assert_allclose(out[mask], expected[mask], atol=1e-5, rtol=1e-5)
    # A sequence's output does not depend on the others in its batch.
    np.testing.assert_allclose(mix([h[:1] for h in layers], mask=mask[:1]).numpy(), out[:1], atol=1e-5, rtol=0)


def test_scalar_mix_config_round_trip():
    mix = ScalarMix(3, layer_norm=True, name="mix")
    clone = ScalarMix.from_config(mix.get_config())
    assert (clone.num_layers, clone.layer_norm, clone.name) == (3, True, "mix")
    assert clone.get_config() == mix.get_config()


# --- SavedModel -------------------------------------------------------------


class _Encoder(tf.Module):
    def __init__(self):
        super().__init__()
        self.cnn = tiny_cnn()
        self.mix = ScalarMix(3, layer_norm=True)

    @tf.function(input_signature=[tf.TensorSpec([None, None, MAX_CHARS], tf.int32)])
    def __call__(self, ids):
        words = self.cnn(ids)
        mask = self.cnn.compute_mask(ids)
        return self.mix([words, 2.0 * words, words * words], mask=mask)


def test_cnn_and_mix_trace_into_a_core_op_saved_model(tmp_path):
    encoder = _Encoder()
    ids = char_ids(["the cat sat on the mat", "a dog"])
    expected = encoder(ids).numpy()
    np.testing.assert_array_equal(expected[1, 2:], 0.0)
    tf.saved_model.save(encoder, str(tmp_path / "encoder"))
    ops = graph_ops(tmp_path / "encoder")
    assert "UniqueV2" in ops
    bad = sorted(op for op in ops if op.startswith(("Xla", "Cudnn")) or "Ragged" in op)
    assert not bad, bad
    loaded = tf.saved_model.load(str(tmp_path / "encoder"))
    np.testing.assert_allclose(loaded(tf.constant(ids)).numpy(), expected, atol=1e-6, rtol=0)
    other = char_ids(["one", "two three four five six seven"])
    np.testing.assert_allclose(loaded(tf.constant(other)).numpy(), encoder(other).numpy(), atol=1e-6, rtol=0)
