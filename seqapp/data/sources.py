"""Raw examples for a pipeline definition, with the same keys whatever their origin.

A built-in dataset (a TFDS builder in `seqapp.datasets`) and the user's files
give the same elements:

- classification: `{"text": string, "label": int64}`;
- translation: `{"source": string, "target": string}`.
"""

import functools
from pathlib import Path

import numpy as np
import tensorflow as tf

from seqapp import datasets
from seqapp.data import folds
from seqapp.data import readers
from seqapp.errors import ConfigError

SPLITS = ("train", "validation", "test")


def examples(definition, split, fold=None):
    """The `split` ("train", "validation" or "test") of a definition's data, unbatched.

    Args:
        definition: a `Definition`.
        split: "train", "validation" or "test".
        fold: for k-fold cross-validation (k = `definition.train.folds`), the
            fold held out as "test"; fold + 1 (mod k) is "validation" and the
            rest "train". None uses the data's own splits.
    """
    dataset = _split_examples(definition, split, fold)
    limit = definition.data.max_train_examples
    return dataset.take(limit) if split == "train" and limit else dataset


def _split_examples(definition, split, fold):
    data = definition.data
    if split not in SPLITS:
        raise ConfigError(definition.origin, "split", f"unknown split {split!r}; expected one of {SPLITS}")
    if fold is not None:
        return _fold_examples(definition, split, fold)
    if data.dataset is not None:
        return _dataset_examples(definition, split)
    if definition.task == "classification":
        rows = _user_classification_rows(definition, split)
        labels = readers.encode_labels(rows, label_names(definition), path=_user_path(definition, split))
        return tf.data.Dataset.from_tensor_slices(
            {"text": [row["text"] for row in rows], "label": tf.constant(labels, tf.int64)}
        )
    rows = _user_parallel_rows(definition, split)
    return tf.data.Dataset.from_tensor_slices(
        {"source": [row["source"] for row in rows], "target": [row["target"] for row in rows]}
    )


def label_names(definition):
    """Class names in label-id order (classification only)."""
    data = definition.data
    if data.dataset is not None:
        return list(datasets.builder(data.dataset).info.features["label"].names)
    rows = _user_classification_rows(definition, "train")
    return readers.label_vocabulary(rows, path=_user_path(definition, "train"))


def identity(definition):
    """A string naming the training data, for cache keys of what is learned from it."""
    data = definition.data
    limit = f"/first={data.max_train_examples}" if data.max_train_examples else ""
    if data.dataset is not None:
        chosen = f"/splits={data.splits.train}" if data.splits is not None and data.splits.train else ""
        return f"dataset={data.dataset}/{datasets.builder(data.dataset).info.version}{chosen}{limit}"
    path = _user_path(definition, "train")
    stat = Path(path).stat()
    return f"file={path}/{stat.st_size}/{stat.st_mtime_ns}{limit}"


def _fold_examples(definition, split, fold):
    """Cross-validation parts of all labelled examples.

    A dataset that ships folds (MR's `fold` feature, k = 10) is split by them, so
    every user of MR compares on the same folds; otherwise folds are assigned
    with `folds.stratified_folds`.
    """
    if definition.task != "classification":
        raise ConfigError(definition.origin, "train.folds", "cross-validation is for classification")
    k = definition.train.folds
    if not 0 <= fold < k:
        raise ConfigError(definition.origin, "fold", f"fold {fold} is outside 0..{k - 1}")
    texts, labels, shipped = _all_labelled(definition)
    if shipped is not None and shipped.max() + 1 != k:
        raise ConfigError(
            definition.origin, "train.folds", f"{definition.data.dataset} ships {shipped.max() + 1} folds, not {k}"
        )
    assigned = shipped if shipped is not None else folds.stratified_folds(labels, k)
    wanted = {"test": assigned == fold, "validation": assigned == (fold + 1) % k}
    wanted["train"] = ~(wanted["test"] | wanted["validation"])
    keep = wanted[split]
    return tf.data.Dataset.from_tensor_slices(
        {"text": texts[keep], "label": tf.constant(labels[keep], tf.int64)}
    )


@functools.lru_cache(maxsize=4)
def _all_labelled(definition):
    """Texts, labels and shipped folds (or None) of every labelled example of every split."""
    data = definition.data
    if data.dataset is not None:
        builder = datasets.prepare(data.dataset)
        parts = [builder.as_dataset(split=split, shuffle_files=False) for split in builder.info.splits]
    else:
        parts = []
        for split in SPLITS:
            if getattr(data, split) is not None:
                parts.append(examples(definition, split))
    texts, labels, shipped = [], [], []
    for part in parts:
        for example in part.as_numpy_iterator():
            if example["label"] >= 0:  # hidden test labels (-1) cannot be scored
                texts.append(example["text"])
                labels.append(example["label"])
                shipped.append(example.get("fold", -1))
    shipped = np.array(shipped, dtype=np.int64)
    if shipped.size and shipped.min() < 0:
        shipped = None
    return np.array(texts, dtype=object), np.array(labels, dtype=np.int64), shipped


def _dataset_examples(definition, split):
    data = definition.data
    if datasets.TASKS.get(data.dataset) not in (None, definition.task):
        raise ConfigError(
            definition.origin,
            "data.dataset",
            f"{data.dataset} is a {datasets.TASKS[data.dataset]} dataset, not {definition.task}",
        )
    builder = datasets.prepare(data.dataset)
    chosen = getattr(data.splits, split) if data.splits is not None else None
    if chosen is None and split not in builder.info.splits:
        raise ConfigError(definition.origin, "data.dataset", f"{data.dataset} has no {split!r} split")
    try:
        raw = builder.as_dataset(split=chosen or split, shuffle_files=False)
    except ValueError as error:  # TFDS: an unknown split or a malformed slice
        raise ConfigError(definition.origin, f"data.splits.{split}",
                          f"{chosen!r} for {data.dataset}: {error}") from None
    features = builder.info.features
    if definition.task == "classification":
        return raw.map(lambda ex: {"text": ex["text"], "label": ex["label"]})
    for key in ("source", "target"):
        language = getattr(data, key)
        if language not in features:
            raise ConfigError(
                definition.origin, f"data.{key}", f"{language!r} is not in {data.dataset}: {sorted(features.keys())}"
            )
    return raw.map(lambda ex: {"source": ex[data.source], "target": ex[data.target]})


def _user_path(definition, split):
    files = getattr(definition.data, split)
    if files is None:
        raise ConfigError(definition.origin, f"data.{split}", "no file given for this split")
    if isinstance(files, str):
        return str(Path(definition.base_dir, files))
    return str(Path(definition.base_dir, files.source))


@functools.lru_cache(maxsize=16)
def _user_classification_rows(definition, split):
    data = definition.data
    return readers.read_text_classification(
        _user_path(definition, split),
        text_column=data.text_column,
        label_column=data.label_column,
        format=data.format,
        encoding=data.encoding,
    )


@functools.lru_cache(maxsize=16)
def _user_parallel_rows(definition, split):
    data = definition.data
    files = getattr(data, split)
    if isinstance(files, str):
        columns = {"source_column": data.source or "source", "target_column": data.target or "target"}
        return readers.read_parallel(_user_path(definition, split), encoding=data.encoding, **columns)
    return readers.read_parallel(
        Path(definition.base_dir, files.source), Path(definition.base_dir, files.target), encoding=data.encoding
    )
