"""The Transformer and its layers: causality, padding, the decoding cache, saving, loss and schedule."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from seqapp.layers import CachedMultiHeadAttention
from seqapp.layers import SinusoidalPositionEncoding
from seqapp.layers import TransformerDecoder
from seqapp.layers import TransformerEncoder
from seqapp.losses import MaskedSequenceLoss
from seqapp.losses import masked_accuracy
from seqapp.models.transformer import Transformer
from seqapp.schedules import WarmupInverseSqrt

SOURCE = np.array([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0], [13, 0, 0, 0, 0]])
TARGET = np.array([[2, 21, 22, 23, 24, 25], [2, 26, 27, 0, 0, 0], [2, 28, 29, 30, 0, 0]])


def _features(source=SOURCE, target=TARGET):
    return {"encoder_token_ids": source, "encoder_padding_mask": source != 0,
            "decoder_token_ids": target, "decoder_padding_mask": target != 0}


@pytest.fixture(params=[True, False], ids=["pre_ln", "post_ln"])
def model(request):
    keras.utils.set_random_seed(1)
    model = Transformer(40, 50, num_layers=2, dim=16, num_heads=2, ffn_dim=32, dropout=0.1,
                        norm_first=request.param)
    model.build()
    return model


def _real(logits, target=TARGET):
    """Logits on real target steps only (padding steps are never used)."""
    return np.asarray(logits)[target != 0]


def test_decoder_is_causal(model):
    logits = model(_features(), training=False).numpy()
    for t in range(1, TARGET.shape[1]):
        changed = TARGET.copy()
        changed[:, t:] = np.where(changed[:, t:] != 0, 31 + t, 0)
        other = model(_features(target=changed), training=False).numpy()
        np.testing.assert_allclose(other[:, :t], logits[:, :t], atol=1e-5)
        assert np.abs(other[0, t:] - logits[0, t:]).max() > 1e-4  # later steps do see the change


def test_source_padding_changes_nothing(model):
    logits = model(_features(), training=False).numpy()
    padded = np.pad(SOURCE, [(0, 0), (0, 7)])
    np.testing.assert_allclose(_real(model(_features(source=padded), training=False)), _real(logits), atol=1e-5)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "recomputed"])
def test_step_by_step_decoding_equals_teacher_forcing(model, cached):
    logits = model(_features(), training=False).numpy()
    memory, memory_mask = model.encode(SOURCE, SOURCE != 0)
    state = model.decoding_state(memory, memory_mask, cached=cached)
    steps = []
    for t in range(TARGET.shape[1]):
        step_logits, state = model.decode_step(tf.constant(TARGET[:, t], tf.int32), tf.constant(t), state)
        steps.append(step_logits.numpy())
    np.testing.assert_allclose(_real(np.stack(steps, axis=1)), _real(logits), atol=1e-4)
    if cached:  # the cache grew by one position per step, the memory was projected once
        assert state["layer0_self_key"].shape[1] == TARGET.shape[1]
        assert state["layer0_memory_key"].shape[1] == SOURCE.shape[1]


def test_cross_attention_weights(model):
    weights = model.cross_attention(_features()).numpy()
    assert weights.shape == (3, 6, 5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(weights[SOURCE[:, None, :].repeat(6, 1) == 0] < 1e-6)


def test_save_load_and_weights_round_trip(model, tmp_path):
    logits = model(_features(), training=False).numpy()
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "m.keras")(_features(), training=False), logits,
                               atol=1e-6)
    model.save_weights(tmp_path / "m.weights.h5")
    fresh = Transformer.from_config(model.get_config())
    fresh.build()
    fresh.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_allclose(fresh(_features(), training=False), logits, atol=1e-6)


def test_shared_embeddings_tie_the_output_projection():
    model = Transformer(40, 40, num_layers=1, dim=8, num_heads=2, ffn_dim=16, share_embeddings=True)
    model.build()
    untied = Transformer(40, 40, num_layers=1, dim=8, num_heads=2, ffn_dim=16)
    untied.build()
    assert untied.count_params() - model.count_params() == 40 * 8 + (40 * 8 + 40)
    with pytest.raises(ValueError, match="shared vocabulary"):
        Transformer(40, 41, share_embeddings=True)


def test_layers_rebuild_from_their_config():
    for layer in (TransformerEncoder(2, 32, dropout=0.2, norm_first=True), TransformerDecoder(2, 32),
                  SinusoidalPositionEncoding(max_wavelength=500.0), CachedMultiHeadAttention(2, 4)):
        assert type(layer).from_config(layer.get_config()).get_config() == layer.get_config()


def test_position_encoding_offsets_match_a_longer_sequence():
    layer = SinusoidalPositionEncoding()
    whole = layer(np.zeros((1, 6, 8), "float32")).numpy()
    np.testing.assert_allclose(layer(np.zeros((1, 1, 8), "float32"), start_index=4).numpy()[0, 0], whole[0, 4],
                               atol=1e-6)
    np.testing.assert_allclose(whole[0, 0], [0, 1] * 4, atol=1e-7)


def test_masked_loss_ignores_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype("float32")
    y_true = np.array([[3, 4, 5, 0, 0], [6, 0, 0, 0, 0]])
    noisy = logits.copy()
    noisy[y_true == 0] = rng.normal(size=noisy[y_true == 0].shape) * 100  # garbage on padding
    for smoothing in (0.0, 0.1):
        loss = MaskedSequenceLoss(smoothing)
        assert float(loss(y_true, logits)) == pytest.approx(float(loss(y_true, noisy)), rel=1e-6)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([log_probs[b, t, y_true[b, t]] for b, t in zip(*np.nonzero(y_true))])
    assert float(MaskedSequenceLoss()(y_true, logits)) == pytest.approx(expected, rel=1e-5)
    assert float(masked_accuracy(y_true, np.eye(11)[np.where(y_true == 0, 1, y_true)] * 5)) == 1.0


def test_warmup_inverse_sqrt_schedule():
    schedule = WarmupInverseSqrt(1e-3, warmup_steps=100)
    assert float(schedule(49)) == pytest.approx(0.5e-3)
    assert float(schedule(99)) == pytest.approx(1e-3)
    assert float(schedule(399)) == pytest.approx(0.5e-3)
