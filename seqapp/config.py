"""Pipeline definitions (`pipelines/*.yaml`): schema and validation on load.

Every section forbids unknown keys and checks types strictly, so a typo such as
`vocab_szie` or `max_length: "64"` fails at load time with the key's dotted path
and the file's name, before any data is read.
"""

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import pydantic
import yaml

from seqapp.errors import ConfigError


# YAML gives lists; tuples keep definitions hashable (cache keys).
_IntTuple = Annotated[tuple[int, ...], pydantic.BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]
# One string (`--set embeddings.corpus=imdb`) is a one-element tuple.
_StrTuple = Annotated[tuple[str, ...], pydantic.BeforeValidator(
    lambda v: (v,) if isinstance(v, str) else tuple(v) if isinstance(v, list) else v)]


class _Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)


class ParallelFiles(_Section):
    """Two line-aligned files of one split of the user's parallel text."""

    source: str
    target: str


class DatasetSplits(_Section):
    """Which split of a dataset serves as each of a run's splits (TFDS split syntax)."""

    train: Optional[str] = None
    validation: Optional[str] = None
    test: Optional[str] = None


class DataConfig(_Section):
    """Where examples come from: a built-in dataset or the user's own files.

    Attributes:
        dataset: a name from `seqapp data list`.
        format: the user's file format: "csv", "tsv", "jsonl" (text + label),
            "parallel" (aligned files or a source/target TSV).
        train, validation, test: the user's file per split (for "parallel",
            either a TSV path or `{source: ..., target: ...}`). Relative paths are
            taken from the definition file's folder.
        text_column, label_column: columns of a CSV/TSV/JSONL classification file.
        source, target: for translation, the language keys of a dataset
            (e.g. "de", "en") or the TSV columns of the user's parallel text.
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
    format: Optional[Literal["csv", "tsv", "jsonl", "parallel"]] = None
    train: Optional[Union[str, ParallelFiles]] = None
    validation: Optional[Union[str, ParallelFiles]] = None
    test: Optional[Union[str, ParallelFiles]] = None
    text_column: str = "text"
    label_column: str = "label"
    source: Optional[str] = None
    target: Optional[str] = None
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


class TokenizerConfig(_Section):
    """WordPiece vocabulary learned on the training split.

    Attributes:
        vocab_size: target vocabulary size, reserved tokens included.
        lower_case: fold case and strip accents (sentiment); False keeps case (translation).
        normalization_form: Unicode normalization when not lower-casing ("NFC", ...).
        shared: one vocabulary for source and target (translation).
        min_count: the rarest a token may be and still enter the vocabulary.
    """

    vocab_size: int = pydantic.Field(8000, ge=8)
    min_count: int = pydantic.Field(2, ge=1)
    lower_case: bool = True
    normalization_form: Optional[Literal["NFC", "NFKC", "NFD", "NFKD"]] = None
    shared: bool = False


class PipelineConfig(_Section):
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


CLASSIFIER_FAMILIES = ("rnn", "lstm", "gru", "bilstm", "bigru", "tcn")
SEQ2SEQ_FAMILIES = ("transformer", "lstm_attention")


class ModelConfig(_Section):
    """A sequence classifier (`seqapp.models.classifier`) or an encoder-decoder
    (`seqapp.models.seq2seq`).

    Attributes:
        family: classifiers: "rnn" (SimpleRNN baseline), "lstm" (stacked), "gru",
            "bilstm", "bigru" (bidirectional) or "tcn" (temporal convolutional
            network); encoder-decoders: "transformer" or "lstm_attention".
        embedding_dim: token embedding size (the Transformer's model width).
        units: recurrent units per direction, or TCN filters.
        num_layers: stacked recurrent layers (TCN: see `dilations`); Transformer
            encoder and decoder layers.
        merge_mode: how bidirectional outputs combine.
        dropout: dropout on embeddings and between layers.
        recurrent_dropout: dropout on recurrent connections.
        pooling: "last" (final state), "mean"/"max" over real tokens, or "attention".
        kernel_size, dilations, causal, normalization: TCN residual blocks, one
            per dilation; `causal: false` makes each convolution centred.
        num_heads, ffn_dim, norm_first: Transformer attention heads, feed-forward
            size, pre-layer-norm (True) or post-layer-norm.
        share_embeddings: one embedding for source, target and output projection
            (needs `tokenizer.shared`).
        attention: the LSTM decoder's attention, "luong" (multiplicative) or
            "bahdanau" (additive).
    """

    family: Literal[CLASSIFIER_FAMILIES + SEQ2SEQ_FAMILIES] = "bilstm"
    embedding_dim: int = pydantic.Field(128, ge=1)
    units: int = pydantic.Field(128, ge=1)
    num_layers: int = pydantic.Field(1, ge=1)
    merge_mode: Literal["concat", "sum", "mul", "ave"] = "concat"
    dropout: float = pydantic.Field(0.3, ge=0.0, lt=1.0)
    recurrent_dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    pooling: Literal["last", "mean", "max", "attention"] = "last"
    kernel_size: int = pydantic.Field(3, ge=1)
    dilations: _IntTuple = (1, 2, 4, 8)
    causal: bool = True
    normalization: Literal["layer", "batch", "none"] = "layer"
    num_heads: int = pydantic.Field(4, ge=1)
    ffn_dim: int = pydantic.Field(1024, ge=1)
    norm_first: bool = True
    share_embeddings: bool = False
    attention: Literal["luong", "bahdanau"] = "luong"


class TrainConfig(_Section):
    """Optimization and callbacks.

    Attributes:
        epochs: the most epochs (EarlyStopping may stop sooner).
        learning_rate: Adam's learning rate.
        clipnorm: gradient clipping by norm (None: off).
        early_stopping_patience: epochs without validation improvement before stopping.
        folds: > 1 runs k-fold cross-validation instead of the fixed split.
        warmup_steps: > 0 ramps the learning rate up linearly over this many
            steps to `learning_rate`, then decays it with the inverse square
            root of the step (the Transformer schedule); 0 keeps it constant.
        label_smoothing: probability mass spread over the vocabulary (translation).
        class_weight: "balanced" weighs each training example by
            `examples / (classes * examples of its class)`, so every class
            counts alike in the loss, as if the training labels were balanced
            (for a skewed training split, or one whose label mix differs from
            the data the model is scored or served on); "none" weighs all
            examples alike. Classification only.
        init_from: start from another model's weights instead of at random:
            a finished run folder, or a pipeline definition (`.yaml`) that is
            then trained first, once, and kept in the cache. Relative paths
            are taken from the definition file's folder. Every layer with the
            same name and weight shapes is copied: the embeddings and the
            encoder, and the output layer too when the labels are the same. Both
            models must read the same vocabulary (the same tokenizer settings and
            `embeddings.corpus`). Classification only.
    """

    epochs: int = pydantic.Field(10, ge=1)
    learning_rate: float = pydantic.Field(1e-3, gt=0.0)
    clipnorm: Optional[float] = pydantic.Field(1.0, gt=0.0)
    early_stopping_patience: int = pydantic.Field(2, ge=0)
    folds: int = pydantic.Field(1, ge=1)
    warmup_steps: int = pydantic.Field(0, ge=0)
    label_smoothing: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    class_weight: Literal["none", "balanced"] = "none"
    init_from: Optional[str] = None


class DecodeConfig(_Section):
    """How translations are decoded (`seqapp.decoding`), in evaluation and in the export.

    Attributes:
        beam_size: 1 is greedy search.
        length_penalty: GNMT's alpha; 0 ranks hypotheses by log-probability alone.
        max_output_ratio, max_output_extra: a translation has at most
            `ratio * source_tokens + extra` tokens (and never more than
            `pipeline.max_length`); one that reaches it returns what it has.
    """

    beam_size: int = pydantic.Field(4, ge=1)
    length_penalty: float = pydantic.Field(0.6, ge=0.0)
    max_output_ratio: float = pydantic.Field(1.5, ge=0.0)
    max_output_extra: int = pydantic.Field(10, ge=0)


class EmbeddingsConfig(_Section):
    """Token embeddings pretrained on unlabelled text (word2vec, `seqapp.embeddings`).

    The classifier's embedding layer starts from these vectors instead of at
    random, as Kim (2014) starts from word2vec. With this section, the WordPiece
    vocabulary is learned from `corpus` rather than from the training split, so
    one pretraining serves every run and every cross-validation fold on it (the
    vectors come with their vocabulary, as published embeddings do).

    Attributes:
        corpus: where the text comes from: dataset names from `seqapp data list`
            (the text of every split; labels are never read) and plain-text files
            (one document a line; relative to the definition's folder). Keep the
            task's own test data out of it.
        algorithm: "skipgram" or "cbow".
        window: context words on each side.
        negative: negative samples per positive one.
        epochs: passes over the corpus.
        min_count: the fewest occurrences a token needs to be trained; rarer
            tokens (and reserved ones) keep a random row.
        trainable: fine-tune the vectors with the classifier (Kim's
            "non-static"); False freezes them ("static").
    """

    corpus: _StrTuple
    algorithm: Literal["skipgram", "cbow"] = "skipgram"
    window: int = pydantic.Field(5, ge=1)
    negative: int = pydantic.Field(5, ge=1)
    epochs: int = pydantic.Field(5, ge=1)
    min_count: int = pydantic.Field(2, ge=1)
    trainable: bool = True

    @pydantic.field_validator("corpus")
    @classmethod
    def _not_empty(cls, corpus):
        if not corpus:
            raise ValueError("name at least one dataset or file")
        return corpus


class Definition(_Section):
    """A whole pipeline definition file."""

    task: Literal["classification", "translation"]
    seed: int = 42
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    pipeline: PipelineConfig = PipelineConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    decode: DecodeConfig = DecodeConfig()
    embeddings: Optional[EmbeddingsConfig] = None
    # Set by `load_definition`: the file, and the folder relative data paths start from.
    origin: str = "<definition>"
    base_dir: str = "."

    @pydantic.model_validator(mode="before")
    @classmethod
    def _default_family(cls, raw):
        """A translation definition without `model.family` gets a Transformer."""
        if isinstance(raw, dict) and raw.get("task") == "translation":
            model = raw.get("model") or {}
            if isinstance(model, dict) and "family" not in model:
                raw = {**raw, "model": {**model, "family": "transformer"}}
        return raw


def load_definition(path, overrides=None):
    """Reads and validates a pipeline definition.

    Args:
        path: a YAML file.
        overrides: optional `{"section.key": value}` applied on top (from CLI flags).

    Returns:
        A `Definition`.

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
        section[leaf] = value
    raw.setdefault("origin", str(path))
    raw.setdefault("base_dir", str(path.resolve().parent))
    return validate(raw, source=path)


def validate(raw, *, source="<definition>"):
    """Validates a definition given as a dict; errors name `source` and the key."""
    try:
        definition = Definition.model_validate({"origin": str(source), **raw})
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "-"
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '-'}: {e['msg']}" for e in error.errors()[1:]
        )
        reason = first["msg"] + (f" (also {details})" if details else "")
        raise ConfigError(source, key, reason) from None
    _check_sections_agree(definition, source)
    return definition


def _check_sections_agree(definition, source):
    """Checks across sections, each error naming the key to change."""
    if definition.task == "translation":
        for key in ("source", "target"):
            if getattr(definition.data, key) is None:
                raise ConfigError(source, f"data.{key}", "translation needs data.source and data.target")
    families = SEQ2SEQ_FAMILIES if definition.task == "translation" else CLASSIFIER_FAMILIES
    if definition.model.family not in families:
        raise ConfigError(source, "model.family", f"{definition.model.family!r} does not fit task "
                          f"{definition.task!r} (expected one of {', '.join(families)})")
    if definition.task == "translation" and definition.train.folds > 1:
        raise ConfigError(source, "train.folds", "cross-validation is for classification; translation uses the "
                          "data's own validation and test splits")
    if definition.task == "translation" and definition.train.class_weight != "none":
        raise ConfigError(source, "train.class_weight", "class weights are for classification")
    if definition.task == "translation" and definition.train.init_from is not None:
        raise ConfigError(source, "train.init_from", "starting from another model's weights is for classification")
    if definition.embeddings is not None and definition.task != "classification":
        raise ConfigError(source, "embeddings", "pretrained embeddings are for classification")
    if definition.model.share_embeddings and not definition.tokenizer.shared:
        raise ConfigError(source, "model.share_embeddings", "needs tokenizer.shared: true (one vocabulary)")
