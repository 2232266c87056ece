"""`seqapp data stats`: counts, length histogram, vocabulary size, padding efficiency."""

import collections

import numpy as np

from seqapp import config
from seqapp import datasets
from seqapp import tasks

def definition_for_dataset(name):
    """The default pipeline definition of a built-in dataset's task, or None (no task reads it yet)."""
    task = tasks.REGISTRY.get(datasets.TASKS.get(name.partition("/")[0]))
    if task is None:
        return None
    return config.validate(task.default_definition(name), source=f"<defaults for {name}>")


def split_counts(name):
    """`{split: {"examples": n, "labels": {label name: n}}}` of a built-in dataset."""
    builder = datasets.prepare(name)
    label_feature = builder.info.features["label"] if "label" in builder.info.features else None
    counts = {}
    for split in builder.info.splits:
        entry = {"examples": builder.info.splits[split].num_examples}
        if label_feature is not None:
            ids = collections.Counter(
                int(ex["label"]) for ex in builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator()
            )
            entry["labels"] = {
                (label_feature.names[i] if i >= 0 else "(hidden)"): n for i, n in sorted(ids.items())
            }
        counts[split] = entry
    return counts


def collect(name, definition=None):
    """Everything `seqapp data stats` shows, as a dict.

    Args:
        name: a built-in dataset name.
        definition: the pipeline definition whose tokenizer and batching are
            measured; defaults to `definition_for_dataset(name)`.
    """
    stats = {"dataset": name, "splits": split_counts(name)}
    definition = definition or definition_for_dataset(name)
    if definition is None:
        return stats
    inputter = tasks.of(definition).inputter(definition)
    stats["vocab_size"] = {field: tok.vocab_size for field, tok in inputter.tokenizers.items()}
    lengths = inputter.train_lengths
    stats["train_lengths"] = {
        "min": int(lengths.min()),
        "mean": float(lengths.mean()),
        "p50": float(np.percentile(lengths, 50)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
    }
    stats["batching"] = inputter.batching_report()
    stats["_lengths"] = lengths
    return stats


def text_histogram(lengths, bins=12, width=40):
    """A histogram as lines of `#`, one line per bin of token counts."""
    counts, edges = np.histogram(lengths, bins=bins)
    top = max(counts.max(), 1)
    lines = []
    for count, low, high in zip(counts, edges[:-1], edges[1:]):
        bar = "#" * int(round(width * count / top))
        lines.append(f"  {low:6.0f}-{high:<6.0f} {count:8d} {bar}")
    return "\n".join(lines)


def format_stats(stats):
    """Human-readable report of `collect`'s dict."""
    lines = [f"dataset: {stats['dataset']}", "splits:"]
    for split, entry in stats["splits"].items():
        labels = entry.get("labels")
        detail = "" if not labels else "  (" + ", ".join(f"{k}: {v}" for k, v in labels.items()) + ")"
        lines.append(f"  {split:<12} {entry['examples']:>8d} examples{detail}")
    if "vocab_size" in stats:
        lines.append("vocabulary: " + ", ".join(f"{k} {v}" for k, v in stats["vocab_size"].items()))
        t, batching = stats["train_lengths"], stats["batching"]
        lines.append(
            f"training lengths (tokens): min {t['min']} mean {t['mean']:.1f} p50 {t['p50']:.0f} "
            f"p90 {t['p90']:.0f} p99 {t['p99']:.0f} max {t['max']} ({batching['limit']})"
        )
        lines.append(text_histogram(stats["_lengths"]))
        lines.extend(batching["lines"])
    else:
        lines.append("(no task pipeline uses this dataset yet: counts only)")
    return "\n".join(lines)
