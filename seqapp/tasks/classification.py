"""Classification (many-to-one): text -> label and class probabilities. Sentiment is its demo job.

Data: `{"text", "label"}` examples from a built-in dataset, the user's
CSV/TSV/JSONL file, or k folds of every labelled example. Models:
`seqapp.models.classifier` (stacked and bidirectional RNNs, TCN). Training
watches validation accuracy; evaluation gives accuracy, macro-F1 and the
confusion matrix per split. The export answers `text` -> `label`,
`probabilities`, `classes`, and TF Serving's Classify API.
"""

import dataclasses
import functools
import json
from pathlib import Path
from typing import Literal, Optional, Union

import keras
import numpy as np
import pydantic
import tensorflow as tf

from seqapp import config
from seqapp import datasets
from seqapp import embeddings
from seqapp import evaluation
from seqapp import exporters
from seqapp import plots
from seqapp.data import folds as fold_assignment
from seqapp.data import pipeline
from seqapp.data import readers
from seqapp.data import sources
from seqapp.errors import ConfigError
from seqapp.errors import SeqappError
from seqapp.inputters import Inputter
from seqapp.models import classifier
from seqapp.tasks.base import Run
from seqapp.tasks.base import Task
from seqapp.tasks.base import as_text
from seqapp.tokenizers.characters import CharacterTokenizer
from seqapp.training import warm_start


# ---------------------------------------------------------------- definition

class ClassificationData(config.DataConfig):
    """`data` of a classification definition.

    Attributes:
        format: the user's files: "csv", "tsv" or "jsonl" (text + label).
        text_column, label_column: their columns (JSON keys).
    """

    format: Optional[Literal["csv", "tsv", "jsonl"]] = None
    text_column: str = "text"
    label_column: str = "label"


class BiLMUseConfig(config.Section):
    """`model.bilm`: a pretrained ELMo-style biLM whose layers feed the classifier (Peters et al. 2018).

    Each token gets its word's `ScalarMix` of the biLM's layers (the character CNN's
    token vectors and each LSTM layer, forward and backward), concatenated with its
    embedding or instead of it; words are the tokenizer's (whitespace and punctuation
    split, case folded with `tokenizer.lower_case`).

    Attributes:
        run: a finished language-modelling run folder, or a language-modelling
            definition (`.yaml`) trained first, once, and cached (relative to this
            definition's folder).
        mix: "concat" (embedding and mix) or "replace" (the mix alone).
        trainable: fine-tune the biLM with the classifier; False freezes it (the mix
            weights and the scale are trained either way).
        layer_norm: normalize each layer before mixing.
        standardize: shift and scale each unit of each layer to zero mean and unit
            variance over (a sample of) the training words, measured once when the
            biLM's weights are copied in.
    """

    run: str
    mix: Literal["concat", "replace"] = "concat"
    trainable: bool = False
    layer_norm: bool = False
    standardize: bool = True


class ClassifierModelConfig(config.ModelConfig):
    """A sequence classifier (`seqapp.models.classifier.build_classifier`, whose arguments these are).

    Attributes:
        family: "rnn" (SimpleRNN baseline), "lstm" (stacked), "gru", "bilstm",
            "bigru" (bidirectional) or "tcn" (temporal convolutional network).
        merge_mode: how bidirectional outputs combine.
        recurrent_dropout: dropout on recurrent connections.
        pooling: "last" (final state), "mean"/"max" over real tokens, or "attention".
        kernel_size, dilations, causal, normalization: TCN residual blocks, one
            per dilation; `causal: false` makes each convolution centred.
        bilm: a pretrained biLM's layers as extra input (`BiLMUseConfig`), or null.
    """

    FAMILIES = classifier.FAMILIES

    family: str = "bilstm"
    merge_mode: Literal["concat", "sum", "mul", "ave"] = "concat"
    recurrent_dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    pooling: Literal["last", "mean", "max", "attention"] = "last"
    kernel_size: int = pydantic.Field(3, ge=1)
    dilations: config.IntTuple = (1, 2, 4, 8)
    causal: bool = True
    normalization: Literal["layer", "batch", "none"] = "layer"
    bilm: Optional[BiLMUseConfig] = None


class ClassificationTrainConfig(config.TrainConfig):
    """`train` of a classification definition.

    Attributes:
        folds: > 1 runs k-fold cross-validation instead of the fixed split.
        class_weight: "balanced" weighs each training example by
            `examples / (classes * examples of its class)`, so every class
            counts alike in the loss, as if the training labels were balanced
            (for a skewed training split, or one whose label mix differs from
            the data the model is scored or served on); "none" weighs all
            examples alike.
        init_from: start from another model's weights instead of at random:
            a finished run folder, or a pipeline definition (`.yaml`) that is
            then trained first, once, and kept in the cache. Relative paths
            are taken from the definition file's folder. Every layer with the
            same name and weight shapes is copied: the embeddings and the
            encoder, and the output layer too when the labels are the same. Both
            models must read the same vocabulary (the same tokenizer settings and
            `embeddings.corpus`).
        init_from_keys: dotted keys (`model.units`) whose values this definition
            sets in the `init_from` definition before that one is trained, so a
            model of another size (one that `seqapp tune` searches) still starts
            from a model of its own size; each size is trained once and cached.
    """

    folds: int = pydantic.Field(1, ge=1)
    class_weight: Literal["none", "balanced"] = "none"
    init_from: Optional[str] = None
    init_from_keys: config.StrTuple = ()


class EmbeddingsConfig(config.Section):
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

    corpus: config.StrTuple
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


class ClassificationDefinition(config.Definition):
    """A classification pipeline definition."""

    task: Literal["classification"]
    data: ClassificationData
    model: ClassifierModelConfig = ClassifierModelConfig()
    train: ClassificationTrainConfig = ClassificationTrainConfig()
    embeddings: Optional[EmbeddingsConfig] = None

    def check(self, source):
        if self.train.init_from_keys and self.train.init_from is None:
            raise ConfigError(source, "train.init_from_keys", "set train.init_from (a definition) to pass keys to")
        for key in self.train.init_from_keys:
            if not config.has_key(type(self), key.split(".")):
                raise ConfigError(source, "train.init_from_keys", f"the classification definition has no key {key!r}")
        if self.model.bilm is not None and self.model.bilm.mix == "replace" and self.embeddings is not None:
            raise ConfigError(source, "model.bilm.mix", "replace leaves the model no word embeddings for "
                              "`embeddings` to start: set embeddings: null, or mix: concat")


# ---------------------------------------------------------------- data

class ClassificationInputter(Inputter):
    """`{"text", "label"}` examples -> `({"token_ids", "padding_mask"}, label)` batches.

    With an `embeddings` section the vocabulary is the pretraining corpus's,
    whatever the fold.
    """

    @functools.cached_property
    def tokenizers(self):
        return {"text": self.learned_tokenizer("text")}

    @functools.cached_property
    def label_names(self):
        """Class names in label-id order."""
        return label_names(self.definition)

    @functools.cached_property
    def label_counts(self):
        """Training examples per label index, as a numpy array."""
        labels = self.encoded("train").map(lambda ex: ex["label"], num_parallel_calls=tf.data.AUTOTUNE)
        values = np.concatenate([batch.numpy() for batch in labels.batch(4096)] or [np.zeros([0], np.int64)])
        return np.bincount(values, minlength=len(self.label_names))

    def vocabulary_corpus(self, fields):
        definition = self.definition
        if definition.embeddings is None:
            return super().vocabulary_corpus(fields)
        return ({"corpus": embeddings.corpus_identity(definition)}, lambda: embeddings.corpus_texts(definition),
                "+".join(definition.embeddings.corpus))

    def raw_examples(self, split):
        definition = self.definition
        if self.fold is not None:
            sources.check_split(definition, split)
            return _fold_examples(definition, split, self.fold)
        if definition.data.dataset is not None:
            examples, _ = sources.dataset_split(definition, split)
            return examples.map(lambda ex: {"text": ex["text"], "label": ex["label"]})
        return _user_examples(definition, split)

    @functools.cached_property
    def characters(self):
        """The `CharacterTokenizer` of the words a biLM reads (`model.bilm`), or None."""
        if self.definition.model.bilm is None:
            return None
        return CharacterTokenizer(warm_start.PretrainedBiLM(self.definition).language_model().tokenizer.max_chars)

    def encode(self, examples):
        cfg = self.definition.pipeline
        return pipeline.encode_classification(examples, self.tokenizers["text"], max_length=cfg.max_length,
                                              overlong=cfg.overlong, characters=self.characters)


def label_names(definition):
    """Class names in label-id order: the dataset's, or the sorted labels of the user's training file."""
    data = definition.data
    if data.dataset is not None:
        return list(datasets.builder(data.dataset).info.features["label"].names)
    path = sources.user_file(definition, "train")
    return readers.label_vocabulary(_user_rows(definition, path), path=path)


def _user_examples(definition, split):
    """The user's file of `split` as `{"text", "label"}` examples, labels encoded as in training."""
    path = sources.user_file(definition, split)
    return _labelled(_user_rows(definition, path), label_names(definition), path)


def _labelled(rows, labels, path):
    ids = readers.encode_labels(rows, labels, path=path)
    return tf.data.Dataset.from_tensor_slices({"text": [row["text"] for row in rows],
                                               "label": tf.constant(ids, tf.int64)})


@functools.lru_cache(maxsize=16)
def _user_rows(definition, path):
    data = definition.data
    return readers.read_text_classification(path, text_column=data.text_column, label_column=data.label_column,
                                            format=data.format, encoding=data.encoding)


def _fold_examples(definition, split, fold):
    """Cross-validation parts of all labelled examples.

    A dataset that ships folds (MR's `fold` feature, k = 10) is split by them, so
    every user of MR compares on the same folds; otherwise folds are assigned
    with `folds.stratified_folds`.
    """
    k = definition.train.folds
    if not 0 <= fold < k:
        raise ConfigError(definition.origin, "fold", f"fold {fold} is outside 0..{k - 1}")
    texts, labels, shipped = _all_labelled(definition)
    if shipped is not None and shipped.max() + 1 != k:
        raise ConfigError(
            definition.origin, "train.folds", f"{definition.data.dataset} ships {shipped.max() + 1} folds, not {k}"
        )
    assigned = shipped if shipped is not None else fold_assignment.stratified_folds(labels, k)
    wanted = {"test": assigned == fold, "validation": assigned == (fold + 1) % k}
    wanted["train"] = ~(wanted["test"] | wanted["validation"])
    keep = wanted[split]
    return tf.data.Dataset.from_tensor_slices({"text": texts[keep], "label": tf.constant(labels[keep], tf.int64)})


@functools.lru_cache(maxsize=4)
def _all_labelled(definition):
    """Texts, labels and shipped folds (or None) of every labelled example of every split."""
    data = definition.data
    if data.dataset is not None:
        builder = datasets.prepare(data.dataset)
        parts = [builder.as_dataset(split=split, shuffle_files=False) for split in builder.info.splits]
    else:
        parts = [sources.limit(definition, split, _user_examples(definition, split))
                 for split in sources.SPLITS if getattr(data, split) is not None]
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


def balanced_class_weights(counts):
    """`{class: examples / (classes * examples of the class)}` (sklearn's "balanced"); a class
    absent from training gets weight 1 (it has no example to weigh).

    >>> balanced_class_weights(np.array([30, 10]))
    {0: 0.6666666666666666, 1: 2.0}
    """
    counts = np.asarray(counts)
    total, classes = counts.sum(), len(counts)
    return {index: float(total / (classes * count)) if count else 1.0 for index, count in enumerate(counts)}


# ---------------------------------------------------------------- the task

@dataclasses.dataclass
class ClassificationRun(Run):
    """A finished classification run; `labels` are its class names in label-id order."""

    labels: list = None


class ClassificationTask(Task):
    name = "classification"
    inputter_class = ClassificationInputter
    definition_class = ClassificationDefinition
    export_name = "sentiment"
    monitor = "accuracy"
    summary_metrics = ("accuracy", "macro_f1")

    def folds(self, definition):
        return definition.train.folds

    def write_run_files(self, inputter, folder):
        folder.copy_in(inputter.tokenizers["text"].vocab_path, "vocab.txt")
        folder.write_text("labels.txt", "".join(f"{label}\n" for label in inputter.label_names))
        super().write_run_files(inputter, folder)

    def warm_starts(self, definition, inputter):
        tokenizer, starts = inputter.tokenizers["text"], []
        if definition.embeddings is not None:
            starts.append(warm_start.PretrainedEmbeddings(definition, tokenizer, definition.model.embedding_dim))
        if definition.train.init_from is not None:
            starts.append(warm_start.InitFrom(definition, tokenizer, inputter.label_names))
        if definition.model.bilm is not None:
            starts.append(warm_start.PretrainedBiLM(definition, inputter))
        return starts

    def build_model(self, inputter, hp=None):
        definition = inputter.definition
        arguments = definition.model.model_dump(exclude={"bilm"})
        if definition.model.bilm is not None:
            language_model = warm_start.PretrainedBiLM(definition).language_model()
            lm, use = language_model.model, definition.model.bilm
            arguments["bilm"] = dict(
                max_chars=language_model.tokenizer.max_chars, filters=lm.filters, char_embedding_dim=lm.embedding_dim,
                highway_layers=lm.highway_layers, projection_dim=lm.projection_dim, units=lm.units,
                num_layers=lm.num_layers, cell_clip=lm.cell_clip, projection_clip=lm.projection_clip, mix=use.mix,
                layer_norm=use.layer_norm, standardize=use.standardize)
        return classifier.build_classifier(inputter.tokenizers["text"].vocab_size + 1, len(inputter.label_names),
                                           **arguments)

    def compile(self, model, definition):
        cfg = definition.train
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate, clipnorm=cfg.clipnorm),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    def tuning_objective(self):
        return "val_accuracy", "max"

    def fit_options(self, inputter):
        balanced = inputter.definition.train.class_weight == "balanced"
        return {"class_weight": balanced_class_weights(inputter.label_counts) if balanced else None}

    def load_run(self, work_dir, definition):
        work_dir = Path(work_dir)
        training = work_dir / "training.json"
        return ClassificationRun(
            work_dir=work_dir, definition=definition,
            model=keras.models.load_model(work_dir / "best.keras", compile=False),  # for predictions only
            tokenizers={"text": self.run_tokenizer(definition, work_dir / "vocab.txt")},
            fold=json.loads(training.read_text()).get("fold") if training.exists() else None,
            labels=(work_dir / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1])

    def run_inputter(self, run):
        inputter = super().run_inputter(run)
        inputter.characters = _characters(run.model)  # what the model reads, without resolving its biLM run again
        return inputter

    def evaluate(self, run, splits, *, inputter=None, **options):
        _refuse(options)
        inputter = inputter or self.run_inputter(run)
        results = {}
        for split, batches in self.split_datasets(inputter, splits):
            metrics = evaluation.classify(run.model, batches, run.labels)
            if metrics is not None:  # None: an unlabelled split (GLUE hides SST-2's test labels)
                results[split] = self._plot(run, split, metrics)
        return evaluation.merge_metrics(run.work_dir, results, labels=run.labels)

    def evaluate_files(self, run, files, **options):
        _refuse(options)
        if set(files) - {"data"} or "data" not in files:
            raise SeqappError("a classification run is evaluated on --split or on --data FILE (a labelled "
                              "CSV/TSV/JSONL file with the run's text and label columns)")
        path, data = files["data"], run.definition.data
        rows = readers.read_text_classification(path, text_column=data.text_column, label_column=data.label_column,
                                                encoding=data.encoding)  # the format from the file's suffix
        inputter = self.run_inputter(run)
        batches = pipeline.batch_dataset(inputter.encode(_labelled(rows, run.labels, path)), mode="batch_max",
                                         batch_size=run.definition.pipeline.batch_size)
        return {Path(path).name: evaluation.classify(run.model, batches, run.labels)}

    def _plot(self, run, split, metrics):
        plots.confusion_matrix(metrics["confusion_matrix"], run.labels, Path(run.work_dir) / f"confusion_{split}.png",
                               title=f"{split}: accuracy {metrics['accuracy']:.3f}")
        return metrics

    def format_metrics(self, results, work_dir):
        labels = (Path(work_dir) / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1]
        lines = []
        for split, metrics in results.items():
            lines.append(f"{split}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
                         f"({metrics['examples']} examples)")
            lines.append(evaluation.confusion_text(metrics["confusion_matrix"], labels))
        return "\n".join(lines)

    def signatures(self, run):
        model, tokenizer, max_length = run.model, run.tokenizers["text"], run.definition.pipeline.max_length
        classes = tf.constant(run.labels)

        characters = _characters(model)

        def predict(texts):
            if characters is None:
                ids = tokenizer.tokenize_padded(texts, max_length)
                inputs = {"token_ids": ids, "padding_mask": ids != 0}
            else:
                features = pipeline.word_features(tokenizer, characters, texts)
                inputs = {key: _padded(value[:, :max_length]) for key, value in features.items()}
                ids = inputs.pop("text")
                inputs.update(token_ids=ids, padding_mask=ids != 0)
            probabilities = model(inputs, training=False)
            return {
                "label": tf.gather(classes, tf.argmax(probabilities, axis=-1)),
                "probabilities": probabilities,
                "classes": tf.tile(classes[None, :], [tf.shape(ids)[0], 1]),
            }

        def classify(serialized):
            features = tf.io.parse_example(serialized,
                                           {"text": tf.io.FixedLenFeature([], tf.string, default_value="")})
            outputs = predict(features["text"])
            return {"classes": outputs["classes"], "scores": outputs["probabilities"]}

        return [model, tokenizer, *([characters] if characters is not None else [])], [
            exporters.Signature("serving_default", predict, [tf.TensorSpec([None], tf.string, name="text")]),
            exporters.Signature("classify", classify, [tf.TensorSpec([None], tf.string, name="inputs")],
                                method_name=exporters.CLASSIFY_METHOD),
        ]

    def example_inputs(self, run):
        texts = self.warmup_inputs(run)["text"]
        examples = [tf.train.Example(features=tf.train.Features(feature={
            "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text]))})).SerializeToString()
            for text in texts]
        return {**super().example_inputs(run), "classify": {"inputs": examples}}

    def card(self, run):
        return {**super().card(run), "labels": list(run.labels)}

    def demo_definition(self, small=False):
        definition = {
            "task": self.name,
            "data": {"dataset": "mr_polarity"},
            "tokenizer": {"vocab_size": 4000},
            "pipeline": {"max_length": 64, "tokens_per_batch": 2048},
            "model": {"family": "bilstm", "embedding_dim": 64, "units": 32, "dropout": 0.5, "pooling": "max"},
            "train": {"epochs": 3, "early_stopping_patience": 1},
        }
        if small:
            definition["data"]["splits"] = {"validation": "validation[:100]", "test": "test[:100]"}
            definition["data"]["max_train_examples"] = 400
            definition["tokenizer"]["vocab_size"] = 500
            definition["model"].update(embedding_dim=8, units=8)
            definition["train"]["epochs"] = 1
        return definition

    def demo_inputs(self):
        return {"text": ["a moving , beautifully acted film that stays with you .",
                         "a tedious , clumsy mess with nothing to say .", "", "Not bad at all 😀"]}

    def format_outputs(self, inputs, outputs):
        return "\n".join(f"  {as_text(label):>4} {[round(float(p), 3) for p in probabilities]}  {text!r}"
                         for text, label, probabilities in zip(inputs["text"], outputs["label"],
                                                                outputs["probabilities"]))


def _characters(model):
    """The `CharacterTokenizer` a classifier with a biLM reads its words with (its `chars` input's
    width), or None."""
    inputs = model.input if isinstance(model.input, dict) else {}
    return CharacterTokenizer(int(inputs["chars"].shape[-1])) if "chars" in inputs else None


def _padded(ragged):
    """A ragged batch as a dense one, at least one column wide (a batch of empty texts stays a valid input)."""
    shape = [ragged.nrows(out_type=tf.int32), tf.maximum(tf.cast(ragged.bounding_shape(axis=1), tf.int32), 1)]
    return ragged.to_tensor(default_value=0, shape=shape + ragged.shape[2:].as_list())


def _refuse(options):
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise SeqappError(f"{', '.join('--' + name.replace('_', '-') for name in given)}: not an option of "
                          "classification runs")
