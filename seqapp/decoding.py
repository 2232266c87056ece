"""In-graph greedy and beam search over any step function.

Both searches are built from core TensorFlow ops only (`tf.while_loop`,
`tf.gather`, `tf.concat`, `tf.math.top_k`): no XLA op, no ragged tensor and
no `tensorflow_addons`, so a SavedModel that decodes with them runs on the
stock TensorFlow Serving CPU server. They run eagerly or inside
`tf.function(input_signature=...)` with a dynamic batch dimension.

A model plugs in through a step function
`step_fn(ids, step, state) -> (logits, new_state)`:

- `ids`: int32 `[N]`, the previous token of each hypothesis (the start id at
  step 0);
- `step`: int32 scalar, the 0-based position being generated;
- `state`: a dict `{name: tensor}`, every tensor with leading dimension `N`;
  tensors may grow along axis 1 from step to step (a key/value cache gains
  one position per step); their other axes keep their size;
- `logits`: float `[N, vocab]`, unnormalized; `new_state`: a dict with the
  same keys.
"""

from typing import NamedTuple

import tensorflow as tf


class DecodeResult(NamedTuple):
    """What a search returns, one row per example.

    Attributes:
        ids: int32 `[batch, T]`, the generated tokens without the end token,
            0 after each row's length; `T` is the longest row's length and
            may be 0.
        lengths: int32 `[batch]`, the number of tokens of each row of `ids`.
        scores: float32 `[batch]`, what the hypothesis was ranked by: its
            log-probability for greedy search, its length-penalized
            log-probability for beam search.
        log_probs: float32 `[batch]`, the sum of the token log-probabilities
            of the hypothesis, the end token's included when it was produced.
    """

    ids: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor
    log_probs: tf.Tensor


def length_penalty_weight(lengths, alpha):
    """GNMT length penalty `((5 + lengths) / 6) ** alpha` (Wu et al., 2016).

    A beam's score is its log-probability divided by this weight, so that
    longer hypotheses are not ruled out merely for having more negative terms.

    Args:
        lengths: integer or float tensor, the number of generated tokens
            (end token included).
        alpha: float, the strength of the penalty; 0 gives a weight of 1.

    Returns:
        A float32 tensor shaped like `lengths`.

    Example:

    >>> float(length_penalty_weight(7, 0.6))
    1.5157...
    """
    lengths = tf.cast(lengths, tf.float32)
    return ((5.0 + lengths) / 6.0) ** alpha


def tile_to_beam(tensor, beam_size):
    """Repeats each row `beam_size` times, the copies of a row adjacent.

    Args:
        tensor: a tensor of shape `[batch, ...]`.
        beam_size: int, the number of copies of each row.

    Returns:
        A tensor of shape `[batch * beam_size, ...]` whose row
        `i * beam_size + b` is row `i` of `tensor`.

    Example:

    >>> tile_to_beam(tf.constant([[1, 2], [3, 4]]), 2).numpy()
    array([[1, 2],
           [1, 2],
           [3, 4],
           [3, 4]], dtype=int32)
    """
    return tf.repeat(tensor, beam_size, axis=0)


def greedy_search(step_fn, start_ids, state, *, end_id, max_lengths):
    """Decodes by taking the most probable token at every step.

    A row stops at the end token or after `max_lengths[i]` tokens, whichever
    comes first; the loop stops when every row has stopped.

    Args:
        step_fn: `(ids, step, state) -> (logits, new_state)`, see the module
            docstring.
        start_ids: int32 `[batch]`, the first input token of each row.
        state: dict of tensors with leading dimension `batch`, the state
            before the first step.
        end_id: int, the end token.
        max_lengths: int32 `[batch]`, the most tokens each row may generate;
            0 gives an empty row.

    Returns:
        A `DecodeResult`; `scores` equals `log_probs`.

    Example:

    >>> table = tf.math.log(tf.constant(
    ...     [[.25, .25, .25, .25], [.9, .05, .04, .01], [.4, .3, .2, .1], [.05, .4, .5, .05]]))
    >>> step_fn = lambda ids, step, state: (tf.gather(table, ids), state)
    >>> result = greedy_search(step_fn, tf.constant([3]), {}, end_id=0,
    ...                        max_lengths=tf.constant([5]))
    >>> result.ids.numpy(), result.lengths.numpy()  # 2 then the end: p = .5 * .4
    (array([[2]], dtype=int32), array([1], dtype=int32))
    """
    start_ids = tf.convert_to_tensor(start_ids, tf.int32)
    max_lengths = tf.convert_to_tensor(max_lengths, tf.int32)
    batch = tf.shape(start_ids)[0]

    def body(step, prev_ids, ids, lengths, log_probs, ended, state):
        finished = ended | (lengths >= max_lengths)
        logits, state = step_fn(prev_ids, step, state)
        step_log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        tokens = tf.argmax(step_log_probs, axis=-1, output_type=tf.int32)
        token_log_probs = tf.gather(step_log_probs, tokens, batch_dims=1)
        tokens = tf.where(finished, 0, tokens)
        log_probs += tf.where(finished, 0.0, token_log_probs)
        lengths += tf.cast(~finished, tf.int32)
        ended |= ~finished & (tokens == end_id)
        ids = tf.concat([ids, tokens[:, tf.newaxis]], axis=1)
        return step + 1, tokens, ids, lengths, log_probs, ended, state

    ids, lengths, log_probs, ended = _decode_loop(
        body, start_ids, state, max_lengths, tf.zeros([batch], tf.float32)
    )
    ids, lengths = _strip_end(ids, lengths, ended)
    return DecodeResult(ids, lengths, log_probs, log_probs)


def beam_search(
    step_fn, start_ids, state, *, end_id, max_lengths, beam_size, length_penalty=0.6
):
    """Decodes by keeping the `beam_size` best hypotheses of each example.

    Every step extends each live hypothesis by every token; a finished one
    (ended, or at its example's `max_lengths`) only carries on unchanged. Of
    these `beam_size * vocab` candidates the `beam_size` with the best
    length-penalized score `log_prob / length_penalty_weight(length, alpha)`
    survive, `length` counting the end token. The state and the token history
    follow their surviving parents with `tf.gather`. The loop stops when every
    hypothesis has finished, and the best one of each example is returned.
    With `beam_size=1` this is `greedy_search`.

    Args:
        step_fn: `(ids, step, state) -> (logits, new_state)`, see the module
            docstring; it sees `batch * beam_size` hypotheses, those of an
            example adjacent.
        start_ids: int32 `[batch]`, the first input token of each example.
        state: dict of tensors with leading dimension `batch` (untiled; this
            function tiles them with `tile_to_beam`).
        end_id: int, the end token.
        max_lengths: int32 `[batch]`, the most tokens each example may
            generate; 0 gives an empty row.
        beam_size: int, the number of hypotheses kept per example.
        length_penalty: float, the `alpha` of `length_penalty_weight`.

    Returns:
        A `DecodeResult` of the best hypothesis of each example; `scores` is
        its length-penalized score.

    Example:

    >>> table = tf.math.log(tf.constant(
    ...     [[.25, .25, .25, .25], [.9, .05, .04, .01], [.4, .3, .2, .1], [.05, .4, .5, .05]]))
    >>> step_fn = lambda ids, step, state: (tf.gather(table, ids), state)
    >>> result = beam_search(step_fn, tf.constant([3]), {}, end_id=0,
    ...                      max_lengths=tf.constant([5]), beam_size=2,
    ...                      length_penalty=0.0)
    >>> result.ids.numpy(), result.lengths.numpy()  # 1 then the end: p = .4 * .9
    (array([[1]], dtype=int32), array([1], dtype=int32))
    """
    start_ids = tf.convert_to_tensor(start_ids, tf.int32)
    max_lengths = tf.convert_to_tensor(max_lengths, tf.int32)
    batch = tf.shape(start_ids)[0]
    # Only the first beam of an example is alive at first, else the beams
    # would all pick the same tokens.
    first_beam_only = tf.constant([0.0] + [float("-inf")] * (beam_size - 1))
    initial_log_probs = tf.tile(first_beam_only, [batch])
    beam_max_lengths = tile_to_beam(max_lengths, beam_size)
    parent_offsets = tf.range(batch)[:, tf.newaxis] * beam_size

    def body(step, prev_ids, ids, lengths, log_probs, ended, state):
        finished = ended | (lengths >= beam_max_lengths)
        logits, state = step_fn(prev_ids, step, state)
        step_log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        vocab_size = tf.shape(step_log_probs)[1]
        # A finished beam has a single candidate, a free pad (token 0).
        pad_only = tf.one_hot(0, vocab_size, on_value=0.0, off_value=float("-inf"))
        step_log_probs = tf.where(finished[:, tf.newaxis], pad_only, step_log_probs)
        candidate_log_probs = log_probs[:, tf.newaxis] + step_log_probs
        weights = length_penalty_weight(lengths + tf.cast(~finished, tf.int32), length_penalty)
        scores = candidate_log_probs / weights[:, tf.newaxis]
        best = tf.math.top_k(tf.reshape(scores, [batch, beam_size * vocab_size]), beam_size).indices
        log_probs = tf.gather(
            tf.reshape(candidate_log_probs, [batch, beam_size * vocab_size]), best, batch_dims=1
        )
        log_probs = tf.reshape(log_probs, [-1])
        parents = tf.reshape(best // vocab_size + parent_offsets, [-1])
        tokens = tf.reshape(best % vocab_size, [-1])

        parent_finished = tf.gather(finished, parents)
        lengths = tf.gather(lengths, parents) + tf.cast(~parent_finished, tf.int32)
        ended = tf.gather(ended, parents) | (~parent_finished & (tokens == end_id))
        ids = tf.concat([tf.gather(ids, parents), tokens[:, tf.newaxis]], axis=1)
        state = tf.nest.map_structure(lambda tensor: tf.gather(tensor, parents), state)
        return step + 1, tokens, ids, lengths, log_probs, ended, state

    ids, lengths, log_probs, ended = _decode_loop(
        body,
        tile_to_beam(start_ids, beam_size),
        tf.nest.map_structure(lambda tensor: tile_to_beam(tensor, beam_size), state),
        beam_max_lengths,
        initial_log_probs,
    )
    # top_k sorts the beams of an example by score, so the first is the best;
    # before any step, the first is the only live one.
    best = tf.range(batch) * beam_size
    log_probs, lengths = tf.gather(log_probs, best), tf.gather(lengths, best)
    scores = log_probs / length_penalty_weight(lengths, length_penalty)
    ids, lengths = _strip_end(tf.gather(ids, best), lengths, tf.gather(ended, best))
    return DecodeResult(ids, lengths, scores, log_probs)


def _decode_loop(body, start_ids, state, max_lengths, initial_log_probs):
    """Runs `body` from empty hypotheses until all are finished.

    Returns the final `(ids, lengths, log_probs, ended)`, lengths counting
    the end token.
    """
    rows = tf.shape(start_ids)[0]
    steps = tf.maximum(tf.reduce_max(max_lengths), 0)  # reduce_max of [] is INT_MIN

    def cond(step, prev_ids, ids, lengths, log_probs, ended, state):
        return (step < steps) & ~tf.reduce_all(ended | (lengths >= max_lengths))

    loop_vars = (
        tf.constant(0),
        start_ids,
        tf.zeros([rows, 0], tf.int32),
        tf.zeros([rows], tf.int32),
        initial_log_probs,
        tf.zeros([rows], tf.bool),
        tf.nest.map_structure(tf.convert_to_tensor, state),
    )
    # Rows and axis 1 (a growing cache) vary; the static size of the other
    # axes is kept, as the model's layers may need it to trace.
    invariants = tf.nest.map_structure(
        lambda t: tf.TensorShape([None] * min(t.shape.rank, 2)).concatenate(t.shape[2:]), loop_vars
    )
    _, _, ids, lengths, log_probs, ended, _ = tf.while_loop(
        cond, body, loop_vars, shape_invariants=invariants
    )
    return ids, lengths, log_probs, ended


def _strip_end(ids, lengths, ended):
    """Drops the end token: lengths without it, ids zeroed from it on and cut
    to the longest row."""
    lengths -= tf.cast(ended, tf.int32)
    width = tf.maximum(tf.reduce_max(lengths), 0)
    return ids[:, :width] * tf.sequence_mask(lengths, width, dtype=tf.int32), lengths
