"""Tuning (`seqapp tune`): search spaces in definitions, searches on KerasTuner's engine, resume,
results and distributed search."""

import functools
from pathlib import Path

import keras_tuner
import pytest
import yaml

from seqapp import config
from seqapp.errors import ConfigError
from seqapp.tuning import space

PIPELINES = sorted(Path(__file__).resolve().parents[1].glob("pipelines/*.yaml"))


def _value(definition, dotted):
    return functools.reduce(getattr, dotted.split("."), definition)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_every_shipped_space_samples_valid_definitions(path):
    definition = config.load_definition(path)
    hp = space.hyperparameters(definition)
    oracle = keras_tuner.oracles.RandomSearchOracle(objective=keras_tuner.Objective("score", "max"),
                                                    max_trials=50, hyperparameters=hp, seed=3)
    drawn = set()
    for trial in range(12):
        sampled = hp.copy()
        sampled.values = oracle.populate_space(str(trial))["values"]
        trial_definition = space.definition_of(path, sampled)
        assert trial_definition.tune is None
        for key, value in space.overrides(sampled).items():
            assert _value(trial_definition, key) == value
        for key, tuned in definition.tune:  # an inactive conditional key keeps the file's value
            if key not in space.overrides(sampled):
                assert tuned.when is not None
                assert _value(trial_definition, key) == _value(definition, key)
        drawn.add(tuple(sorted(space.overrides(sampled).items())))
    assert len(drawn) > 1


def _raw(tune):
    raw = yaml.safe_load((PIPELINES[0].parent / "sentiment_user_csv.yaml").read_text())
    return {**raw, "tune": tune}


def test_a_space_naming_a_key_the_definition_lacks_is_a_config_error():
    with pytest.raises(ConfigError, match=r"x.yaml: tune.model.unitz: the classification definition has no key"):
        config.validate(_raw({"model.unitz": {"type": "int", "min": 1, "max": 4}}), source="x.yaml")
    with pytest.raises(ConfigError, match=r"tune.decode.beam_size"):  # a translation key
        config.validate(_raw({"decode.beam_size": {"type": "int", "min": 1, "max": 4}}), source="x.yaml")
    with pytest.raises(ConfigError, match=r"tune.model: "):  # a whole section is not a key
        config.validate(_raw({"model": {"type": "boolean"}}), source="x.yaml")


def test_a_condition_names_a_key_tuned_before_it():
    with pytest.raises(ConfigError, match=r"tune.model.kernel_size.when: 'model.family' must be a tuned key"):
        config.validate(_raw({"model.kernel_size": {"type": "int", "min": 2, "max": 5,
                                                    "when": {"model.family": ["tcn"]}}}), source="x.yaml")


def test_a_conditional_key_is_tuned_only_under_its_parent_value():
    definition = config.validate(_raw({
        "model.family": {"type": "choice", "values": ["bilstm", "tcn"]},
        "model.kernel_size": {"type": "int", "min": 4, "max": 5, "when": {"model.family": ["tcn"]}},
    }), source="x.yaml")
    hp = space.hyperparameters(definition)
    hp.values.update({"model.family": "bilstm", "model.kernel_size": 5})
    assert space.overrides(hp) == {"model.family": "bilstm"}
    hp.values["model.family"] = "tcn"
    assert space.overrides(hp) == {"model.family": "tcn", "model.kernel_size": 5}


def test_a_definition_with_a_space_stays_hashable_and_round_trips():
    definition = config.validate(_raw({"train.learning_rate": {"type": "float", "min": 0.0001, "max": 0.01,
                                                               "sampling": "log"}}), source="x.yaml")
    hash(definition)  # definitions are cache keys
    dumped = definition.model_dump(mode="json")["tune"]
    assert dumped == {"train.learning_rate": {"type": "float", "min": 0.0001, "max": 0.01, "sampling": "log"}}
    assert config.validate(_raw(dumped), source="x.yaml").tune == definition.tune
