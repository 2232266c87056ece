"""Pipeline definitions (`pipelines/*.yaml`): the sections every task shares, and validation on load.

A definition is one of the tasks' schemas (`seqapp.tasks`), chosen by its `task`
key: a pydantic discriminated union. Each task's schema extends the sections
here with its own keys, so a key that does not belong to the task is an error
like any typo. Every section forbids unknown keys and checks types strictly, so
`vocab_szie` or `max_length: "64"` fails at load time with the key's dotted
path and the file's name, before any data is read.
"""

from pathlib import Path
from typing import Annotated, ClassVar, Literal, Optional, Union

import pydantic
import yaml

from seqapp.errors import ConfigError


# YAML gives lists; tuples keep definitions hashable (cache keys).
IntTuple = Annotated[tuple[int, ...], pydantic.BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]
# One string (`--set embeddings.corpus=imdb`) is a one-element tuple.
StrTuple = Annotated[tuple[str, ...], pydantic.BeforeValidator(
    lambda v: (v,) if isinstance(v, str) else tuple(v) if isinstance(v, list) else v)]


class Section(pydantic.BaseModel):
    """A section of a definition: unknown keys refused, types strict, frozen (hashable)."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class ParallelFiles(Section):
    """Two line-aligned files of one split of the user's parallel text."""

    source: str
    target: str


class DatasetSplits(Section):
    """Which split of a dataset serves as each of a run's splits (TFDS split syntax)."""

    train: Optional[str] = None
    validation: Optional[str] = None
    test: Optional[str] = None


class DataConfig(Section):
    """Where examples come from: a built-in dataset or the user's own files.

    Tasks extend it with the formats and columns of their files.

    Attributes:
        dataset: a name from `seqapp data list`.
        format: the user's file format (the task says which it reads).
        train, validation, test: the user's file per split. Relative paths are
            taken from the definition file's folder.
        encoding: text encoding of the user's files.
        max_train_examples: train on the first this many training examples
            only (a quick run on a slice); None uses them all.
        splits: for a dataset, the split (in TFDS split syntax) that serves as
            the run's train, validation or test split, e.g. `{train: train+test}`
            trains on every labelled IMDB review, `{train: "train[:90%]",
            validation: "train[90%:]"}` holds out a tenth; a split not named
            here is the dataset's own split of that name.
    """

    dataset: Optional[str] = None
    format: Optional[str] = None
    train: Optional[str] = None
    validation: Optional[str] = None
    test: Optional[str] = None
    encoding: str = "utf-8"
    max_train_examples: Optional[int] = pydantic.Field(None, ge=1)
    splits: Optional[DatasetSplits] = None

    @pydantic.model_validator(mode="after")
    def _one_origin(self):
        if (self.dataset is None) == (self.train is None):
            raise ValueError("give either `dataset` or the user's files (`format` and `train`), not both")
        if self.splits is not None and self.dataset is None:
            raise ValueError("`splits` chooses among a dataset's splits; the user's files name theirs directly")
        if self.train is not None and self.format is None:
            raise ValueError("user files need `format`")
        return self


class TokenizerConfig(Section):
    """WordPiece vocabulary learned on the training split.

    Attributes:
        vocab_size: target vocabulary size, reserved tokens included.
        lower_case: fold case and strip accents; False keeps case.
        normalization_form: Unicode normalization when not lower-casing ("NFC", ...).
        min_count: the rarest a token may be and still enter the vocabulary.
    """

    vocab_size: int = pydantic.Field(8000, ge=8)
    min_count: int = pydantic.Field(2, ge=1)
    lower_case: bool = True
    normalization_form: Optional[Literal["NFC", "NFKC", "NFD", "NFKD"]] = None


class PipelineConfig(Section):
    """How tokenized examples are batched.

    Attributes:
        max_length: the most tokens per sequence.
        overlong: "truncate" longer sequences or "drop" them.
        batching: "bucket", "batch_max" or "global_max" (see `seqapp.data.pipeline`).
        num_buckets: the most length buckets (boundaries at length quantiles).
        tokens_per_batch: budget on padded tokens per bucketed batch.
        max_batch_size: cap on a bucket's batch size.
        batch_size: examples per batch in the non-bucket modes.
        shuffle_buffer: examples in the shuffle buffer (training only).
    """

    max_length: int = pydantic.Field(128, ge=2)
    overlong: Literal["truncate", "drop"] = "truncate"
    batching: Literal["bucket", "batch_max", "global_max"] = "bucket"
    num_buckets: int = pydantic.Field(32, ge=1)
    tokens_per_batch: int = pydantic.Field(4096, ge=1)
    max_batch_size: int = pydantic.Field(1024, ge=1)
    batch_size: int = pydantic.Field(64, ge=1)
    shuffle_buffer: int = pydantic.Field(20000, ge=0)


class ModelConfig(Section):
    """What every model family has; tasks extend it with their families' keys.

    Attributes:
        family: the model family, one of the task's `FAMILIES`.
        embedding_dim: token embedding size.
        units: recurrent units per direction (or TCN filters).
        num_layers: stacked layers.
        dropout: dropout on embeddings and between layers.
    """

    FAMILIES: ClassVar[tuple[str, ...]] = ()

    family: str
    embedding_dim: int = pydantic.Field(128, ge=1)
    units: int = pydantic.Field(128, ge=1)
    num_layers: int = pydantic.Field(1, ge=1)
    dropout: float = pydantic.Field(0.3, ge=0.0, lt=1.0)

    @pydantic.field_validator("family")
    @classmethod
    def _known_family(cls, family):
        if family not in cls.FAMILIES:
            raise ValueError(f"{family!r} does not fit this task (expected one of {', '.join(cls.FAMILIES)})")
        return family


class TrainConfig(Section):
    """Optimization and callbacks; tasks extend it.

    Attributes:
        epochs: the most epochs (EarlyStopping may stop sooner).
        learning_rate: Adam's learning rate.
        clipnorm: gradient clipping by norm (None: off).
        early_stopping_patience: epochs without validation improvement before stopping.
    """

    epochs: int = pydantic.Field(10, ge=1)
    learning_rate: float = pydantic.Field(1e-3, gt=0.0)
    clipnorm: Optional[float] = pydantic.Field(1.0, gt=0.0)
    early_stopping_patience: int = pydantic.Field(2, ge=0)


class SequenceTrainConfig(TrainConfig):
    """`train` of a task that predicts token sequences (teacher forcing; see
    `seqapp.losses.compile_sequence_model`).

    Attributes:
        warmup_steps: > 0 ramps the learning rate up linearly over this many
            steps to `learning_rate`, then decays it with the inverse square
            root of the step (the Transformer schedule); 0 keeps it constant.
        label_smoothing: probability mass spread over the vocabulary.
    """

    warmup_steps: int = pydantic.Field(0, ge=0)
    label_smoothing: float = pydantic.Field(0.0, ge=0.0, lt=1.0)


class SearchConfig(Section):
    """How outputs are decoded (`seqapp.decoding`), in evaluation and in the export; tasks that
    generate text extend it.

    Attributes:
        beam_size: 1 is greedy search.
        length_penalty: GNMT's alpha; 0 ranks hypotheses by log-probability alone.
    """

    beam_size: int = pydantic.Field(4, ge=1)
    length_penalty: float = pydantic.Field(0.6, ge=0.0)


def _condition(when):
    """`{key: values}` (YAML) -> `(key, (values...))`: one parent, hashable."""
    if not isinstance(when, dict):
        return when
    if len(when) != 1:
        raise ValueError("`when` names exactly one tuned key and its values")
    ((key, values),) = when.items()
    return key, tuple(values) if isinstance(values, list) else (values,)


class Tuned(Section):
    """One key of a `tune` section: how a tuning search (`seqapp tune`) varies it.

    Attributes:
        when: tune this key only while another tuned key (declared earlier in the
            section) holds one of the given values, written `{model.family: [tcn]}`
            (KerasTuner's `conditional_scope`); otherwise the definition's own value stands.
    """

    when: Annotated[Optional[tuple[str, tuple]], pydantic.BeforeValidator(_condition),
                    pydantic.PlainSerializer(lambda when: None if when is None else {when[0]: list(when[1])})] = None


class TunedChoice(Tuned):
    """One of listed values (strings, numbers or booleans)."""

    type: Literal["choice"]
    values: Annotated[tuple, pydantic.BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]

    @pydantic.field_validator("values")
    @classmethod
    def _some(cls, values):
        if not values:
            raise ValueError("a choice needs at least one value")
        return values


class TunedRange(Tuned):
    """A number in `[min, max]` (`TunedInt`, `TunedFloat`): the bounds' checks they share."""

    @pydantic.model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError("min is above max")
        if self.sampling == "log" and self.min <= 0:
            raise ValueError("log sampling needs min > 0")
        return self


class TunedInt(TunedRange):
    """An integer in `[min, max]`, every `step`-th (linear) or a geometric `step` factor apart (log)."""

    type: Literal["int"]
    min: int
    max: int
    step: Optional[int] = pydantic.Field(None, ge=1)
    sampling: Literal["linear", "log"] = "linear"


class TunedFloat(TunedRange):
    """A float in `[min, max]`, sampled uniformly (linear) or uniformly in its logarithm (log)."""

    type: Literal["float"]
    min: float
    max: float
    step: Optional[float] = pydantic.Field(None, gt=0.0)
    sampling: Literal["linear", "log"] = "linear"


class TunedBoolean(Tuned):
    """True or False."""

    type: Literal["boolean"]


Tunable = Annotated[Union[TunedChoice, TunedInt, TunedFloat, TunedBoolean], pydantic.Field(discriminator="type")]
# `tune:` maps dotted keys of the definition (`model.units`) to how each is searched; held as
# `((key, Tunable), ...)` in YAML's order, because definitions are hashed (cache keys) and a dict is not.
TuneSpace = Annotated[
    tuple[tuple[str, Tunable], ...],
    pydantic.BeforeValidator(lambda v: tuple(v.items()) if isinstance(v, dict) else v),
    pydantic.PlainSerializer(lambda pairs: {key: tuned.model_dump(mode="json", exclude_none=True)
                                            for key, tuned in pairs}),
]


class Definition(Section):
    """What every pipeline definition has; each task's schema (`seqapp.tasks`) extends it with
    its `task` tag and its own sections.

    Attributes:
        tune: the search space of `seqapp tune` (`TuneSpace`); `seqapp train` ignores it.
    """

    task: str
    seed: int = 42
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    pipeline: PipelineConfig = PipelineConfig()
    train: TrainConfig = TrainConfig()
    tune: Optional[TuneSpace] = None
    # Set by `load_definition`: the file, and the folder relative data paths start from.
    origin: str = "<definition>"
    base_dir: str = "."

    def check(self, source):
        """Checks across sections, raising `ConfigError(source, key, reason)`; tasks add theirs."""


def load_definition(path, overrides=None):
    """Reads and validates a pipeline definition.

    Args:
        path: a YAML file.
        overrides: optional `{"section.key": value}` applied on top (from CLI flags).

    Returns:
        The task's `Definition`.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "-", "file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(path, "-", f"not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, "-", "the file must hold a mapping of sections")
    for dotted, value in (overrides or {}).items():
        section = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            section = section.setdefault(key, {})
            if section is None:  # `embeddings: null` has no keys to set
                raise ConfigError(path, dotted, f"cannot be set: `{key}` is null in this definition")
        section[leaf] = value
    raw.setdefault("origin", str(path))
    raw.setdefault("base_dir", str(path.resolve().parent))
    return validate(raw, source=path)


def validate(raw, *, source="<definition>"):
    """Validates a definition given as a dict; errors name `source` and the key."""
    from seqapp import tasks  # the tasks' schemas build on this module

    schemas = {name: task.definition_class for name, task in tasks.REGISTRY.items()}
    if not isinstance(raw.get("task"), str) or raw["task"] not in schemas:
        reason = "Field required" if "task" not in raw else f"Input should be {_either(schemas)}"
        raise ConfigError(source, "task", reason)
    union = pydantic.TypeAdapter(Annotated[Union[tuple(schemas.values())], pydantic.Field(discriminator="task")])
    try:
        definition = union.validate_python({"origin": str(source), **raw})
    except pydantic.ValidationError as error:
        errors = [_located(e, raw["task"], schemas) for e in error.errors()]
        (key, reason), rest = errors[0], errors[1:]
        details = "; ".join(f"{k}: {r}" for k, r in rest)
        raise ConfigError(source, key, reason + (f" (also {details})" if details else "")) from None
    _check_space(definition, source)
    definition.check(source)
    return definition


def _check_space(definition, source):
    """Every key of the `tune` section is a key of the definition's schema (a section key, not a
    whole section), and every `when` names a key tuned before it."""
    schema, seen = type(definition), set()
    for key, tuned in definition.tune or ():
        loc = key.split(".")
        if not has_key(schema, loc) or _subsection(_parent(schema, loc), loc[-1]) is not None:
            raise ConfigError(source, f"tune.{key}", f"the {definition.task} definition has no key {key!r}")
        if tuned.when is not None and tuned.when[0] not in seen:
            raise ConfigError(source, f"tune.{key}.when",
                              f"{tuned.when[0]!r} must be a tuned key declared before {key!r}")
        seen.add(key)


def _parent(model, loc):
    for part in loc[:-1]:
        model = _subsection(model, part)
    return model


def saved(raw, *, source):
    """Validates a definition that seqapp itself wrote (a run's `definition.yaml`).

    Keys that an earlier seqapp wrote for every task but that this task does not
    have (they held defaults it never read) are dropped, so older run folders
    still load.
    """
    from seqapp import tasks

    task = tasks.REGISTRY.get(raw.get("task"))
    if task is not None:
        raw = _known_keys(raw, task.definition_class)
    return validate(raw, source=source)


def _subsection(model, key):
    """The section class of field `key` of `model`, or None for a plain value."""
    annotation = model.model_fields[key].annotation
    return next((t for t in getattr(annotation, "__args__", (annotation,))
                 if isinstance(t, type) and issubclass(t, pydantic.BaseModel)), None)


def _known_keys(raw, model):
    kept = {}
    for key, value in raw.items():
        if key in model.model_fields:
            section = _subsection(model, key)
            kept[key] = _known_keys(value, section) if section is not None and isinstance(value, dict) else value
    return kept


def _either(names):
    quoted = [f"'{name}'" for name in names]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]


def _located(error, tag, schemas):
    """`(dotted key, reason)` of a pydantic error, the union's tag dropped from its location. A key
    another task has gets a hint naming that task."""
    loc = error["loc"][1:] if error["loc"][:1] == (tag,) else error["loc"]
    key = ".".join(str(part) for part in loc) or "-"
    reason = error["msg"]
    if error["type"] == "extra_forbidden":
        owners = [name for name, schema in schemas.items() if name != tag and has_key(schema, loc)]
        if owners:
            reason += f" (a setting for {' and '.join(owners)}, not {tag})"
    return key, reason


def has_key(model, loc):
    """Whether schema `model` has the key at path `loc` (`["model", "units"]`)."""
    for part in loc:
        if model is None or part not in model.model_fields:
            return False
        model = _subsection(model, part)
    return True
