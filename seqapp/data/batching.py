"""Length bucketing: boundaries from length quantiles, batch sizes from a token budget.

Padding a batch to its longest member wastes compute on every shorter member;
grouping examples of similar length first keeps that waste small. The padded
tokens of a batch stay under `tokens_per_batch`, so short buckets get large
batches and long buckets small ones.
"""

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Bucket `i` holds lengths in `[boundaries[i-1], boundaries[i])`; the last
    bucket holds `[boundaries[-1], max_length]`.

    Attributes:
        boundaries: increasing exclusive upper bounds, as
            `tf.data.Dataset.bucket_by_sequence_length` takes them.
        batch_sizes: one per bucket (`len(boundaries) + 1` of them).
        max_length: the longest length any element may have.
    """

    boundaries: tuple
    batch_sizes: tuple
    max_length: int

    def bounds(self, index):
        """The inclusive `(lowest, highest)` length of bucket `index`."""
        lows = (0,) + self.boundaries
        highs = tuple(b - 1 for b in self.boundaries) + (self.max_length,)
        return lows[index], highs[index]

    def bucket_of(self, length):
        return int(np.searchsorted(self.boundaries, length, side="right"))


def fit_buckets(lengths, *, num_buckets, max_length, tokens_per_batch, max_batch_size=None):
    """Chooses bucket boundaries at length quantiles and per-bucket batch sizes.

    Args:
        lengths: lengths of the training examples (after truncation).
        num_buckets: the most buckets to make; fewer result when quantiles
            coincide (many short sentences of equal length).
        max_length: the longest allowed length; no element may exceed it.
        tokens_per_batch: budget on a batch's padded size
            (batch size times the bucket's longest length).
        max_batch_size: an optional cap on any bucket's batch size.

    Returns:
        A `Buckets`.

    Example:
    >>> fit_buckets([3, 5, 8, 9, 20], num_buckets=2, max_length=32, tokens_per_batch=64)
    Buckets(boundaries=(9,), batch_sizes=(8, 2), max_length=32)
    """
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        raise ValueError("cannot fit buckets to an empty dataset")
    if lengths.max() > max_length:
        raise ValueError(f"an example of length {lengths.max()} exceeds max_length={max_length}")
    quantiles = np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:-1], method="lower")
    # A boundary b closes a bucket of lengths < b, so a quantile q becomes q + 1.
    boundaries = tuple(sorted({int(q) + 1 for q in quantiles if 0 < q + 1 <= max_length}))
    buckets = Buckets(boundaries, (), max_length)
    sizes = []
    for index in range(len(boundaries) + 1):
        longest = max(1, buckets.bounds(index)[1])
        size = max(1, tokens_per_batch // longest)
        sizes.append(min(size, max_batch_size) if max_batch_size else size)
    return dataclasses.replace(buckets, batch_sizes=tuple(sizes))


def bucket_by_length(dataset, buckets, length_fn, *, drop_remainder=False):
    """Batches `dataset` by length bucket, padding each batch to its own longest member.

    Args:
        dataset: elements of variable-length int tensors.
        buckets: a `Buckets` from `fit_buckets`.
        length_fn: element -> scalar int32 length used for bucketing.
        drop_remainder: drop each bucket's last partial batch.

    Returns:
        A dataset of padded batches (padding value 0).
    """
    # pad_to_bucket_boundary stays False: padding to the batch's own max wastes
    # less and never trips over elements at the last boundary.
    return dataset.bucket_by_sequence_length(
        element_length_func=length_fn,
        bucket_boundaries=list(buckets.boundaries),
        bucket_batch_sizes=list(buckets.batch_sizes),
        pad_to_bucket_boundary=False,
        drop_remainder=drop_remainder,
    )


def count_batches(lengths, *, buckets=None, batch_size=None, drop_remainder=False):
    """How many batches `bucket_by_length` (with `buckets`) or a plain `padded_batch` (with
    `batch_size`) makes of examples of these lengths, in whatever order they come.

    Each bucket is batched on its own and its last partial batch flushed at the end,
    so the count depends only on how many examples fall in each bucket. Keras shows
    steps and an ETA only for a dataset whose cardinality is known.

    Example:
    >>> count_batches([3, 5, 8, 9, 20], buckets=Buckets((9,), (8, 2), 32))
    2
    """
    lengths = np.asarray(lengths)
    if buckets is None:
        counts, sizes = np.array([lengths.size]), np.array([batch_size])
    else:
        counts = np.bincount(np.searchsorted(buckets.boundaries, lengths, side="right"),
                             minlength=len(buckets.batch_sizes))
        sizes = np.array(buckets.batch_sizes)
    per_bucket = counts // sizes if drop_remainder else -(-counts // sizes)
    return int(per_bucket.sum())
