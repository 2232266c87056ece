"""A classifier that reads a pretrained biLM (`model.bilm`): token-word alignment, the warm start (frozen
or fine-tuned), padding, export, and errors."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tiny_sentiment
from seqapp import config
from seqapp import exporters
from seqapp import runner
from seqapp import tasks
from seqapp.data import pipeline
from seqapp.errors import ConfigError
from seqapp.tokenizers import WordPieceTokenizer
from seqapp.tokenizers import learn_vocabulary
from seqapp.tokenizers.characters import CharacterTokenizer
from seqapp.tokenizers.wordpiece import write_vocabulary
from seqapp.training import warm_start

CORPUS = tiny_sentiment.POSITIVE + tiny_sentiment.NEGATIVE + ["the film was good", "the film was bad"]


def test_tokens_know_their_words(tmp_path):
    texts = ["a wonderful film", "a dull film"] * 10
    write_vocabulary(learn_vocabulary(tf.data.Dataset.from_tensor_slices(texts), 30, min_count=1), tmp_path / "v.txt")
    tokenizer = WordPieceTokenizer(tmp_path / "v.txt")
    ids, word_index, words = tokenizer.tokenize_with_words(tf.constant(["A Wonderful, filmic day", ""]))
    pieces = tokenizer.id_to_token(ids).to_list()
    assert words.to_list() == [[b"a", b"wonderful", b",", b"filmic", b"day"], []]
    assert len(pieces[0]) == len(word_index.to_list()[0]) > len(words.to_list()[0])  # some words split
    for piece, index in zip(pieces[0], word_index.to_list()[0]):  # each piece spells part of its own word
        word = words.to_list()[0][index].decode()
        assert piece == b"[UNK]" or piece.decode().removeprefix("##") in word, (piece, word)
    assert word_index.to_list()[0] == sorted(word_index.to_list()[0])
    assert set(word_index.to_list()[0]) == set(range(5))

    features = pipeline.word_features(tokenizer, CharacterTokenizer(8), tf.constant(["a film"]))
    assert features["chars"].to_list()[0][1][:6] == [257, ord("f") + 1, ord("i") + 1, ord("l") + 1, ord("m") + 1, 258]


@pytest.fixture(scope="module")
def language_model(tmp_path_factory, seqapp_cache_dir):
    """A tiny biLM run on the sentiment sentences' words (split like the classifier's tokenizer)."""
    keras.utils.set_random_seed(0)
    tmp_path = tmp_path_factory.mktemp("bilm")
    (tmp_path / "corpus.txt").write_text("".join(f"{line}\n" for line in CORPUS * 5))
    definition = config.validate({
        "task": "language_modeling", "seed": 3,
        "data": {"format": "text", "train": "corpus.txt", "validation": "corpus.txt", "test": "corpus.txt"},
        "tokenizer": {"vocab_size": 100, "max_chars": 12, "split": "basic", "lower_case": True},
        "pipeline": {"window": 6, "batch_size": 8},
        "model": {"filters": [[1, 8], [2, 8]], "projection_dim": 8, "units": 16, "dropout": 0.0},
        "train": {"epochs": 2, "learning_rate": 0.01},
        "base_dir": str(tmp_path)})
    runner.train(definition, tmp_path / "run", verbose=0)
    return tmp_path / "run"


def _definition(tmp_path, language_model, **bilm):
    return tiny_sentiment.definition(tmp_path, model={"pooling": "max", "bilm": {"run": str(language_model), **bilm}},
                                     train={"epochs": 2})


def _bilm_weights(model):
    return [w.copy() for name in warm_start.PretrainedBiLM.LAYERS for w in model.get_layer(name).get_weights()]


@pytest.fixture(scope="module")
def frozen(tmp_path_factory, language_model):
    tmp_path = tmp_path_factory.mktemp("frozen")
    definition = _definition(tmp_path, language_model)
    results = runner.train(definition, tmp_path / "run", verbose=0)
    return tmp_path / "run", results


def test_a_frozen_bilm_keeps_the_language_models_weights(frozen, language_model):
    work_dir, results = frozen
    assert 0.0 <= results["test"]["accuracy"] <= 1.0
    model = keras.models.load_model(work_dir / "best.keras")
    source = keras.models.load_model(language_model / "best.keras", compile=False)
    expected = [w for part in (source.token_encoder, source.encoder) for w in part.get_weights()]
    for got, want in zip(_bilm_weights(model), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not model.get_layer("bilm_encoder").trainable
    mix = model.get_layer("bilm_mix").get_weights()
    assert not np.allclose(mix[0], 0.0) or not np.isclose(mix[1], 1.0)  # the mix itself is trained


def test_the_biLM_layers_are_standardized_over_the_training_words(frozen, language_model):
    work_dir, _ = frozen
    run = runner.load_run(work_dir)  # the saved model: the adapted statistics survive saving
    inputter = tasks.of(run.definition).run_inputter(run)
    source = keras.models.load_model(language_model / "best.keras", compile=False)
    layers = [[] for _ in range(3)]
    for features, _ in inputter.dataset("train", training=False):  # tiny: fewer batches than the sample takes
        words = np.any(features["chars"].numpy() != 0, axis=-1)
        for sample, layer in zip(layers, source.layers_of(features["chars"])[0]):
            sample.append(np.asarray(layer)[words])
    for index, sample in enumerate(layers):
        vectors = np.concatenate(sample)
        standardized = np.asarray(run.model.get_layer(f"bilm_standardize_{index}")(vectors[None]))[0]
        spread = vectors.std(axis=0)
        varied = spread >= warm_start.PretrainedBiLM.MIN_STD_SHARE * np.median(spread)
        np.testing.assert_allclose(standardized.mean(axis=0), 0.0, atol=1e-3)
        np.testing.assert_allclose(standardized.std(axis=0)[varied], 1.0, atol=1e-3)
        assert np.all(standardized.std(axis=0)[~varied] < 1.0)  # never blown up past the floor


def test_a_fine_tuned_bilm_moves(tmp_path, language_model):
    definition = _definition(tmp_path, language_model, trainable=True, mix="replace")
    runner.train(definition, tmp_path / "run", verbose=0)
    model = keras.models.load_model(tmp_path / "run" / "best.keras")
    source = keras.models.load_model(language_model / "best.keras", compile=False)
    expected = [w for part in (source.token_encoder, source.encoder) for w in part.get_weights()]
    assert any(not np.allclose(got, want) for got, want in zip(_bilm_weights(model), expected))
    assert model.get_layer("bilm_encoder").trainable


def test_padding_and_batch_mates_do_not_change_a_prediction(frozen):
    work_dir, _ = frozen
    run = runner.load_run(work_dir)
    _, signatures = tasks.of(run.definition).signatures(run)
    serve = {s.name: s.function for s in signatures}["serving_default"]
    alone = serve(tf.constant(["a dreadful bore"]))["probabilities"].numpy()
    batched = serve(tf.constant(["a dreadful bore", "truly great and moving , i loved every minute of it"]))
    np.testing.assert_allclose(batched["probabilities"].numpy()[:1], alone, atol=1e-5)


FRESH = """
import json, sys
import tensorflow as tf
import tensorflow_text  # the WordPiece and basic tokenizer ops
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["serving_default"](text=tf.constant(json.loads(sys.argv[2])))
print(json.dumps(out["probabilities"].numpy().tolist()))
"""


def test_the_export_answers_text_in_a_fresh_process(frozen, tmp_path):
    work_dir, _ = frozen
    path = runner.export(work_dir, tmp_path / "sentiment")
    assert exporters.check_ops(path)
    texts = ["a wonderful heartfelt film", "", "unseenword !"]
    result = subprocess.run([sys.executable, "-c", FRESH, str(path), json.dumps(texts)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    run = runner.load_run(work_dir)
    _, signatures = tasks.of(run.definition).signatures(run)
    here = {s.name: s.function for s in signatures}["serving_default"](tf.constant(texts))["probabilities"]
    np.testing.assert_allclose(served, here.numpy(), atol=1e-5)
    assert served.shape == (3, 2)


def test_a_bilm_run_that_is_no_language_model_is_refused(tmp_path, frozen):
    work_dir, _ = frozen  # a classification run
    definition = _definition(tmp_path, work_dir)
    with pytest.raises(ConfigError, match="not a language model") as error:
        warm_start.PretrainedBiLM(definition).language_model()
    assert error.value.key == "model.bilm.run"


def test_a_missing_bilm_run_is_named(tmp_path):
    definition = _definition(tmp_path, tmp_path / "nowhere.yaml")
    with pytest.raises(ConfigError, match="neither a run folder nor a pipeline definition") as error:
        warm_start.PretrainedBiLM(definition).resolve()
    assert error.value.key == "model.bilm.run"


def test_replace_with_pretrained_word_vectors_is_refused(tmp_path):
    # mix: replace builds no embedding layer, so word vectors would have nowhere to go.
    with pytest.raises(ConfigError, match="embeddings: null") as error:
        tiny_sentiment.definition(tmp_path, model={"bilm": {"run": "lm", "mix": "replace"}},
                                  embeddings={"corpus": ["imdb"]})
    assert error.value.key == "model.bilm.mix"
