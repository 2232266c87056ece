"""Language modelling: word vocabulary, token streams and windows, the biLM's causality and padding,
stream perplexity against a hand computation, a tiny corpus overfitted end to end, eval and ELMo export."""

import json
import math
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from seqapp import config
from seqapp import runner
from seqapp.data import streams
from seqapp.errors import ConfigError
from seqapp.layers import BiLMEncoder
from seqapp.models.language_model import BiLanguageModel
from seqapp.tasks import language_modeling
from seqapp.tokenizers import words as word_vocabulary
from seqapp.tokenizers.characters import CharacterTokenizer

MAX_CHARS = 10


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def _vocabulary(tmp_path, lines, vocab_size=50, min_count=1):
    words = word_vocabulary.learn_word_vocabulary(lines, vocab_size, min_count=min_count)
    path = tmp_path / "words.txt"
    word_vocabulary.write_word_vocabulary(words, path)
    return word_vocabulary.WordVocabulary(path)


def _spell(chars):
    """Words of `[..., max_chars]` character ids (CharacterTokenizer's byte + 1 between the markers)."""
    chars = np.asarray(chars)
    flat = chars.reshape(-1, chars.shape[-1])
    words = [bytes(int(c) - 1 for c in row if 1 <= c <= 256).decode("utf-8") for row in flat]
    return np.array(words, dtype=object).reshape(chars.shape[:-1])


# ---------------------------------------------------------------- word vocabulary


def test_learn_word_vocabulary_order_size_and_min_count():
    lines = ["b a c a", "d c a b", "e <unk> <unk> f <eos>", "c"]
    # counts: a 3, c 3, b 2, d 1, e 1, f 1 (and <unk> 2, <eos> 1, reserved)
    assert word_vocabulary.learn_word_vocabulary(lines, 100) == ["<unk>", "<eos>", "a", "c", "b", "d", "e", "f"]
    assert word_vocabulary.learn_word_vocabulary(lines, 5) == ["<unk>", "<eos>", "a", "c", "b"]
    assert word_vocabulary.learn_word_vocabulary(lines, 3) == ["<unk>", "<eos>", "a"]
    assert word_vocabulary.learn_word_vocabulary(lines, 100, min_count=2) == ["<unk>", "<eos>", "a", "c", "b"]
    assert word_vocabulary.learn_word_vocabulary(lines, 100, min_count=4) == ["<unk>", "<eos>"]
    learned = word_vocabulary.learn_word_vocabulary(lines, 100)
    assert learned.count("<unk>") == 1 and learned.count("<eos>") == 1


def test_word_vocabulary_round_trip_unknown_words_and_bad_files(tmp_path):
    words = word_vocabulary.learn_word_vocabulary(["the cat sat on the mat", "the dog"], 6)
    assert words == ["<unk>", "<eos>", "the", "cat", "dog", "mat"]
    path = tmp_path / "words.txt"
    word_vocabulary.write_word_vocabulary(words, path)
    vocabulary = word_vocabulary.WordVocabulary(path)
    assert vocabulary.words == words and vocabulary.vocab_size == 6
    assert vocabulary.vocab_path == str(path)
    ids = vocabulary.lookup(np.array(["the", "sat", "<eos>", "mat", "<unk>", "qwerty"], object))
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [2, 0, 1, 5, 0, 0])
    for bad in (["<eos>", "<unk>", "the"], ["the", "<unk>", "<eos>"], ["<unk>"]):
        word_vocabulary.write_word_vocabulary(bad, tmp_path / "bad.txt")
        with pytest.raises(ValueError, match="not a word vocabulary"):
            word_vocabulary.WordVocabulary(tmp_path / "bad.txt")


# ---------------------------------------------------------------- streams and windows


def test_token_stream_from_lines_targets_and_characters(tmp_path):
    vocabulary = _vocabulary(tmp_path, ["the cat", "the dog"], vocab_size=4)  # <unk> <eos> the cat
    stream = streams.TokenStream.from_lines(["the cat sat", "", "the  dog", "<unk> cat"])
    assert len(stream) == 12
    # A leading <eos>, then each line's words and its <eos> (an empty line is only its <eos>).
    expected = ["<eos>", "the", "cat", "sat", "<eos>", "<eos>", "the", "dog", "<eos>", "<unk>", "cat", "<eos>"]
    assert stream.spellings[stream.ids].tolist() == expected
    assert stream.spellings.tolist() == ["<eos>", "the", "cat", "sat", "dog", "<unk>"]
    assert stream.ids.dtype == np.int32
    targets = stream.targets(vocabulary)
    np.testing.assert_array_equal(targets, [1, 2, 3, 0, 1, 1, 2, 0, 1, 0, 3, 1])
    # The spelling of an out-of-vocabulary word is kept for the character encoder.
    assert stream.spellings[stream.ids[3]] == "sat" and stream.spellings[stream.ids[7]] == "dog"
    chars = stream.characters(MAX_CHARS)
    assert chars.shape == (6, MAX_CHARS) and chars.dtype == np.int32
    np.testing.assert_array_equal(chars, CharacterTokenizer(MAX_CHARS).encode_words(
        tf.constant(["<eos>", "the", "cat", "sat", "dog", "<unk>"])).numpy())
    assert _spell(chars).tolist() == stream.spellings.tolist()


LINES = ["the cat sat on the mat", "a dog ran", "the dog sat on a log today", "cats nap"]


def _window_batches(dataset):
    return [{key: value.numpy() for key, value in batch.items()} for batch in dataset]


def test_windows_targets_count_cardinality_and_order(tmp_path):
    vocabulary = _vocabulary(tmp_path, LINES[:2], vocab_size=8)  # some words of the stream are <unk>
    stream = streams.TokenStream.from_lines(LINES)
    assert len(stream) == 23
    length, batch_size = 3, 2
    count = (len(stream) - 2) // length
    assert count == 7
    words = stream.spellings[stream.ids]
    targets = stream.targets(vocabulary)
    assert (targets == 0).any()  # <unk> targets are part of the check
    dataset = streams.windows(stream, vocabulary, length=length, max_chars=MAX_CHARS, batch_size=batch_size)
    assert int(dataset.cardinality()) == math.ceil(count / batch_size) == 4
    batches = _window_batches(dataset)
    assert len(batches) == int(dataset.cardinality())
    assert [len(batch["chars"]) for batch in batches] == [2, 2, 2, 1]
    seen = []
    for batch in batches:
        assert batch["chars"].shape[1:] == (length, MAX_CHARS)
        for chars, forward, backward in zip(batch["chars"], batch["forward_targets"], batch["backward_targets"]):
            spelled = _spell(chars).tolist()
            # Find the window's place in the stream from its words (windows start at 1, 1 + length, ...).
            (start,) = [s for s in range(1, len(stream) - length) if words[s:s + length].tolist() == spelled
                        and (s - 1) % length == 0]
            seen.append(start)
            np.testing.assert_array_equal(forward, targets[start + 1:start + 1 + length])
            np.testing.assert_array_equal(backward, targets[start - 1:start - 1 + length])
    # No shuffling: the windows come in stream order, each once.
    assert seen == [1 + length * k for k in range(count)]


def test_windows_shuffle_is_seeded_and_reshuffled_each_epoch(tmp_path):
    lines = [" ".join(f"w{3 * k + i}" for i in range(3)) for k in range(8)]  # distinct words: windows are unique
    vocabulary = _vocabulary(tmp_path, lines)
    stream = streams.TokenStream.from_lines(lines)
    args = dict(length=2, max_chars=MAX_CHARS, batch_size=4)

    def order(dataset):
        return [tuple(row) for batch in dataset for row in batch["forward_targets"].numpy()]

    in_order = order(streams.windows(stream, vocabulary, shuffle_seed=None, **args))
    shuffled = streams.windows(stream, vocabulary, shuffle_seed=3, **args)
    first, second = order(shuffled), order(shuffled)
    assert len(first) == len(in_order) == (len(stream) - 2) // 2
    assert sorted(first) == sorted(second) == sorted(in_order)
    assert first != in_order
    assert first != second  # a new order each epoch
    keras.utils.set_random_seed(0)
    again = streams.windows(stream, vocabulary, shuffle_seed=3, **args)
    assert order(again) == first  # the same seed gives the same epochs
    assert order(again) == second


def test_windows_refuse_a_stream_too_short(tmp_path):
    vocabulary = _vocabulary(tmp_path, LINES)
    stream = streams.TokenStream.from_lines(["a b"])  # <eos> a b <eos>: 4 tokens
    assert len(streams.windows(stream, vocabulary, length=2, max_chars=MAX_CHARS, batch_size=1)) == 1
    with pytest.raises(ValueError, match="too few for one window of 3"):
        streams.windows(stream, vocabulary, length=3, max_chars=MAX_CHARS, batch_size=1)


# ---------------------------------------------------------------- the biLM's causality and padding

PROJECTION, UNITS = 8, 16


def _tiny_model(vocab_size=12, **overrides):
    model = BiLanguageModel(vocab_size, **{"filters": ((1, 4), (2, 4)), "char_embedding_dim": 4,
                                           "projection_dim": PROJECTION, "units": UNITS, "dropout": 0.0,
                                           **overrides})
    model.build({"chars": (None, None, MAX_CHARS)})
    return model


def _halves(layers):
    """Each LSTM layer's forward and backward halves, numpy."""
    return [(np.asarray(layer)[..., :PROJECTION], np.asarray(layer)[..., PROJECTION:]) for layer in layers[1:]]


def _assert_causal(before, after, t):
    for (forward_0, backward_0), (forward_1, backward_1) in zip(_halves(before), _halves(after)):
        np.testing.assert_array_equal(forward_1[:, :t], forward_0[:, :t])
        np.testing.assert_array_equal(backward_1[:, t + 1:], backward_0[:, t + 1:])
        assert np.abs(forward_1[:, t] - forward_0[:, t]).max() > 1e-6
        assert np.abs(backward_1[:, t] - backward_0[:, t]).max() > 1e-6


@pytest.mark.parametrize("t", [0, 3, 6])
def test_encoder_forward_reads_the_past_and_backward_the_future(t):
    encoder = BiLMEncoder(UNITS, PROJECTION, num_layers=2, dropout=0.0)
    inputs = np.random.default_rng(1).normal(size=(2, 7, PROJECTION)).astype("float32")
    changed = inputs.copy()
    changed[:, t] += 1.0
    before, after = encoder(inputs), encoder(changed)
    assert len(before) == 3 and all(layer.shape == (2, 7, 2 * PROJECTION) for layer in before)
    np.testing.assert_array_equal(before[0], np.concatenate([inputs, inputs], -1))
    _assert_causal(before, after, t)


def test_language_model_layers_are_causal_in_words():
    model = _tiny_model()
    tokenizer = CharacterTokenizer(MAX_CHARS)
    before, mask = model.layers_of(tokenizer.tokenize(["the cat sat on the mat"]))
    after, _ = model.layers_of(tokenizer.tokenize(["the cat dog on the mat"]))
    assert np.asarray(mask).all()
    _assert_causal(before, after, 2)
    # The model's outputs are the top layer's halves.
    outputs = model({"chars": tokenizer.tokenize(["the cat sat on the mat"])})
    np.testing.assert_allclose(outputs["forward"], _halves(before)[-1][0], atol=1e-6)
    np.testing.assert_allclose(outputs["backward"], _halves(before)[-1][1], atol=1e-6)


def test_encoder_padding_is_never_read():
    encoder = BiLMEncoder(UNITS, PROJECTION, num_layers=2, dropout=0.0)
    rng = np.random.default_rng(2)
    inputs = rng.normal(size=(2, 7, PROJECTION)).astype("float32")
    mask = np.array([[True] * 7, [True] * 4 + [False] * 3])
    batched = [np.asarray(layer) for layer in encoder(inputs, mask=mask)]
    alone = [np.asarray(layer) for layer in encoder(inputs[1:, :4])]
    noisy = inputs.copy()
    noisy[1, 4:] = rng.normal(size=(3, PROJECTION)) * 10
    renoised = [np.asarray(layer) for layer in encoder(noisy, mask=mask)]
    for layer, single, again in zip(batched, alone, renoised):
        np.testing.assert_allclose(layer[1, :4], single[0], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(layer[1, 4:], 0.0)
        np.testing.assert_array_equal(again, layer)
    # The longer sequence is not touched by the shorter one's padding either.
    full = [np.asarray(layer) for layer in encoder(inputs[:1])]
    for layer, single in zip(batched, full):
        np.testing.assert_allclose(layer[0], single[0], atol=1e-6, rtol=0)


def test_language_model_padding_words_change_nothing():
    model = _tiny_model()
    tokenizer = CharacterTokenizer(MAX_CHARS)
    alone, alone_mask = model.layers_of(tokenizer.tokenize(["a cat sat"]))
    batched, mask = model.layers_of(tokenizer.tokenize(["the big dog ran off fast", "a cat sat"]))
    np.testing.assert_array_equal(mask, [[True] * 6, [True] * 3 + [False] * 3])
    chars = tokenizer.tokenize(["a cat sat"]).numpy()
    padded, _ = model.layers_of(np.concatenate([chars, np.zeros([1, 4, MAX_CHARS], "int32")], axis=1))
    for single, layer, extended in zip(alone, batched, padded):
        single, layer, extended = np.asarray(single), np.asarray(layer), np.asarray(extended)
        np.testing.assert_allclose(layer[1, :3], single[0], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(layer[1, 3:], 0.0)
        np.testing.assert_allclose(extended[0, :3], single[0], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(extended[0, 3:], 0.0)


# ---------------------------------------------------------------- stream perplexity

PPL_LINES = ["the cat sat on the mat", "a dog ran after the cat", "the bird sang", "zebras graze far away",
             "the dog sat", "a cat ran on the mat today", "birds sing"]


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _by_hand(model, stream, vocabulary, direction, parts=None):
    """Perplexity of one direction reading the whole stream in one call per part (each from a zero
    state; default: one part), the full softmax in numpy. `parts`: `(start, end)` input positions."""
    ids, targets = stream.ids, stream.targets(vocabulary)
    if direction == "backward":
        ids, targets = ids[::-1], targets[::-1]
    words = len(ids) - 1
    nll = 0.0
    for start, end in parts or [(0, words)]:
        chars = stream.characters(MAX_CHARS)[ids[start:end]][None]
        vectors, mask = model.tokens(chars)
        outputs, _ = model.encoder.run_direction(direction, vectors, mask)
        log_probs = _log_softmax(np.asarray(model.softmax(outputs[-1]), "float64"))[0]
        nll -= log_probs[np.arange(end - start), targets[start + 1:end + 1]].sum()
    return math.exp(nll / words), nll


@pytest.fixture(scope="module")
def perplexity_setup(tmp_path_factory):
    keras.utils.set_random_seed(0)
    vocabulary = _vocabulary(tmp_path_factory.mktemp("ppl"), PPL_LINES[:4], vocab_size=12)
    assert vocabulary.vocab_size == 12
    stream = streams.TokenStream.from_lines(PPL_LINES)
    assert 38 <= len(stream) <= 45 and (stream.targets(vocabulary) == 0).any()
    return _tiny_model(vocabulary.vocab_size), stream, vocabulary


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_stream_perplexity_carries_the_state_across_segments(perplexity_setup, direction):
    model, stream, vocabulary = perplexity_setup
    expected, nll = _by_hand(model, stream, vocabulary, direction)
    assert 2.0 < expected < 100.0  # random weights: far from certain, far from infinite
    result = language_modeling.stream_perplexity(model, stream, vocabulary, direction=direction, segment=5,
                                                 max_chars=MAX_CHARS)
    assert result["words"] == len(stream) - 1
    assert result["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert result["nll"] == pytest.approx(nll, rel=1e-4)
    for segment in (3, 7):
        other = language_modeling.stream_perplexity(model, stream, vocabulary, direction=direction,
                                                    segment=segment, max_chars=MAX_CHARS)
        assert other["perplexity"] == pytest.approx(expected, rel=1e-4), segment
    words = len(stream) - 1
    for parallel in (2, 3):
        result = language_modeling.stream_perplexity(model, stream, vocabulary, direction=direction, segment=5,
                                                     max_chars=MAX_CHARS, parallel=parallel)
        assert result["words"] == words
        assert math.isfinite(result["perplexity"]) and result["perplexity"] > 1.0
        # Contiguous parts, each from a zero state; the last part also reads the remainder.
        part = words // parallel
        cuts = [(k * part, (k + 1) * part) for k in range(parallel - 1)] + [((parallel - 1) * part, words)]
        assert result["perplexity"] == pytest.approx(_by_hand(model, stream, vocabulary, direction, cuts)[0],
                                                     rel=1e-4), parallel
    assert words % 3 and not words % 2  # parallel=3 leaves a remainder, 2 does not


def test_stream_perplexity_directions_differ_and_metrics_combine_them(perplexity_setup):
    model, stream, vocabulary = perplexity_setup
    forward, forward_nll = _by_hand(model, stream, vocabulary, "forward")
    backward, backward_nll = _by_hand(model, stream, vocabulary, "backward")
    assert abs(forward - backward) > 1e-3
    definition = config.validate({
        "task": "language_modeling", "data": {"format": "text", "train": "unused.txt"},
        "tokenizer": {"vocab_size": 12, "max_chars": MAX_CHARS}, "pipeline": {"window": 4},
        "model": {"filters": [[1, 4], [2, 4]], "projection_dim": PROJECTION, "units": UNITS}})
    metrics = language_modeling.stream_metrics(model, stream, vocabulary, definition)
    assert metrics["words"] == len(stream) - 1 and metrics["eval_streams"] == 1
    assert metrics["perplexity_forward"] == pytest.approx(forward, rel=1e-4)
    assert metrics["perplexity_backward"] == pytest.approx(backward, rel=1e-4)
    words = len(stream) - 1
    assert metrics["perplexity"] == pytest.approx(math.exp((forward_nll + backward_nll) / (2 * words)), rel=1e-4)


def test_stream_perplexity_refuses_more_parts_than_words(perplexity_setup):
    model, _, vocabulary = perplexity_setup
    stream = streams.TokenStream.from_lines(["the cat"])  # 4 tokens, 3 predictions
    with pytest.raises(ValueError, match="cannot be read as 4 parts"):
        language_modeling.stream_perplexity(model, stream, vocabulary, direction="forward", segment=2,
                                            max_chars=MAX_CHARS, parallel=4)


# ---------------------------------------------------------------- definitions

# 4 + 5 + 3 words and three <eos>: a period of 15 tokens, prime to the window of 8, so windows start at
# every phase of the cycle (a period dividing the window would let the model learn positions, not words).
CORPUS = ["the quick fox jumps", "a lazy dog sleeps here", "birds sing loudly"]


def _definition(tmp_path, **sections):
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text("".join(f"{line}\n" for line in CORPUS * 30), encoding="utf-8")
    raw = {
        "task": "language_modeling",
        "seed": 3,
        "data": {"format": "text", "train": "corpus.txt", "validation": "corpus.txt", "test": "corpus.txt"},
        "tokenizer": {"vocab_size": 50, "max_chars": 12},
        "pipeline": {"window": 8, "batch_size": 8},
        "model": {"filters": [[1, 8], [2, 8]], "projection_dim": 16, "units": 32, "dropout": 0.0},
        "train": {"epochs": 10, "learning_rate": 0.01, "early_stopping_patience": 20},
        "base_dir": str(tmp_path),
    }
    for section, values in sections.items():
        raw[section] = values if values is None or not isinstance(raw.get(section), dict) else {
            **raw[section], **values}
    return config.validate({key: value for key, value in raw.items() if value is not None})


@pytest.mark.parametrize("sections, key, reason", [
    ({"model": {"filters": [[1, 8], [13, 8]]}}, "model.filters", "width of 13 does not fit"),
    ({"model": {"units": 32, "hidden": 4}}, "model.hidden", "Extra inputs are not permitted"),
    ({"data": {"format": "csv"}}, "data.format", "text"),
    ({"model": {"filters": [[0, 8]]}}, "model.filters", r"\[width, count\]"),
    ({"tokenizer": {"vocab_size": 2}}, "tokenizer.vocab_size", "greater than or equal to 3"),
    ({"pipeline": {"max_length": 16}}, "pipeline.max_length", "Extra inputs"),
    ({"train": {"decay": 1.5}}, "train.decay", "less than or equal to 1"),
])
def test_configuration_errors_name_the_key(tmp_path, sections, key, reason):
    with pytest.raises(ConfigError, match=reason) as error:
        _definition(tmp_path, **sections)
    assert error.value.key == key, str(error.value)
    assert f": {key}: " in str(error.value)


def test_a_filter_as_wide_as_the_words_is_accepted(tmp_path):
    definition = _definition(tmp_path, model={"filters": [[1, 8], [12, 8]]})
    assert definition.model.filters == ((1, 8), (12, 8))
    model = language_modeling.build_model(definition, 20)
    assert model({"chars": np.ones([1, 3, 12], "int32")})["forward"].shape == (1, 3, 16)



@pytest.mark.parametrize("decay_after, expected", [(None, [0.01] * 4), (2, [0.01, 0.01, 0.005, 0.0025])])
def test_the_learning_rate_decays_each_epoch_after_decay_after(tmp_path, decay_after, expected):
    import types

    definition = _definition(tmp_path, train={"decay_after": decay_after, "decay": 0.5})
    task = language_modeling.LanguageModelingTask()
    model = keras.Sequential([keras.Input([2]), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(definition.train.learning_rate), loss="mse")
    callbacks = keras.callbacks.CallbackList(task.callbacks(types.SimpleNamespace(definition=definition)),
                                             model=model)
    rates = []
    for epoch in range(4):
        callbacks.on_epoch_begin(epoch)
        rates.append(float(model.optimizer.learning_rate))
        callbacks.on_epoch_end(epoch, {"val_loss": 1.0 / (epoch + 1)})  # improving: no plateau halving
    assert rates == pytest.approx(expected)


# ---------------------------------------------------------------- a tiny corpus end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory, seqapp_cache_dir):
    """`(run folder, results)` of the tiny repeated corpus trained once; read it, never write to it."""
    keras.utils.set_random_seed(0)
    tmp_path = tmp_path_factory.mktemp("lm")
    results = runner.train(_definition(tmp_path), tmp_path / "run", verbose=0)
    return tmp_path / "run", results


def test_a_repeated_corpus_is_learned_to_near_one_perplexity(trained):
    work_dir, results = trained
    stream = streams.TokenStream.from_lines(CORPUS * 30)
    for split in ("validation", "test"):
        metrics = results[split]
        assert metrics["words"] == len(stream) - 1, metrics
        assert metrics["perplexity_forward"] < 1.5, metrics
        assert metrics["perplexity_backward"] < 1.5, metrics
        assert 1.0 <= metrics["perplexity"] < 1.5, metrics
    assert (work_dir / "best.keras").is_file()
    words = (work_dir / "words.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert words[:2] == ["<unk>", "<eos>"] and sorted(words[2:]) == sorted({w for l in CORPUS for w in l.split()})
    saved = json.loads((work_dir / "metrics.json").read_text())
    assert saved["test"]["perplexity_forward"] == pytest.approx(results["test"]["perplexity_forward"])


def test_eval_on_a_user_file_prints_its_perplexity(trained, tmp_path, capsys):
    from seqapp.cli import main as cli_main

    work_dir = tmp_path / "run"
    shutil.copytree(trained[0], work_dir)  # eval may write metrics.json; the shared run stays as trained
    (tmp_path / "mine.txt").write_text("the quick fox jumps\na lazy dog sleeps here\n\nunseen words\n",
                                       encoding="utf-8")
    assert cli_main(["eval", "--work-dir", str(work_dir), "--data", str(tmp_path / "mine.txt")]) == 0
    printed = capsys.readouterr().out
    # <eos> + 4 + <eos> + 5 + <eos> + 2 + <eos> = 15 tokens, 14 predicted words; the blank line is skipped.
    match = re.search(r"mine\.txt: perplexity (\d+\.\d\d) \(forward (\d+\.\d\d), backward (\d+\.\d\d); "
                      r"14 words, full softmax, state carried\)", printed)
    assert match, printed
    assert all(1.0 <= float(value) < 1e4 for value in match.groups())
    assert cli_main(["eval", "--work-dir", str(work_dir), "--split", "test"]) == 0
    assert re.search(r"test: perplexity 1\.\d\d \(forward 1\.\d\d, backward 1\.\d\d; ", capsys.readouterr().out)
    assert cli_main(["eval", "--work-dir", str(work_dir), "--beam-size", "2"]) == 2
    assert "--beam-size" in capsys.readouterr().err


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    path = runner.export(trained[0], tmp_path_factory.mktemp("export") / "elmo")
    assert (path / "saved_model.pb").is_file()
    return tf.saved_model.load(str(path))


def test_export_serves_elmo_layers_of_the_right_shapes(exported):
    texts = ["the quick fox jumps", "birds sing", "a lazy dog sleeps here"]
    outputs = exported.signatures["serving_default"](text=tf.constant(texts))
    assert set(outputs) == {"elmo", "word_emb", "lstm_outputs1", "lstm_outputs2", "default", "mask"}
    shapes = {name: tuple(value.shape) for name, value in outputs.items()}
    assert shapes == {"elmo": (3, 5, 32), "word_emb": (3, 5, 16), "lstm_outputs1": (3, 5, 32),
                      "lstm_outputs2": (3, 5, 32), "default": (3, 32), "mask": (3, 5)}
    np.testing.assert_array_equal(outputs["mask"], [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1] * 5])
    for name in ("elmo", "word_emb", "lstm_outputs1", "lstm_outputs2"):
        np.testing.assert_array_equal(outputs[name].numpy()[1, 2:], 0.0)
    # `default` is the mean of `elmo` over each text's words.
    np.testing.assert_allclose(outputs["default"][1], outputs["elmo"].numpy()[1, :2].mean(0), atol=1e-5)


def test_export_tokens_signature_matches_text_and_padding_changes_no_vector(exported):
    serve, tokens = exported.signatures["serving_default"], exported.signatures["tokens"]
    alone = serve(text=tf.constant(["birds sing loudly"]))
    batched = serve(text=tf.constant(["a lazy dog sleeps here and there", "birds sing loudly"]))
    for name in ("elmo", "word_emb", "lstm_outputs1", "lstm_outputs2"):
        np.testing.assert_allclose(batched[name].numpy()[1, :3], alone[name].numpy()[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched["default"].numpy()[1], alone["default"].numpy()[0], atol=1e-5, rtol=0)
    grid = tf.constant([["a", "lazy", "dog", "sleeps", "here", "and", "there"],
                        ["birds", "sing", "loudly", "", "", "", ""]])
    given = tokens(tokens=grid, sequence_len=tf.constant([7, 3], tf.int32))
    assert set(given) == set(batched)
    for name in batched:
        np.testing.assert_allclose(given[name].numpy(), batched[name].numpy(), atol=1e-5, rtol=0, err_msg=name)
    # Words past `sequence_len` are padding whatever they spell.
    cut = tokens(tokens=tf.constant([["birds", "sing", "loudly", "quick", "fox"]]),
                 sequence_len=tf.constant([3], tf.int32))
    np.testing.assert_array_equal(cut["mask"], [[1, 1, 1, 0, 0]])
    np.testing.assert_allclose(cut["elmo"].numpy()[0, :3], alone["elmo"].numpy()[0], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(cut["elmo"].numpy()[0, 3:], 0.0)
