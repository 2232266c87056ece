"""The user's own files through a pipeline definition: same batches as built-in data, errors at the edge."""

import numpy as np
import pytest

from seqapp import config
from seqapp.errors import ConfigError
from seqapp.errors import DataError
from seqapp import tasks
from seqapp.tokenizers import wordpiece

HEADER = "text,label\n"
ROWS = """a wonderful heartfelt film,positive
dull and lifeless,negative
"it's fine, i guess",neutral
a triumph of acting,positive
boring boring boring,negative
neither good nor bad,neutral
"""


def _inputter(definition):
    return tasks.of(definition).inputter(definition)


def _classification(tmp_path, train=HEADER + ROWS * 20, test="text,label\na wonderful film,positive\n"):
    (tmp_path / "train.csv").write_text(train)
    (tmp_path / "test.csv").write_text(test)
    (tmp_path / "def.yaml").write_text(
        "task: classification\n"
        "data: {format: csv, train: train.csv, test: test.csv}\n"
        "tokenizer: {vocab_size: 200}\n"
        "pipeline: {max_length: 16, tokens_per_batch: 64}\n"
    )
    return _inputter(config.load_definition(tmp_path / "def.yaml"))


def test_user_csv_gives_labelled_batches(tmp_path, seqapp_cache_dir):
    inputter = _classification(tmp_path)
    assert inputter.label_names == ["negative", "neutral", "positive"]
    labels = []
    for features, batch_labels in inputter.dataset("train", training=True).as_numpy_iterator():
        np.testing.assert_array_equal(features["padding_mask"], features["token_ids"] != 0)
        labels.extend(batch_labels.tolist())
    assert sorted(labels) == sorted([2, 0, 1, 2, 0, 1] * 20)
    (test_labels,) = [labels for _, labels in inputter.dataset("test", training=False).as_numpy_iterator()]
    assert test_labels.tolist() == [2]
    # The test text's words all occur in train (20 times each): the vocabulary learned from train holds
    # each as a whole token, and the test batch goes through that same tokenizer.
    tokenizer = inputter.tokenizers["text"]
    [(test_features, _)] = list(inputter.dataset("test", training=False).as_numpy_iterator())
    assert tokenizer.id_to_token(test_features["token_ids"]).numpy().tolist() == [[b"a", b"wonderful", b"film"]]
    assert tokenizer.detokenize(test_features["token_ids"]).numpy().tolist() == [b"a wonderful film"]


def test_malformed_user_row_names_file_and_line(tmp_path, seqapp_cache_dir):
    inputter = _classification(tmp_path, train="text,label\nfine,positive\n\"unclosed,negative\n")
    with pytest.raises(DataError) as raised:
        inputter.dataset("train", training=True)
    assert raised.value.path.endswith("train.csv") and raised.value.line == 3


def test_label_only_in_test_split_is_an_error(tmp_path, seqapp_cache_dir):
    inputter = _classification(tmp_path, test="text,label\nok then,mixed\n")
    with pytest.raises(DataError, match="mixed") as raised:
        inputter.dataset("test", training=False)
    assert raised.value.path.endswith("test.csv") and raised.value.line == 2


def test_missing_split_file_is_a_config_error(tmp_path, seqapp_cache_dir):
    inputter = _classification(tmp_path)
    with pytest.raises(ConfigError, match="data.validation"):
        inputter.dataset("validation", training=False)


def test_user_parallel_files_give_teacher_forcing_batches(tmp_path, seqapp_cache_dir):
    pairs = [("ein Hund läuft", "a dog runs"), ("eine Katze schläft", "a cat sleeps"), ("Kinder spielen", "children play")]
    (tmp_path / "train.de").write_text("\n".join(p[0] for p in pairs * 10) + "\n")
    (tmp_path / "train.en").write_text("\n".join(p[1] for p in pairs * 10) + "\n")
    definition = config.validate(
        {"task": "translation",
         "data": {"format": "parallel", "train": {"source": "train.de", "target": "train.en"},
                  "source": "de", "target": "en"},
         "tokenizer": {"vocab_size": 100, "lower_case": False, "normalization_form": "NFC", "shared": True},
         "base_dir": str(tmp_path)})
    inputter = _inputter(definition)
    assert inputter.tokenizers["source"] is inputter.tokenizers["target"]
    count = 0
    for features, targets in inputter.dataset("train", training=True).as_numpy_iterator():
        assert (features["decoder_token_ids"][:, 0] == wordpiece.START_ID).all()
        count += len(targets)
    assert count == 30
    target_text = inputter.tokenizers["target"].detokenize(targets[:1]).numpy()[0].decode()
    assert target_text in {p[1] for p in pairs}


def test_dataset_that_does_not_fit_the_task(seqapp_cache_dir, shared_data_dir):
    definition = config.validate({"task": "translation", "data": {"dataset": "sst2", "source": "a", "target": "b"}})
    with pytest.raises(ConfigError, match="classification dataset"):
        _inputter(definition).examples("train")
    definition = config.validate({"task": "translation", "data": {"dataset": "multi30k", "source": "fr", "target": "en"}})
    with pytest.raises(ConfigError, match="data.source"):
        _inputter(definition).examples("train")


def test_max_train_examples_takes_a_slice_of_train_only(tmp_path, seqapp_cache_dir):
    from seqapp.data import sources

    full = _classification(tmp_path).definition
    sliced = full.model_copy(update={"data": full.data.model_copy(update={"max_train_examples": 5})})
    assert len(list(_inputter(sliced).examples("train"))) == 5
    assert [ex["text"] for ex in _inputter(sliced).examples("train").as_numpy_iterator()] == \
        [ex["text"] for ex in _inputter(full).examples("train").take(5).as_numpy_iterator()]
    assert len(list(_inputter(sliced).examples("test"))) == 1
    assert sources.identity(sliced) != sources.identity(full)  # a vocabulary learned on the slice is its own


def test_data_splits_choose_among_the_dataset_splits(seqapp_cache_dir, shared_data_dir):
    from seqapp.data import sources

    def rows(definition, split, take=-1):
        return sorted((ex["text"], int(ex["label"]))
                      for ex in _inputter(definition).examples(split).take(take).as_numpy_iterator())

    def count(definition, split):
        return int(_inputter(definition).examples(split).reduce(0, lambda n, _: n + 1))

    # A slice of train plus all of validation (not all of train: 67,349 rows cost seconds a pass, and the
    # split syntax is the same): exactly those examples, each once.
    own = config.validate({"task": "classification", "data": {"dataset": "sst2"}})
    chosen = config.validate({"task": "classification", "data": {
        "dataset": "sst2", "splits": {"train": "train[:1000]+validation", "validation": "validation[:100]"}}})
    validation = rows(own, "validation")
    assert len(validation) == 872
    assert rows(chosen, "train") == sorted(rows(own, "train", take=1000) + validation)
    assert rows(chosen, "validation") == rows(own, "validation", take=100)
    assert count(chosen, "test") == count(own, "test") == 1821  # not named: the dataset's own
    assert sources.identity(chosen) != sources.identity(own)  # a vocabulary learned on other data is its own


@pytest.mark.parametrize("splits, key, message", [
    ({"validation": "dev"}, "data.splits.validation", "Unknown split 'dev'"),
    ({"train": "train[:200%]"}, "data.splits.train", "percent slice boundaries"),
])
def test_a_dataset_split_that_does_not_exist_is_a_config_error(seqapp_cache_dir, shared_data_dir, splits, key,
                                                               message):
    definition = config.validate({"task": "classification", "data": {"dataset": "sst2", "splits": splits}})
    with pytest.raises(ConfigError, match=message) as error:
        _inputter(definition).examples(key.rsplit(".", 1)[1])
    assert key in str(error.value)
