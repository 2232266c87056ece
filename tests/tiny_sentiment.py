"""The tiny sentiment data and definition the tests train on (a module, not fixtures, so test files
can build variants of it)."""

from seqapp import config

POSITIVE = ["a wonderful heartfelt film", "a triumph of acting", "truly great and moving", "i loved every minute",
            "brilliant clever and funny", "a delightful surprise"]
NEGATIVE = ["dull and lifeless", "boring boring boring", "a tedious mess", "i hated every minute",
            "clumsy stupid and slow", "a dreadful bore"]


def write_csv(path, rows):
    path.write_text("text,label\n" + "".join(f'"{text}",{label}\n' for text, label in rows))
    return path


def definition(tmp_path, **sections):
    """A BiLSTM on 48 training rows (labels neg/pos) with six-row dev and test files in `tmp_path`;
    `sections` update the definition's sections."""
    write_csv(tmp_path / "train.csv", [(t, "pos") for t in POSITIVE] * 4 + [(t, "neg") for t in NEGATIVE] * 4)
    write_csv(tmp_path / "dev.csv", [(t, "pos") for t in POSITIVE[:3]] + [(t, "neg") for t in NEGATIVE[:3]])
    write_csv(tmp_path / "test.csv", [(t, "pos") for t in POSITIVE[3:]] + [(t, "neg") for t in NEGATIVE[3:]])
    raw = {
        "task": "classification",
        "seed": 3,
        "data": {"format": "csv", "train": "train.csv", "validation": "dev.csv", "test": "test.csv"},
        "tokenizer": {"vocab_size": 200},
        "pipeline": {"max_length": 16, "tokens_per_batch": 64, "num_buckets": 4},
        "model": {"family": "bilstm", "embedding_dim": 16, "units": 16, "dropout": 0.0},
        "train": {"epochs": 25, "learning_rate": 0.01, "early_stopping_patience": 25},
        "base_dir": str(tmp_path),
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return config.validate(raw)
