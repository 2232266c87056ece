"""A definition's `tune` section as KerasTuner hyperparameters, and a trial's values as a definition.

Each tuned key becomes one hyperparameter named by the key itself (`model.units`),
so a trial's values are overrides of the definition exactly as `seqapp train --set`
takes them. A key with `when` is declared inside `conditional_scope`: while its
parent holds another value KerasTuner leaves it inactive and the definition's own
value stands.
"""

import keras_tuner

from seqapp import config
from seqapp.config import TunedBoolean
from seqapp.config import TunedChoice
from seqapp.config import TunedFloat
from seqapp.config import TunedInt
from seqapp.errors import ConfigError

# Hyperband's own entries in a trial's values (`tuner/epochs`, ...), not keys of the definition.
_TUNER_PREFIX = "tuner/"


def hyperparameters(definition):
    """The search space of a definition's `tune` section.

    Args:
        definition: a validated definition (its `tune` keys already checked against its schema).

    Returns:
        `keras_tuner.HyperParameters` with one entry per tuned key, in the section's order.

    Raises:
        ConfigError: when the definition has no `tune` section.
    """
    if not definition.tune:
        raise ConfigError(definition.origin, "tune", "no search space: add a `tune` section (see README, Tuning)")
    hp = keras_tuner.HyperParameters()
    for key, tuned in definition.tune:
        parent = {"parent_name": tuned.when[0], "parent_values": list(tuned.when[1])} if tuned.when else {}
        _declare(hp, key, tuned, parent)
    return hp


def _declare(hp, key, tuned, parent):
    if isinstance(tuned, TunedChoice):
        hp.Choice(key, list(tuned.values), **parent)
    elif isinstance(tuned, TunedInt):
        hp.Int(key, tuned.min, tuned.max, step=tuned.step, sampling=tuned.sampling, **parent)
    elif isinstance(tuned, TunedFloat):
        hp.Float(key, tuned.min, tuned.max, step=tuned.step, sampling=tuned.sampling, **parent)
    elif isinstance(tuned, TunedBoolean):
        hp.Boolean(key, **parent)


def overrides(hp):
    """`{dotted key: value}` of a trial's active tuned keys (inactive ones keep the definition's value).

    Args:
        hp: a trial's `keras_tuner.HyperParameters`.
    """
    return {name: value for name, value in hp.values.items()
            if not name.startswith(_TUNER_PREFIX) and hp.is_active(name)}


def definition_of(pipeline, hp, extra=None):
    """The complete definition a trial trains: the pipeline file with the trial's values.

    Args:
        pipeline: the pipeline definition file (YAML) holding the `tune` section.
        hp: the trial's `keras_tuner.HyperParameters`.
        extra: further `{dotted key: value}` overrides (the epochs Hyperband gives a trial).

    Returns:
        The validated definition, its `tune` section dropped (a trial is one point of the space).

    Raises:
        ConfigError: when the values make an invalid definition (a cross-section check fails).
    """
    return config.load_definition(pipeline, overrides={**overrides(hp), **(extra or {}), "tune": None})
