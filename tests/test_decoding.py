"""Greedy and beam search against plain-Python decoders, brute force and the ops TF Serving runs."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from seqapp.decoding import beam_search
from seqapp.decoding import greedy_search
from seqapp.decoding import length_penalty_weight
from seqapp.decoding import tile_to_beam

END = 1


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


class MarkovModel:
    """`logits = table[previous token] + bias[start token]`; the bias is a rank-3 state tensor."""

    def __init__(self, vocab, seed, end_bias=0.0):
        rng = np.random.default_rng(seed)
        self.table = rng.normal(size=(vocab, vocab)).astype("float32")
        self.table[:, END] += end_bias
        self.bias = rng.normal(size=(vocab, vocab)).astype("float32")

    def initial_state(self, start_ids):
        return {"bias": tf.gather(self.bias, start_ids)[:, tf.newaxis, :]}

    def step_fn(self, ids, step, state):
        assert state["bias"].shape[2] == self.table.shape[1]  # static inner sizes survive the loop
        return tf.gather(self.table, ids) + state["bias"][:, 0, :], state

    def logits(self, prefix):
        """The logits after `prefix` = [start id, generated tokens...]."""
        return self.table[prefix[-1]] + self.bias[prefix[0]]


class HistoryModel:
    """Logits that depend on the whole prefix, read from a state tensor that grows one column per step.

    Beam search must reorder that state with the beams, or the logits come from the wrong prefix.
    """

    buckets = 1009

    def __init__(self, vocab, seed, end_bias=0.0, scale=1.0, max_steps=16):
        rng = np.random.default_rng(seed)
        self.table = (scale * rng.normal(size=(self.buckets, vocab))).astype("float32")
        self.table[:, END] += end_bias
        self.weights = rng.integers(1, self.buckets, size=max_steps + 1).astype("int32")

    def initial_state(self, start_ids):
        return {"history": tf.zeros([tf.shape(start_ids)[0], 0], tf.int32)}

    def step_fn(self, ids, step, state):
        history = tf.concat([state["history"], ids[:, tf.newaxis]], axis=1)
        weights = tf.constant(self.weights)[: step + 1]
        code = tf.reduce_sum(history * weights, axis=1) % self.buckets
        return tf.gather(self.table, code), {"history": history}

    def logits(self, prefix):
        code = int(np.sum(np.asarray(prefix) * self.weights[: len(prefix)])) % self.buckets
        return self.table[code]


def greedy(model, start_ids, max_lengths):
    return greedy_search(
        model.step_fn,
        tf.constant(start_ids, tf.int32),
        model.initial_state(tf.constant(start_ids, tf.int32)),
        end_id=END,
        max_lengths=tf.constant(max_lengths, tf.int32),
    )


def beam(model, start_ids, max_lengths, beam_size, alpha=0.6):
    return beam_search(
        model.step_fn,
        tf.constant(start_ids, tf.int32),
        model.initial_state(tf.constant(start_ids, tf.int32)),
        end_id=END,
        max_lengths=tf.constant(max_lengths, tf.int32),
        beam_size=beam_size,
        length_penalty=alpha,
    )


def rows(result):
    """(tokens, log_prob, score) per row, tokens cut at the row's length."""
    return [
        (list(ids[:length]), log_prob, score)
        for ids, length, log_prob, score in zip(
            result.ids.numpy(), result.lengths.numpy(), result.log_probs.numpy(), result.scores.numpy()
        )
    ]


def reference_greedy(model, start, max_length):
    """Argmax chain until END (dropped, its log-prob counted) or max_length tokens."""
    prefix, log_prob = [start], 0.0
    while len(prefix) - 1 < max_length:
        step = log_softmax(model.logits(prefix))
        token = int(np.argmax(step))
        log_prob += step[token]
        if token == END:
            break
        prefix.append(token)
    return prefix[1:], log_prob


def reference_beam(model, start, max_length, beam_size, alpha):
    """Beam search over Python lists for one example, as `beam_search`'s docstring describes it."""
    beams = [([], 0.0, max_length == 0)]  # (tokens with END, log-prob, finished)
    while not all(finished for _, _, finished in beams):
        candidates = []
        for tokens, log_prob, finished in beams:
            if finished:
                candidates.append((tokens, log_prob, True))
                continue
            for token, token_log_prob in enumerate(log_softmax(model.logits([start] + tokens))):
                extended = tokens + [token]
                candidates.append((extended, log_prob + token_log_prob, token == END or len(extended) == max_length))
        beams = sorted(candidates, key=lambda c: c[1] / ((5 + len(c[0])) / 6) ** alpha, reverse=True)[:beam_size]
    tokens, log_prob, _ = beams[0]
    return [token for token in tokens if token != END], log_prob


def sequence_log_prob(model, start, sequence):
    prefix, log_prob = [start], 0.0
    for token in sequence:
        log_prob += log_softmax(model.logits(prefix))[token]
        prefix.append(token)
    return log_prob


def complete_sequences(vocab, max_length):
    """Every sequence a decode can return: ended by END within max_length, or cut at max_length."""
    others = [token for token in range(vocab) if token != END]
    for length in range(max_length):
        for body in itertools.product(others, repeat=length):
            yield body + (END,)
    yield from itertools.product(others, repeat=max_length)


MODELS = {
    "markov": MarkovModel(vocab=8, seed=2, end_bias=0.5),
    "history": HistoryModel(vocab=8, seed=4, end_bias=0.5),
}
STARTS = [2, 3, 4, 5, 6, 7]
MAX_LENGTHS = [0, 1, 3, 6, 10, 12]


@pytest.mark.parametrize("name", MODELS)
def test_greedy_matches_python_reference(name):
    model = MODELS[name]
    result = greedy(model, STARTS, MAX_LENGTHS)
    expected = [reference_greedy(model, s, n) for s, n in zip(STARTS, MAX_LENGTHS)]
    lengths = [len(tokens) for tokens, _ in expected]
    # Both ways of stopping occur: at END (shorter than allowed) and at the max length.
    assert any(l < n for l, n in zip(lengths, MAX_LENGTHS)) and any(
        0 < l == n for l, n in zip(lengths, MAX_LENGTHS)
    )
    np.testing.assert_array_equal(result.lengths.numpy(), lengths)
    for (tokens, log_prob, score), (want_tokens, want_log_prob) in zip(rows(result), expected):
        assert tokens == want_tokens
        np.testing.assert_allclose(log_prob, want_log_prob, rtol=1e-5)
        assert score == log_prob


@pytest.mark.parametrize("name", MODELS)
def test_beam_size_one_is_greedy(name):
    model = MODELS[name]
    expected = greedy(model, STARTS, MAX_LENGTHS)
    result = beam(model, STARTS, MAX_LENGTHS, beam_size=1)
    np.testing.assert_array_equal(result.ids.numpy(), expected.ids.numpy())
    np.testing.assert_array_equal(result.lengths.numpy(), expected.lengths.numpy())
    np.testing.assert_array_equal(result.log_probs.numpy(), expected.log_probs.numpy())


@pytest.mark.parametrize("beam_size", [2, 4])
@pytest.mark.parametrize("name", MODELS)
def test_beam_search_matches_python_reference(name, beam_size):
    model = MODELS[name]
    result = beam(model, STARTS, MAX_LENGTHS, beam_size=beam_size, alpha=0.6)
    for (tokens, log_prob, score), start, max_length in zip(rows(result), STARTS, MAX_LENGTHS):
        want_tokens, want_log_prob = reference_beam(model, start, max_length, beam_size, alpha=0.6)
        assert tokens == want_tokens
        np.testing.assert_allclose(log_prob, want_log_prob, rtol=1e-5)
        weight = ((5 + len(tokens) + (len(tokens) < max_length)) / 6) ** 0.6  # END counts when produced
        np.testing.assert_allclose(score, log_prob / weight, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_finds_brute_force_best(alpha):
    vocab = 5
    model = HistoryModel(vocab=vocab, seed=4, end_bias=-2.0, scale=3.0)
    starts, max_lengths = [2, 4], [3, 4]
    # 341 = every hypothesis of 4 steps over 4 non-END tokens (85 ended + 256 live): none is pruned.
    result = beam(model, starts, max_lengths, beam_size=341, alpha=alpha)
    for (tokens, log_prob, score), start, max_length in zip(rows(result), starts, max_lengths):
        ranked = sorted(
            (
                (lp / ((5 + len(seq)) / 6) ** alpha, lp, seq)
                for seq in complete_sequences(vocab, max_length)
                for lp in [sequence_log_prob(model, start, seq)]
            ),
            reverse=True,
        )
        (best_score, best_log_prob, best), runner_up = ranked[0], ranked[1]
        assert best_score - runner_up[0] > 1e-4  # a unique best, so the check is meaningful
        assert tokens == [token for token in best if token != END]
        np.testing.assert_allclose([score, log_prob], [best_score, best_log_prob], rtol=1e-5)


def table_model(probs):
    """A Markov step function over `probs[previous token]` (rows sum to 1), and the list of steps it ran."""
    table = tf.math.log(tf.constant(probs, tf.float32))
    calls = []

    def step_fn(ids, step, state):
        calls.append(step)
        return tf.gather(table, ids), state

    return step_fn, calls


@pytest.mark.parametrize("beam_size", [2, 3])
def test_beam_search_escapes_greedy_trap(beam_size):
    # From start 3, greedy takes 2 (p=.5) then END (p=.4): .2; but 0 (p=.4) then END (p=.9) is .36.
    step_fn, calls = table_model([[0.05, 0.9, 0.04, 0.01], [0.25] * 4, [0.3, 0.4, 0.2, 0.1], [0.4, 0.05, 0.5, 0.05]])
    kwargs = dict(end_id=END, max_lengths=tf.constant([10]))
    greedy_result = greedy_search(step_fn, tf.constant([3]), {}, **kwargs)
    greedy_steps = len(calls)
    beam_result = beam_search(step_fn, tf.constant([3]), {}, beam_size=beam_size, length_penalty=0.0, **kwargs)
    assert rows(greedy_result)[0][0] == [2]
    assert rows(beam_result)[0][0] == [0]
    np.testing.assert_allclose(greedy_result.log_probs.numpy(), [np.log(0.5 * 0.4)], rtol=1e-5)
    np.testing.assert_allclose(beam_result.log_probs.numpy(), [np.log(0.4 * 0.9)], rtol=1e-5)
    # Both stop once every hypothesis has ended, long before the max length of 10
    # (the third beam, 2 0 at p=.15, needs one more step to end).
    assert (greedy_steps, len(calls) - greedy_steps) == (2, beam_size)


@pytest.mark.parametrize("alpha, expected", [(0.0, []), (1.0, [2])])
def test_length_penalty_counts_the_new_token(alpha, expected):
    # From start 3: END at once has log-prob -1 (weight 1); 2 then END has -1.09, weight
    # 7/6 with alpha 1, so -0.93: it wins only if the END it ends with is counted.
    step_fn, _ = table_model([[0.25] * 4, [0.25] * 4, [0.01, 0.56, 0.01, 0.42], [0.01, np.exp(-1), 0.6, 0.0221]])
    result = beam_search(
        step_fn, tf.constant([3]), {}, end_id=END, max_lengths=tf.constant([10]), beam_size=2, length_penalty=alpha
    )
    assert rows(result)[0][0] == expected


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("name", MODELS)
def test_rows_are_decoded_independently(name, search):
    model = MODELS[name]
    decode = greedy if search == "greedy" else lambda *args: beam(*args, beam_size=3)
    together = rows(decode(model, STARTS, MAX_LENGTHS))
    for row, start, max_length in zip(together, STARTS, MAX_LENGTHS):
        (tokens, log_prob, score), = rows(decode(model, [start], [max_length]))
        assert row[0] == tokens
        np.testing.assert_allclose(row[1:], [log_prob, score], rtol=1e-5)


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("name", MODELS)
def test_ids_hold_no_end_and_zeros_after_length(name, search):
    model = MODELS[name]
    result = greedy(model, STARTS, MAX_LENGTHS) if search == "greedy" else beam(model, STARTS, MAX_LENGTHS, 3)
    ids, lengths = result.ids.numpy(), result.lengths.numpy()
    assert np.any(lengths < MAX_LENGTHS)  # some END was produced and dropped
    assert ids.shape == (len(STARTS), lengths.max())
    assert not np.any(ids == END)
    assert not np.any(ids[np.arange(ids.shape[1]) >= lengths[:, None]])


def test_zero_max_lengths_give_empty_rows():
    for result in [greedy(MODELS["history"], [2, 3], [0, 0]), beam(MODELS["history"], [2, 3], [0, 0], 4)]:
        assert result.ids.shape == (2, 0)
        np.testing.assert_array_equal(result.lengths.numpy(), [0, 0])
        np.testing.assert_array_equal(result.log_probs.numpy(), [0.0, 0.0])


def test_helpers():
    np.testing.assert_array_equal(tile_to_beam(tf.constant([[1, 2], [3, 4]]), 2).numpy(), [[1, 2], [1, 2], [3, 4], [3, 4]])
    np.testing.assert_allclose(length_penalty_weight(tf.constant([1, 7]), 0.6).numpy(), [1.0, 2.0**0.6], rtol=1e-6)
    np.testing.assert_array_equal(length_penalty_weight(tf.constant([1, 7]), 0.0).numpy(), [1.0, 1.0])


def graph_op_types(concrete):
    graph_def = concrete.graph.as_graph_def()
    functions = graph_def.library.function
    return {node.op for node in graph_def.node} | {node.op for f in functions for node in f.node_def}


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("name", MODELS)
def test_traced_search_uses_only_core_ops_and_matches_eager(name, search):
    model = MODELS[name]
    spec = tf.TensorSpec([None], tf.int32)

    @tf.function(input_signature=[spec, spec], jit_compile=False)
    def decode(start_ids, max_lengths):
        state = model.initial_state(start_ids)
        if search == "greedy":
            return greedy_search(model.step_fn, start_ids, state, end_id=END, max_lengths=max_lengths)
        return beam_search(model.step_fn, start_ids, state, end_id=END, max_lengths=max_lengths, beam_size=3)

    ops = graph_op_types(decode.get_concrete_function())
    assert ops & {"While", "StatelessWhile"}  # the loop body's ops are among those collected
    assert not [op for op in ops if op.startswith(("Xla", "Cudnn", "Addons>")) or op == "GatherTree"]
    assert [op for op in ops if not hasattr(tf.raw_ops, op)] == []

    eager = greedy if search == "greedy" else lambda *args: beam(*args, beam_size=3)
    for batch, limits in [(STARTS, MAX_LENGTHS), (STARTS[4:], MAX_LENGTHS[4:])]:  # two batch sizes, one trace
        traced = decode(tf.constant(batch), tf.constant(limits))
        expected = eager(model, batch, limits)
        for got, want in zip(traced, expected):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    assert decode.experimental_get_tracing_count() == 1
