"""Pipeline definitions: every shipped file validates; bad keys and types are named with the file."""

from pathlib import Path

import pytest

from seqapp import config
from seqapp.errors import ConfigError

PIPELINES = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_pipelines_validate(path):
    definition = config.load_definition(path)
    assert definition.origin == str(path)
    assert definition.base_dir == str(path.parent)
    if getattr(definition.train, "init_from", None) is not None:  # it starts from a shipped definition too
        assert Path(definition.base_dir, definition.train.init_from) in PIPELINES


def _write(tmp_path, text):
    path = tmp_path / "def.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("task: classification\ndata: {dataset: sst2}\ntokenizer: {vocab_szie: 100}\n",
         "tokenizer.vocab_szie", "Extra inputs"),
        ("task: classification\ndata: {dataset: sst2}\npipeline: {max_length: '64'}\n",
         "pipeline.max_length", "valid integer"),
        ("task: classification\ndata: {dataset: sst2}\npipeline: {batching: sorted}\n",
         "pipeline.batching", "'bucket', 'batch_max' or 'global_max'"),
        ("task: classification\ndata: {dataset: sst2}\ntokenizer: {lower_case: 1}\n",
         "tokenizer.lower_case", "valid boolean"),
        ("task: tagging\ndata: {dataset: sst2}\n", "task", "'classification', 'translation', 'captioning' or 'language_modeling'"),
        ("data: {dataset: sst2}\n", "task", "Field required"),
        ("task: classification\ndata: {dataset: sst2, train: a.csv, format: csv}\n", "data", "not both"),
        ("task: classification\nseed: 1.5\ndata: {dataset: sst2}\n", "seed", "valid integer"),
        ("task: translation\ndata: {dataset: multi30k, source: de}\n", "data.target", "needs data.source"),
        ("task: translation\ndata: {dataset: multi30k, source: de, target: en}\nmodel: {family: tcn}\n",
         "model.family", "expected one of transformer, lstm_attention"),
        ("task: classification\ndata: {dataset: sst2}\nmodel: {family: transformer}\n",
         "model.family", "expected one of rnn"),
        ("task: translation\ndata: {dataset: multi30k, source: de, target: en}\n"
         "model: {share_embeddings: true}\n", "model.share_embeddings", "tokenizer.shared"),
        ("task: translation\ndata: {dataset: multi30k, source: de, target: en}\ntrain: {folds: 5}\n",
         "train.folds", "Extra inputs are not permitted (a setting for classification, not translation)"),
        ("task: translation\ndata: {dataset: multi30k, source: de, target: en}\ntrain: {class_weight: balanced}\n",
         "train.class_weight", "Extra inputs are not permitted (a setting for classification"),
        ("task: translation\ndata: {dataset: multi30k, source: de, target: en}\ntrain: {init_from: run}\n",
         "train.init_from", "for classification"),
        ("task: classification\ndata: {format: csv, train: t.csv, splits: {train: train+test}}\n",
         "data", "`splits` chooses among a dataset's splits"),
        ("task: classification\ndata: {dataset: sst2}\ntrain: {class_weight: inverse}\n",
         "train.class_weight", "'none' or 'balanced'"),
        ("task: translation\ndata: {dataset: multi30k, source: de, target: en}\ndecode: {beam_size: 0}\n",
         "decode.beam_size", "greater than or equal to 1"),
        ("task: translation\ndata: {dataset: multi30k, source: de, target: en, max_train_examples: 0}\n",
         "data.max_train_examples", "greater than or equal to 1"),
    ],
)
def test_bad_definitions_name_file_and_key(tmp_path, text, key, reason):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        config.load_definition(path)
    assert raised.value.key == key
    assert raised.value.path == str(path)
    assert reason in str(raised.value)
    assert str(raised.value).startswith(f"{path}: {key}: ")


def test_yaml_syntax_error_names_file(tmp_path):
    path = _write(tmp_path, "task: [classification\n")
    with pytest.raises(ConfigError, match="not valid YAML") as raised:
        config.load_definition(path)
    assert raised.value.path == str(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        config.load_definition(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        config.load_definition(_write(tmp_path, "- a\n- b\n"))


def test_overrides_apply_and_are_validated(tmp_path):
    path = _write(tmp_path, "task: classification\ndata: {dataset: sst2}\n")
    definition = config.load_definition(path, overrides={"pipeline.max_length": 32, "seed": 7})
    assert definition.pipeline.max_length == 32 and definition.seed == 7
    with pytest.raises(ConfigError, match="pipeline.max_length"):
        config.load_definition(path, overrides={"pipeline.max_length": "long"})


def test_translation_defaults_to_a_transformer(tmp_path):
    definition = config.load_definition(_write(tmp_path, "task: translation\n"
                                                         "data: {dataset: multi30k, source: de, target: en}\n"))
    assert definition.model.family == "transformer"
    assert definition.decode.beam_size == 4
