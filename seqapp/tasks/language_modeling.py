"""Language modelling: plain text -> an ELMo-style bidirectional language model, served as ELMo.

Data: the text of a built-in dataset (`ptb`, or any dataset's `text`, such
as IMDB's reviews, whose labels are never read) or the user's plain-text files,
read as one stream of words (`seqapp.data.streams`). The output vocabulary is
the training split's most frequent words. Model: `seqapp.models.language_model`
(character CNN, forward and backward projected-LSTM stacks, a shared softmax).
Evaluation measures perplexity the way the literature does for PTB: each
split as one continuous stream, the LSTM state carried from segment to segment,
one prediction per word including `<eos>`, full softmax; forward, backward and
their geometric mean. The export mirrors TF Hub's ELMo module: `text` ->
`elmo`, `word_emb`, `lstm_outputs1..n`, `default`, `mask`, and a `tokens`
signature.
"""

import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Literal, Optional

import keras
import numpy as np
import pydantic
import tensorflow as tf

from seqapp import atomic
from seqapp import config
from seqapp import evaluation
from seqapp import exporters
from seqapp import settings
from seqapp.data import readers
from seqapp.data import sources
from seqapp.data import streams
from seqapp.errors import ConfigError
from seqapp.errors import SeqappError
from seqapp.inputters import Inputter
from seqapp.layers import ScalarMix
from seqapp.models.language_model import BiLanguageModel
from seqapp.tasks.base import Run
from seqapp.tasks.base import Task
from seqapp.tokenizers import words as word_vocabulary
from seqapp.tokenizers.characters import CharacterTokenizer

DIRECTIONS = ("forward", "backward")


# ---------------------------------------------------------------- definition

class LanguageModelingData(config.DataConfig):
    """`data` of a language-modelling definition.

    Attributes:
        format: the user's files: "text" (one sentence or document a line; blank lines skipped).
    """

    format: Optional[Literal["text"]] = None


class WordsConfig(config.Section):
    """`tokenizer` of a language model: characters in, words out.

    Attributes:
        vocab_size: words the softmax predicts, `<unk>` and `<eos>` included: the
            training split's most frequent (PTB: 10000, its own vocabulary).
        min_count: the fewest occurrences a word needs to be predicted as itself.
        max_chars: characters per word read by the character CNN, markers included
            (ELMo: 50); longer words are cut.
        split: "whitespace": words as the text spells them (PTB); "basic":
            punctuation split off too, the words a classifier's `model.bilm` reads
            (pretrain so for sentiment on raw text such as IMDB's).
        lower_case: with "basic", fold case and strip accents (as the classifier's
            `tokenizer.lower_case` does).
    """

    vocab_size: int = pydantic.Field(50000, ge=3)
    min_count: int = pydantic.Field(1, ge=1)
    max_chars: int = pydantic.Field(50, ge=3)
    split: Literal["whitespace", "basic"] = "whitespace"
    lower_case: bool = False


class StreamConfig(config.Section):
    """`pipeline` of a language model: how the stream is cut.

    Attributes:
        window: words per training window (and per evaluation segment).
        batch_size: windows per training batch.
        eval_streams: evaluation reads a split as this many contiguous parts side
            by side, each carrying its own state (1: PTB's one stream; more for
            large corpora, faster).
    """

    window: int = pydantic.Field(35, ge=2)
    batch_size: int = pydantic.Field(64, ge=1)
    eval_streams: int = pydantic.Field(1, ge=1)


class BiLMModelConfig(config.ModelConfig):
    """An ELMo-style biLM (`seqapp.models.language_model.BiLanguageModel`).

    Attributes:
        family: "bilm".
        embedding_dim: character embedding size (ELMo: 16).
        filters: `[width, count]` convolutions over characters (ELMo's big model:
            [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]).
        highway_layers: highway layers after the convolutions.
        projection_dim: token vector width and each LSTM layer's projection.
        units: LSTM memory cells per layer.
        num_layers: LSTM layers per direction.
        cell_clip, projection_clip: LSTM clipping (null: off).
        dropout: on each LSTM's input and the softmax's input.
        num_sampled: train with sampled softmax over this many words (large
            vocabularies); null: the full softmax. Evaluation always uses the full softmax.
    """

    FAMILIES = ("bilm",)

    family: str = "bilm"
    embedding_dim: int = pydantic.Field(16, ge=1)
    filters: tuple[config.IntTuple, ...] = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512))
    highway_layers: int = pydantic.Field(1, ge=0)
    projection_dim: int = pydantic.Field(256, ge=1)
    units: int = pydantic.Field(1024, ge=1)
    num_layers: int = pydantic.Field(2, ge=1)
    cell_clip: Optional[float] = pydantic.Field(3.0, gt=0.0)
    projection_clip: Optional[float] = pydantic.Field(3.0, gt=0.0)
    dropout: float = pydantic.Field(0.1, ge=0.0, lt=1.0)
    num_sampled: Optional[int] = pydantic.Field(None, ge=1)

    @pydantic.field_validator("filters", mode="before")
    @classmethod
    def _pairs(cls, filters):
        if not isinstance(filters, (list, tuple)) or not filters or any(
                not isinstance(pair, (list, tuple)) or len(pair) != 2 or min(pair) < 1 for pair in filters):
            raise ValueError("give [width, count] pairs of positive integers, e.g. [[1, 32], [2, 64]]")
        return tuple(tuple(pair) for pair in filters)


class LanguageModelingTrain(config.TrainConfig):
    """`train` of a language model.

    Attributes:
        decay_after: epochs at `learning_rate`; each later epoch multiplies the
            learning rate by `decay` (Zaremba et al.'s schedule). None: only the
            halving when validation stalls.
        decay: the factor of each epoch after `decay_after`.
    """

    decay_after: Optional[int] = pydantic.Field(None, ge=0)
    decay: float = pydantic.Field(0.5, gt=0.0, le=1.0)


class LanguageModelingDefinition(config.Definition):
    """A language-modelling pipeline definition."""

    task: Literal["language_modeling"]
    data: LanguageModelingData
    tokenizer: WordsConfig = WordsConfig()
    pipeline: StreamConfig = StreamConfig()
    model: BiLMModelConfig = BiLMModelConfig()
    train: LanguageModelingTrain = LanguageModelingTrain()

    def check(self, source):
        if self.tokenizer.lower_case and self.tokenizer.split != "basic":
            raise ConfigError(source, "tokenizer.lower_case", "folds case with `split: basic` only")
        widest = max(width for width, _ in self.model.filters)
        if widest > self.tokenizer.max_chars:
            raise ConfigError(source, "model.filters", f"a width of {widest} does not fit words of "
                              f"tokenizer.max_chars={self.tokenizer.max_chars}")


# ---------------------------------------------------------------- data

class LanguageModelingInputter(Inputter):
    """Lines of text -> one `TokenStream` per split -> windows with each word's neighbours as targets."""

    def __init__(self, definition, fold=None, tokenizers=None):
        super().__init__(definition, fold=fold, tokenizers=tokenizers)
        self._streams = {}

    @functools.cached_property
    def tokenizers(self):
        """`{"words": WordVocabulary}` of the training split, learned once and cached."""
        cfg = self.definition.tokenizer
        key = json.dumps({"data": sources.identity(self.definition), "vocab_size": cfg.vocab_size,
                          "min_count": cfg.min_count, "split": cfg.split, "lower_case": cfg.lower_case}, sort_keys=True)
        path = settings.cache_dir() / "words" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.txt"
        if not path.exists():
            print(f"Counting the words of the training split for a {cfg.vocab_size}-word vocabulary ...", flush=True)
            words = word_vocabulary.learn_word_vocabulary(
                (" ".join(words) for words in streams.split_words(self.lines("train"), cfg.split, cfg.lower_case)),
                cfg.vocab_size, min_count=cfg.min_count)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic.atomic_path(path) as tmp:
                word_vocabulary.write_word_vocabulary(words, tmp)
        return {"words": word_vocabulary.WordVocabulary(path)}

    def raw_examples(self, split):
        definition = self.definition
        if definition.data.dataset is not None:
            examples, features = sources.dataset_split(definition, split, any_task=True)  # labels never read
            if "text" not in features:
                raise ConfigError(definition.origin, "data.dataset", f"{definition.data.dataset} has no text feature")
            return examples.map(lambda ex: {"text": ex["text"]})
        rows = readers.read_plain_text(sources.user_file(definition, split), encoding=definition.data.encoding)
        return tf.data.Dataset.from_tensor_slices({"text": [row["text"] for row in rows]})

    def lines(self, split):
        """The split's lines, decoded."""
        return (text.decode("utf-8") for text in self.examples(split).map(lambda ex: ex["text"]).as_numpy_iterator())

    def stream(self, split):
        """The split as one `TokenStream`, read once."""
        if split not in self._streams:
            sources.check_split(self.definition, split)
            cfg = self.definition.tokenizer
            self._streams[split] = streams.TokenStream.from_lines(self.lines(split), cfg.split, cfg.lower_case)
        return self._streams[split]

    def lengths(self, split):
        """Words per line, `<eos>` included: they sum to the stream's predicted words."""
        stream = self.stream(split)
        ends = np.flatnonzero(stream.ids == 0)
        return np.diff(ends)

    def batching_report(self):
        cfg = self.definition.pipeline
        batches = int(self.dataset("train", training=False).cardinality())
        return {"limit": f"window {cfg.window}", "windows": batches,
                "lines": [f"training windows: {cfg.window} words, {cfg.batch_size} per batch, {batches} batches "
                          "(no padding)"]}

    def dataset(self, split, *, training, batching_mode=None, input_context=None):
        cfg, definition = self.definition.pipeline, self.definition
        stream = self.stream(split)
        if input_context is not None and input_context.num_input_pipelines > 1:
            part = len(stream) // input_context.num_input_pipelines
            start = input_context.input_pipeline_id * part
            stream = dataclasses.replace(stream, ids=stream.ids[start:start + part])
        try:
            return streams.windows(stream, self.tokenizers["words"], length=cfg.window,
                                   max_chars=definition.tokenizer.max_chars, batch_size=cfg.batch_size,
                                   shuffle_seed=definition.seed if training else None)
        except ValueError as error:
            raise ConfigError(definition.origin, "pipeline.window", f"{split}: {error}") from None


# ---------------------------------------------------------------- evaluation

def stream_perplexity(model, stream, vocabulary, *, direction, segment, max_chars, parallel=1):
    """Perplexity of one direction over a stream read as one text, the LSTM state carried across segments.

    The forward direction predicts each position from the ones before it, the
    backward one reads the stream reversed; each predicts `len(stream) - 1`
    words with the full softmax.

    Args:
        model: a `BiLanguageModel`.
        stream: a `TokenStream`.
        vocabulary: the model's `WordVocabulary`.
        direction: "forward" or "backward".
        segment: words per step (a result does not depend on it beyond rounding).
        max_chars: the character width of a word.
        parallel: reads the stream as this many contiguous parts side by side
            (each part's first word is then predicted without the context before it).

    Returns:
        `{"perplexity", "nll", "words"}`: exp of the mean negative log-likelihood, its
        sum in nats, and how many words were predicted.
    """
    ids, targets = stream.ids, stream.targets(vocabulary)
    if direction == "backward":
        ids, targets = ids[::-1], targets[::-1]
    words = len(ids) - 1
    part = words // parallel
    if part < 1:
        raise ValueError(f"a stream of {len(ids)} tokens cannot be read as {parallel} parts")
    # Rows of [parallel, part]: input position i predicts target position i + 1; a remainder shorter
    # than one part per row is read by the last row alone in a final step below.
    inputs = ids[: parallel * part].reshape(parallel, part)
    outputs = targets[1: parallel * part + 1].reshape(parallel, part)
    characters = tf.constant(stream.characters(max_chars))
    sizes = model.get_config()
    width, units, layers = sizes["projection_dim"], sizes["units"], sizes["num_layers"]

    @tf.function(reduce_retracing=True)
    def step(chars, target, states):
        vectors, mask = model.tokens(chars)
        top, states = model.encoder.run_direction(direction, vectors, mask, initial_states=states)
        return tf.reduce_sum(model.softmax.nll(top[-1], target)), states

    def zeros(rows):
        return [[tf.zeros([rows, width]), tf.zeros([rows, units])] for _ in range(layers)]

    total, states = 0.0, zeros(parallel)
    for start in range(0, part, segment):
        chars = tf.gather(characters, inputs[:, start:start + segment])
        nll, states = step(chars, outputs[:, start:start + segment], states)
        total += float(nll)
    rest = words - parallel * part
    if rest:  # the last row's state continues into the remainder
        last = [[h[-1:], c[-1:]] for h, c in states]
        for start in range(parallel * part, words, segment):
            end = min(start + segment, words)
            nll, last = step(tf.gather(characters, ids[None, start:end]), targets[None, start + 1:end + 1], last)
            total += float(nll)
    return {"perplexity": math.exp(total / words), "nll": total, "words": words}


# ---------------------------------------------------------------- the task

class LanguageModelingTask(Task):
    name = "language_modeling"
    inputter_class = LanguageModelingInputter
    definition_class = LanguageModelingDefinition
    export_name = "elmo"

    def default_definition(self, dataset):
        return {"task": self.name, "data": {"dataset": dataset}, "tokenizer": {"vocab_size": 10000}}

    def write_run_files(self, inputter, folder):
        folder.copy_in(inputter.tokenizers["words"].vocab_path, "words.txt")
        super().write_run_files(inputter, folder)

    def build_model(self, inputter, hp=None):
        return build_model(inputter.definition, inputter.tokenizers["words"].vocab_size)

    def compile(self, model, definition):
        cfg = definition.train
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm))

    def callbacks(self, inputter):
        # Language models gain much from a smaller step late in training and once validation stalls
        # (Zaremba et al. decay theirs). The scheduler scales the optimizer's current rate, which a resumed
        # run restores with the optimizer, so a plateau's halving and a restart both keep counting.
        cfg = inputter.definition.train
        scheduled = []
        if cfg.decay_after is not None:
            scheduled.append(keras.callbacks.LearningRateScheduler(
                lambda epoch, rate: rate * cfg.decay if epoch >= cfg.decay_after else rate, verbose=1))
        return [*scheduled, keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0, verbose=1)]

    def load_run(self, work_dir, definition):
        work_dir = Path(work_dir)
        return Run(work_dir=work_dir, definition=definition,
                   model=keras.models.load_model(work_dir / "best.keras", compile=False),
                   tokenizers={"words": word_vocabulary.WordVocabulary(work_dir / "words.txt")})

    def evaluate(self, run, splits, *, inputter=None, **options):
        given = [name for name, value in options.items() if value is not None]
        if given:
            raise SeqappError(f"{', '.join('--' + n.replace('_', '-') for n in given)}: not an option of "
                              "language-modelling runs")
        inputter = inputter or self.run_inputter(run)
        results = {}
        for split in splits:
            try:
                stream = inputter.stream(split)
            except ConfigError:  # the data has no such split
                continue
            results[split] = stream_metrics(run.model, stream, run.tokenizers["words"], run.definition)
        return evaluation.merge_metrics(run.work_dir, results)

    def evaluate_files(self, run, files, **options):
        if set(files) != {"data"}:
            raise SeqappError("a language-modelling run is evaluated on --split or on --data FILE (plain text, "
                              "one sentence or document a line)")
        rows = readers.read_plain_text(files["data"], encoding=run.definition.data.encoding)
        cfg = run.definition.tokenizer
        stream = streams.TokenStream.from_lines((row["text"] for row in rows), cfg.split, cfg.lower_case)
        return {Path(files["data"]).name: stream_metrics(run.model, stream, run.tokenizers["words"], run.definition)}

    def format_metrics(self, results, work_dir):
        return "\n".join(
            f"{split}: perplexity {m['perplexity']:.2f} (forward {m['perplexity_forward']:.2f}, backward "
            f"{m['perplexity_backward']:.2f}; {m['words']} words, full softmax, state carried)"
            for split, m in results.items())

    def signatures(self, run):
        model, cfg = run.model, run.definition
        tokenizer = CharacterTokenizer(cfg.tokenizer.max_chars)
        mix = ScalarMix(cfg.model.num_layers + 1, name="elmo_mix")  # TF Hub's ELMo: the layers' mean at first
        mix.build([(None, None, 2 * cfg.model.projection_dim)] * (cfg.model.num_layers + 1))

        def elmo(chars):
            layers, mask = model.layers_of(chars, training=False)
            mixed = mix(layers, mask=mask)
            weights = tf.cast(mask, mixed.dtype)[..., None]
            outputs = {
                "elmo": mixed,
                "word_emb": layers[0][..., : cfg.model.projection_dim],
                "default": tf.reduce_sum(mixed * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1.0),
                "mask": mask,
            }
            outputs.update({f"lstm_outputs{index}": layer for index, layer in enumerate(layers[1:], start=1)})
            return outputs

        def from_text(text):
            words = streams.words_of(text, cfg.tokenizer.split, cfg.tokenizer.lower_case)
            return elmo(words.with_flat_values(tokenizer.encode_words(words.flat_values)).to_tensor())

        def from_tokens(tokens, sequence_len):
            shape = tf.shape(tokens)
            chars = tf.reshape(tokenizer.encode_words(tf.reshape(tokens, [-1])), [shape[0], shape[1], -1])
            within = tf.sequence_mask(sequence_len, shape[1])
            return elmo(chars * tf.cast(within, chars.dtype)[..., None])

        return [model, tokenizer, mix], [
            exporters.Signature("serving_default", from_text, [tf.TensorSpec([None], tf.string, name="text")]),
            exporters.Signature("tokens", from_tokens, [tf.TensorSpec([None, None], tf.string, name="tokens"),
                                                        tf.TensorSpec([None], tf.int32, name="sequence_len")]),
        ]

    def example_inputs(self, run):
        texts = self.warmup_inputs(run)["text"]
        tokens = [text.split() for text in texts]
        width = max([len(words) for words in tokens] + [1])
        return {"serving_default": {"text": texts},
                "tokens": {"tokens": [words + [b""] * (width - len(words)) for words in tokens],
                           "sequence_len": [len(words) for words in tokens]}}

    def card(self, run):
        cfg = run.definition
        return {"window": cfg.pipeline.window, "max_chars": cfg.tokenizer.max_chars,
                "layers": cfg.model.num_layers + 1, "dim": 2 * cfg.model.projection_dim}

    def demo_definition(self, small=False):
        definition = {
            "task": self.name,
            # A slice of PTB and a narrow biLM: a minute or two on a laptop CPU (`pipelines/bilm_ptb.yaml`
            # is the full-size setup).
            "data": {"dataset": "ptb", "max_train_examples": 10000},
            "tokenizer": {"vocab_size": 10000, "max_chars": 20},
            "pipeline": {"window": 35, "batch_size": 64, "eval_streams": 16},
            "model": {"filters": [[1, 16], [2, 32], [3, 64], [4, 64]], "projection_dim": 64, "units": 256,
                      "dropout": 0.2},
            "train": {"epochs": 1, "learning_rate": 0.002},
        }
        if small:
            definition["data"]["max_train_examples"] = 500
            definition["data"]["splits"] = {"validation": "validation[:100]", "test": "test[:100]"}
            definition["tokenizer"]["vocab_size"] = 2000
            definition["model"].update(filters=[[1, 4], [2, 4]], projection_dim=8, units=16)
            definition["pipeline"]["eval_streams"] = 1
        return definition

    def demo_inputs(self):
        return {"text": ["the company said it expects a loss", "stocks fell sharply on monday"]}

    def format_outputs(self, inputs, outputs):
        lines = []
        for text, vector, mask in zip(inputs["text"], outputs["default"], outputs["mask"]):
            lines.append(f"  {sum(bool(m) for m in mask)} words -> a {len(vector)}-d ELMo vector "
                         f"(norm {float(np.linalg.norm(vector)):.2f})  {text!r}")
        return "\n".join(lines)


def build_model(definition, vocab_size):
    """The `BiLanguageModel` a definition describes."""
    cfg = definition.model
    model = BiLanguageModel(vocab_size, filters=cfg.filters, char_embedding_dim=cfg.embedding_dim,
                           highway_layers=cfg.highway_layers, projection_dim=cfg.projection_dim, units=cfg.units,
                           num_layers=cfg.num_layers, cell_clip=cfg.cell_clip, projection_clip=cfg.projection_clip,
                           dropout=cfg.dropout, num_sampled=cfg.num_sampled, name="bilm")
    model.build({"chars": (None, None, definition.tokenizer.max_chars)})
    return model


def stream_metrics(model, stream, vocabulary, definition):
    """Forward, backward and mean perplexity of a stream (`stream_perplexity`)."""
    cfg = definition.pipeline
    runs = {direction: stream_perplexity(model, stream, vocabulary, direction=direction, segment=cfg.window,
                                         max_chars=definition.tokenizer.max_chars, parallel=cfg.eval_streams)
            for direction in DIRECTIONS}
    words = runs["forward"]["words"]
    return {"perplexity": math.exp((runs["forward"]["nll"] + runs["backward"]["nll"]) / (2 * words)),
            "perplexity_forward": runs["forward"]["perplexity"], "perplexity_backward": runs["backward"]["perplexity"],
            "words": words, "eval_streams": cfg.eval_streams}

