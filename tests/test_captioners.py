"""Image captioners (`seqapp.models.captioner`) and their layers: shapes, causality, the decoding
cache, search, attention, the doubly stochastic penalty, saving, a tiny overfit and the backbone."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from seqapp import decoding
from seqapp.exporters import check_ops
from seqapp.layers import ConvImageEncoder
from seqapp.layers import SoftAttentionLSTM
from seqapp.layers.conv_image_encoder import hue_free
from seqapp.layers.soft_attention_lstm import doubly_stochastic_penalty
from seqapp.losses import MaskedSequenceLoss
from seqapp.models.captioner import CAPTIONER_FAMILIES
from seqapp.models.captioner import build_captioner
from seqapp.models.show_attend_tell import ShowAttendTell
from seqapp.models.transformer_captioner import TransformerCaptioner

VOCAB, SIZE, START, END = 20, 32, 2, 3
IMAGES = np.random.default_rng(0).random((3, SIZE, SIZE, 3)).astype("float32")
# Captions of different lengths, right-padded; decoder inputs start with START.
TARGET = np.array([[START, 5, 6, 7, 8, 9], [START, 10, 11, 0, 0, 0], [START, 12, 13, 14, 15, 0]], "int32")
SMALL = dict(image_size=SIZE, dim=16, units=24, num_layers=2, num_heads=2, ffn_dim=32, dropout=0.1,
             encoder_filters=8, encoder_blocks=2)


def features(target=TARGET, images=IMAGES):
    return {"image": tf.constant(images), "decoder_token_ids": tf.constant(target),
            "decoder_padding_mask": tf.constant(target != 0)}


def make_model(family, **kwargs):
    keras.utils.set_random_seed(0)
    return build_captioner(VOCAB, family=family, **{**SMALL, **kwargs})


# Each family, and one with the pointwise colour stream beside its CNN.
MODELS = {**{family: (family, {}) for family in CAPTIONER_FAMILIES},
          "lstm_attention+colour": ("lstm_attention", {"encoder_colour_channels": 4})}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    family, options = MODELS[request.param]
    return make_model(family, **options)


def step_by_step(model, cached, target=TARGET):
    state = model.decoding_state(*model.encode(IMAGES), cached=cached)
    logits = []
    for step in range(target.shape[1]):
        step_logits, state = model.decode_step(tf.constant(target[:, step]), tf.constant(step, tf.int32), state)
        assert all(value.shape[0] == len(target) for value in state.values())
        logits.append(step_logits.numpy())
    return np.stack(logits, axis=1), state


def test_encoder_memory_shape_and_mask(model):
    memory, memory_mask = model.encode(IMAGES)
    assert model.feature_map_shape == (8, 8)
    assert memory.shape == (3, 64, 16)
    assert memory_mask.dtype == tf.bool and memory_mask.shape == (3, 64) and bool(tf.reduce_all(memory_mask))


def test_encoder_positions_are_told_apart():
    encoder = ConvImageEncoder(16, filters=8, blocks=3)
    memory = encoder(np.full((1, 64, 64, 3), 0.5, "float32")).numpy()[0]  # a uniform image
    assert encoder.feature_map_shape == (8, 8) and memory.shape == (64, 16)
    distances = np.linalg.norm(memory[:, None] - memory[None], axis=-1)
    assert distances[~np.eye(64, dtype=bool)].min() > 1e-3  # no two positions look alike
    assert ConvImageEncoder.from_config(encoder.get_config()).get_config() == encoder.get_config()
    with pytest.raises(ValueError, match="norm"):
        ConvImageEncoder(16, norm="group")
    with pytest.raises(ValueError, match="fixed image size"):
        ConvImageEncoder(16)(keras.Input((None, None, 3)))


# RGB -> YIQ, written out here so the tests check hue_free against the standard, not against itself.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def test_hue_free_is_blind_to_hue_only():
    rng = np.random.default_rng(1)
    images = (rng.random((3, 5, 5, 3)) * 0.3 + 0.35).astype("float32")  # no channel clips under the turn below
    images[0] = 0.4  # grey
    turn = np.array([[1, 0, 0], [0, np.cos(2.0), -np.sin(2.0)], [0, np.sin(2.0), np.cos(2.0)]])  # of the (I, Q) plane
    turned = (images @ (np.linalg.inv(RGB_TO_YIQ) @ turn @ RGB_TO_YIQ).T).astype("float32")
    assert np.abs(turned[1:] - images[1:]).max() > 0.05  # another hue...
    np.testing.assert_allclose(hue_free(turned), hue_free(images), atol=1e-5)  # ...reads the same
    free = hue_free(images).numpy()
    assert free.shape == (3, 5, 5, 2)
    np.testing.assert_allclose(free[0], np.stack([np.full((5, 5), 0.4), np.zeros((5, 5))], -1), atol=1e-5)
    # Brightness and saturation still tell pixels apart.
    assert np.abs(hue_free(images * 0.5) - free).max() > 0.05
    grey_of_same_luminance = np.repeat(images @ RGB_TO_YIQ[0], 3, axis=-1).reshape(images.shape).astype("float32")
    assert np.abs(hue_free(grey_of_same_luminance)[1:, ..., 1] - free[1:, ..., 1]).max() > 0.01


def test_colour_stream_reads_colour_the_cnn_does_not():
    keras.utils.set_random_seed(4)
    encoder = ConvImageEncoder(16, filters=8, blocks=2, colour_channels=4)
    memory = encoder(np.zeros((1, 32, 32, 3), "float32"))
    assert memory.shape == (1, 64, 16) and encoder.convolutions[0].kernel.shape == (3, 3, 2, 8)
    assert encoder.colour.kernel.shape == (3, 4)  # pointwise over RGB: colour, no shape
    # Two squares of the same luminance and saturation, hues apart: the CNN's map is the same, the memory not.
    square = np.full((1, 32, 32, 3), 0.3, "float32")
    square[:, 8:16, 8:16] = (0.7, 0.3, 0.3)
    half_turn = np.linalg.inv(RGB_TO_YIQ) @ np.diag([1.0, -1.0, -1.0]) @ RGB_TO_YIQ
    other = (square @ half_turn.T).astype("float32")
    assert np.abs(other - square).max() > 0.2 and 0.0 <= other.min() and other.max() <= 1.0
    np.testing.assert_allclose(hue_free(other), hue_free(square), atol=1e-5)
    assert np.abs(encoder(other) - encoder(square)).max() > 1e-3
    encoder.colour.set_weights([np.zeros_like(w) for w in encoder.colour.get_weights()])
    np.testing.assert_allclose(encoder(other), encoder(square), atol=1e-4)  # the CNN alone: blind to the hue
    config = encoder.get_config()
    assert config["colour_channels"] == 4 and ConvImageEncoder.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="colour_channels"):
        ConvImageEncoder(16, colour_channels=4, backbone="mobilenet_v2")


def test_logits_shape_and_padding(model):
    logits = model(features(), training=False).numpy()
    assert logits.shape == (3, 6, VOCAB)
    # Whatever sits under the padding mask changes neither the real steps' logits nor the loss.
    garbage = np.where(TARGET != 0, TARGET, 19)
    other = model({**features(garbage), "decoder_padding_mask": tf.constant(TARGET != 0)}, training=False).numpy()
    real = TARGET != 0
    np.testing.assert_allclose(other[real], logits[real], atol=1e-5)
    labels = np.concatenate([TARGET[:, 1:], np.zeros((3, 1), "int32")], axis=1)
    loss = MaskedSequenceLoss()
    assert float(loss(labels, other)) == pytest.approx(float(loss(labels, logits)), rel=1e-5)
    # Padding more steps changes nothing either.
    padded = np.pad(TARGET, [(0, 0), (0, 3)])
    np.testing.assert_allclose(model(features(padded), training=False).numpy()[:, :6][real], logits[real],
                               atol=1e-5)


def test_decoder_is_causal(model):
    target = np.array([[START, 5, 6, 7, 8, 9]] * 3, "int32")
    logits = model(features(target), training=False).numpy()
    for t in range(target.shape[1] - 1):
        changed = target.copy()
        changed[:, t + 1:] = (changed[:, t + 1:] + 7) % (VOCAB - 4) + 4
        other = model(features(changed), training=False).numpy()
        np.testing.assert_allclose(other[:, :t + 1], logits[:, :t + 1], atol=1e-5)
        assert np.abs(other[:, t + 1:] - logits[:, t + 1:]).max() > 1e-4  # later steps do see the change


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "recomputed"])
def test_step_by_step_decoding_equals_teacher_forcing(model, cached):
    expected = model(features(), training=False).numpy()
    logits, state = step_by_step(model, cached)
    real = TARGET != 0
    np.testing.assert_allclose(logits[real], expected[real], atol=1e-5)
    if not cached:
        np.testing.assert_array_equal(state["prefix"].numpy(), TARGET)
    elif isinstance(model, ShowAttendTell):
        assert {"memory", "memory_mask", "memory_keys", "h", "c"} == set(state)
    else:  # the cache grew by one position per step, the image memory was projected once
        assert state["layer0_self_key"].shape[1] == TARGET.shape[1]
        assert state["layer0_memory_key"].shape[1] == 64


def test_cached_equals_recomputed(model):
    cached, _ = step_by_step(model, cached=True)
    recomputed, _ = step_by_step(model, cached=False)
    np.testing.assert_allclose(cached, recomputed, atol=1e-5)


def search(model, beam_size, images=IMAGES, max_length=7, cached=True):
    state = model.decoding_state(*model.encode(images), cached=cached)
    batch = tf.shape(images)[0]
    limits = dict(end_id=END, max_lengths=tf.fill([batch], max_length))
    if beam_size == 1:
        return decoding.greedy_search(model.decode_step, tf.fill([batch], START), state, **limits)
    return decoding.beam_search(model.decode_step, tf.fill([batch], START), state, beam_size=beam_size,
                                length_penalty=0.6, **limits)


def test_beam_size_one_is_greedy(model):
    greedy = search(model, 1)
    beam = decoding.beam_search(model.decode_step, tf.fill([3], START),
                                model.decoding_state(*model.encode(IMAGES), cached=True),
                                end_id=END, max_lengths=tf.fill([3], 7), beam_size=1)
    np.testing.assert_array_equal(beam.ids.numpy(), greedy.ids.numpy())
    np.testing.assert_array_equal(beam.lengths.numpy(), greedy.lengths.numpy())
    np.testing.assert_allclose(beam.log_probs.numpy(), greedy.log_probs.numpy(), rtol=1e-5)
    # Greedy search is the argmax chain of teacher-forced logits (every step real: a random model may pick 0).
    prefix = np.full((3, 1), START, "int32")
    for _ in range(int(greedy.lengths.numpy().max())):
        chain = {**features(prefix), "decoder_padding_mask": tf.ones(prefix.shape, tf.bool)}
        next_ids = model(chain, training=False).numpy()[:, -1].argmax(-1)
        prefix = np.concatenate([prefix, next_ids[:, None].astype("int32")], axis=1)
    for row, length, expected in zip(greedy.ids.numpy(), greedy.lengths.numpy(), prefix[:, 1:]):
        assert list(row[:length]) == list(expected[:length])


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "recomputed"])
def test_traced_search_uses_only_core_ops_and_matches_eager(model, cached):
    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)], jit_compile=False)
    def caption(images):
        return search(model, 3, images, cached=cached).ids

    graph = caption.get_concrete_function().graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert ops & {"While", "StatelessWhile"} and "Conv2D" in ops
    assert not [op for op in ops if op.startswith(("Xla", "Cudnn")) or not hasattr(tf.raw_ops, op)], sorted(ops)
    for images in (IMAGES, IMAGES[:1]):  # two batch sizes, one trace
        np.testing.assert_array_equal(caption(tf.constant(images)).numpy(), search(model, 3, images).ids.numpy())
    assert caption.experimental_get_tracing_count() == 1


def test_saved_model_decodes_with_stock_ops(model, tmp_path):
    module = tf.Module()
    module.model = model
    module.caption = tf.function(lambda images: {"ids": search(model, 2, images).ids},
                                 input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.caption})
    assert check_ops(tmp_path)
    served = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    np.testing.assert_array_equal(served(images=tf.constant(IMAGES))["ids"].numpy(), search(model, 2).ids.numpy())


def test_cross_attention_rows_sum_to_one(model):
    weights = model.cross_attention(features()).numpy()
    assert weights.shape == (3, 6, 64)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert (weights >= 0).all() and weights.std(axis=-1).max() > 1e-4  # not uniform


def test_doubly_stochastic_penalty_by_hand():
    weights = np.array([[[0.5, 0.5, 0.0], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0]],
                        [[0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.0, 0.0, 1.0]]], "float32")
    mask = np.array([[True, True, True], [True, True, False]])
    # Row 0: totals (1.7, 0.7, 0.6) -> 0.49 + 0.09 + 0.16; row 1, its last step masked: (0.4, 0.4, 1.2).
    expected = ((0.49 + 0.09 + 0.16) + (0.36 + 0.36 + 0.04)) / 2
    assert float(doubly_stochastic_penalty(weights, mask)) == pytest.approx(expected, rel=1e-6)
    assert float(doubly_stochastic_penalty(weights[:1])) == pytest.approx(0.74, rel=1e-6)


def test_soft_attention_lstm_penalty_only_in_training_and_masked_steps():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    inputs, memory = rng.normal(size=(2, 4, 5)).astype("float32"), rng.normal(size=(2, 6, 7)).astype("float32")
    mask = np.array([[True, True, True, True], [True, True, False, False]])
    layer = SoftAttentionLSTM(8, attention_regularization=0.5)
    outputs, contexts, weights = layer(inputs, memory, mask=mask, training=True)
    assert (outputs.shape, contexts.shape, weights.shape) == ((2, 4, 8), (2, 4, 7), (2, 4, 6))
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, atol=1e-6)
    # After the mask ends, the state is carried over unchanged.
    np.testing.assert_array_equal(outputs.numpy()[1, 2:], np.repeat(outputs.numpy()[1, 1:2], 2, axis=0))
    totals = (weights.numpy() * mask[:, :, None]).sum(1)
    assert len(layer.losses) == 1
    assert float(layer.losses[0]) == pytest.approx(0.5 * np.mean(((1 - totals) ** 2).sum(-1)), rel=1e-5)
    layer(inputs, memory, mask=mask, training=False)
    assert not layer.losses
    unregularized = SoftAttentionLSTM(8)
    unregularized(inputs, memory, training=True)
    assert not unregularized.losses
    assert SoftAttentionLSTM.from_config(layer.get_config()).get_config() == layer.get_config()

    # In a graph with unknown batch and steps, one trace serves every shape and gradients reach every weight.
    @tf.function(input_signature=[tf.TensorSpec([None, None, 5]), tf.TensorSpec([None, None, 7])])
    def gradients(inputs, memory):
        with tf.GradientTape() as tape:
            outputs, _, _ = layer(inputs, memory, training=True)
            loss = tf.reduce_sum(outputs) + tf.add_n(layer.losses)
        return tape.gradient(loss, layer.trainable_weights)

    for steps in (4, 1):
        grads = gradients(inputs[:, :steps], memory)
        assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in grads)
    assert gradients.experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match="attention_regularization"):
        SoftAttentionLSTM(8, attention_regularization=-1.0)


@pytest.mark.parametrize("strength", [0.0, 0.3])
def test_fit_adds_the_attention_penalty(strength):
    # Without dropout or batch norm, training and inference compute the same attention weights.
    model = make_model("lstm_attention", dropout=0.0, encoder_norm="layer", attention_regularization=strength)
    labels = np.concatenate([TARGET[:, 1:], np.zeros((3, 1), "int32")], axis=1)
    logits = model(features(), training=True)
    assert len(model.losses) == (1 if strength else 0)
    weights = model.cross_attention(features())
    expected = float(MaskedSequenceLoss()(labels, logits))
    expected += strength * float(doubly_stochastic_penalty(weights, TARGET != 0))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=MaskedSequenceLoss())
    reported = model.train_on_batch(features(), labels)
    assert reported == pytest.approx(expected, rel=1e-4)
    model(features(), training=False)
    assert not model.losses


def as_json(config):
    return json.loads(json.dumps(config))  # tuples and lists alike


def test_save_load_round_trip(model, tmp_path):
    expected = model(features(), training=False).numpy()
    model.save(tmp_path / "captioner.keras")
    loaded = keras.models.load_model(tmp_path / "captioner.keras")
    assert type(loaded) is type(model) and as_json(loaded.get_config()) == as_json(model.get_config())
    assert loaded.feature_map_shape == model.feature_map_shape
    np.testing.assert_allclose(loaded(features(), training=False).numpy(), expected, atol=1e-6)

    model.save_weights(tmp_path / "captioner.weights.h5")
    fresh = type(model).from_config(model.get_config())
    fresh.build()
    assert len(fresh.weights) == len(model.weights)
    fresh.load_weights(tmp_path / "captioner.weights.h5")
    np.testing.assert_allclose(fresh(features(), training=False).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(step_by_step(fresh, cached=True)[0][TARGET != 0], expected[TARGET != 0], atol=1e-5)


def test_transformer_captioner_options():
    model = make_model("transformer", num_encoder_layers=1, num_layers=1)
    assert len(model.encoder_layers) == 1 and len(model.decoder_layers) == 1
    logits, _ = step_by_step(model, cached=True)
    np.testing.assert_allclose(logits[TARGET != 0], model(features(), training=False).numpy()[TARGET != 0],
                               atol=1e-5)
    assert isinstance(model, TransformerCaptioner)
    with pytest.raises(ValueError, match="captioner family"):
        build_captioner(VOCAB, family="gru")


def shapes_dataset():
    """8 images: a red or green square in one of 4 quadrants; captions colour, row, column."""
    images, captions = [], []
    for colour_id, colour in enumerate([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)]):
        for row in range(2):
            for column in range(2):
                image = np.zeros((SIZE, SIZE, 3), "float32")
                top, left = 3 + 16 * row, 3 + 16 * column
                image[top:top + 10, left:left + 10] = colour
                images.append(image)
                captions.append([4 + colour_id, 6 + row, 8 + column])
    return np.stack(images), np.array(captions, "int32")


@pytest.mark.parametrize("family", CAPTIONER_FAMILIES)
def test_learns_to_caption_shapes(family):
    images, captions = shapes_dataset()
    decoder_ids = np.concatenate([np.full((8, 1), START, "int32"), captions], axis=1)
    labels = np.concatenate([captions, np.full((8, 1), END, "int32")], axis=1)
    inputs = {"image": images, "decoder_token_ids": decoder_ids, "decoder_padding_mask": decoder_ids != 0}
    repeats = 10  # one fit call: 10 steps over the 8 examples
    inputs = {key: np.concatenate([value] * repeats) for key, value in inputs.items()}
    model = make_model(family, units=32, num_layers=1, dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=MaskedSequenceLoss())
    for _ in range(60):
        model.fit(inputs, np.concatenate([labels] * repeats), batch_size=8, verbose=0)
        result = search(model, 1, images, max_length=5)
        if result.ids.shape == captions.shape and (result.ids.numpy() == captions).all():
            break
    np.testing.assert_array_equal(result.ids.numpy(), captions)
    np.testing.assert_array_equal(search(model, 3, images, max_length=5).ids.numpy(), captions)


def test_backbone_weights_are_loaded(tmp_path):
    keras.utils.set_random_seed(3)
    source = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=None)
    source.save_weights(tmp_path / "mobilenet_v2.weights.h5")
    model = build_captioner(VOCAB, family="transformer", image_size=64, dim=16, num_layers=1, num_heads=2,
                            ffn_dim=32, backbone="mobilenet_v2", backbone_alpha=0.35,
                            backbone_weights=tmp_path / "mobilenet_v2.weights.h5")
    backbone = model.encoder.backbone_model
    assert model.feature_map_shape == (2, 2)
    for got, want in zip(backbone.weights, source.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    images = np.random.default_rng(2).random((2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(model.encoder.backbone_model(images * 2 - 1), source(images * 2 - 1), atol=1e-5)
    memory, _ = model.encode(images)
    assert memory.shape == (2, 4, 16)

    # Cut at an earlier layer for a finer map; the layers kept take their weights from the file.
    cut = build_captioner(VOCAB, family="lstm_attention", image_size=64, dim=16, units=16,
                          backbone="mobilenet_v2", backbone_alpha=0.35, backbone_layer="block_6_expand_relu",
                          backbone_weights=tmp_path / "mobilenet_v2.weights.h5")
    assert cut.feature_map_shape == (8, 8)
    layer = cut.encoder.backbone_model.get_layer("block_5_project")
    np.testing.assert_array_equal(layer.kernel.numpy(), source.get_layer("block_5_project").kernel.numpy())

    graph = tf.function(cut.encode).get_concrete_function(tf.TensorSpec([None, 64, 64, 3])).graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert "DepthwiseConv2dNative" in ops
    assert not [op for op in ops if op.startswith(("Xla", "Cudnn")) or not hasattr(tf.raw_ops, op)], sorted(ops)
    with pytest.raises(ValueError, match="no backbone"):
        build_captioner(VOCAB, image_size=SIZE, dim=16, units=16, encoder_filters=8, encoder_blocks=2,
                        backbone_weights=tmp_path / "mobilenet_v2.weights.h5")
