"""Starting a model from pretrained weights instead of at random: one mechanism, several sources.

A `WarmStart` names where some layers' starting weights come from. The runner
calls `resolve()` on each before the model is built (the costly part, done once
and cached: learning word2vec vectors, training the run a model starts from),
then `apply(model)` after it is built, in order, so a later source overrides an
earlier one for the layers they share. A task lists its warm starts from its
definition (`Task.warm_starts`).

- `PretrainedEmbeddings`: word2vec vectors for the token embedding (`seqapp.embeddings`).
- `InitFrom`: every layer of another run's model with the same name and weight shapes.
- `PretrainedBiLM`: a classifier's character CNN and biLM LSTMs from a language-modelling run.
"""

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from seqapp import atomic
from seqapp import config
from seqapp import embeddings
from seqapp import settings
from seqapp.data import sources
from seqapp.errors import ConfigError


class WarmStart:
    """A source of starting weights for some layers of a model about to be trained."""

    def resolve(self):
        """Makes the weights available (learns or trains them once; cached). Runs before the model is built."""

    def apply(self, model):
        """Sets the weights into `model`; returns the names of the layers set."""
        raise NotImplementedError


class PretrainedEmbeddings(WarmStart):
    """The `embedding` layer starts from word2vec vectors learned on `embeddings.corpus`.

    Args:
        definition: a definition with an `embeddings` section.
        tokenizer: the run's tokenizer (its vocabulary is the rows).
        dim: the embedding size.
        layer: the embedding layer's name.
    """

    def __init__(self, definition, tokenizer, dim, layer="embedding"):
        self.definition = definition
        self.tokenizer = tokenizer
        self.dim = dim
        self.layer = layer
        self.vectors = None

    def resolve(self):
        self.vectors = embeddings.pretrained_embeddings(self.definition, self.tokenizer, self.dim)

    def apply(self, model):
        layer = model.get_layer(self.layer)
        layer.set_weights([self.vectors])
        layer.trainable = self.definition.embeddings.trainable
        return [self.layer]


class InitFrom(WarmStart):
    """Layers start from the model of the run `train.init_from` names (see `initial_run`
    and `copy_layers`).

    Args:
        definition: the definition whose `train.init_from` is set.
        tokenizer: the run's tokenizer; the other run must have read the same vocabulary.
        labels: this run's label names; the output layer is copied only when they are the same.
    """

    def __init__(self, definition, tokenizer, labels):
        self.definition = definition
        self.tokenizer = tokenizer
        self.labels = labels
        self.run_dir = None

    def resolve(self):
        self.run_dir = initial_run(self.definition)

    def apply(self, model):
        return copy_layers(model, self.run_dir, self.tokenizer, self.labels, self.definition.origin)


def initial_run(definition):
    """The finished run folder `train.init_from` names (see `trained_run`), trained with
    `definition`'s values of its `train.init_from_keys`."""
    values = definition.model_dump(mode="json")
    shared = {}
    for dotted in definition.train.init_from_keys:
        value = values
        for part in dotted.split("."):
            value = value[part]
        shared[dotted] = value
    return trained_run(definition, definition.train.init_from, "train.init_from", shared)


def trained_run(definition, reference, key, overrides=None):
    """The finished run folder `reference` names: a run folder, or a definition file that is then
    trained first, once, into `SEQAPP_CACHE_DIR/init_runs/` (keyed by its settings and data); it is
    trained in a temporary folder and renamed into place, so a run found there is whole.

    Args:
        definition: the definition that refers to it (relative paths start at its folder).
        reference: the path it gives.
        key: the key that gives it, for errors.
        overrides: `{"section.key": value}` set in the definition file before it is trained.

    Raises:
        ConfigError: the path is neither a run folder with a trained model nor a definition, or
            `overrides` are given for a run folder (whose model is already trained).
    """
    from seqapp import runner  # the runner trains; it also calls this module

    path = Path(definition.base_dir, reference)
    if path.is_dir():
        if not (path / "best.keras").exists():
            raise ConfigError(definition.origin, key, f"{path} holds no trained model (best.keras)")
        if overrides:
            raise ConfigError(definition.origin, key, f"{path} is a trained run: keys ({', '.join(overrides)}) "
                              "can be passed to a definition only")
        return path
    if not path.is_file():
        raise ConfigError(definition.origin, key, f"{path} is neither a run folder nor a pipeline definition")
    source = config.load_definition(path, overrides)
    if getattr(source.train, "init_from", None) is not None:  # keeps the cache key whole (and rules out cycles)
        raise ConfigError(path, "train.init_from", "a definition used as another's starting point starts at random")
    # Without init_from, init_from_keys is empty: leaving it out keeps runs cached before it existed.
    values = source.model_dump(mode="json", exclude={"origin": True, "base_dir": True, "train": {"init_from_keys"}})
    cache_key = json.dumps({"definition": values, "data": sources.identity(source)}, sort_keys=True)
    work_dir = settings.cache_dir() / "init_runs" / hashlib.sha256(cache_key.encode()).hexdigest()[:16]
    if not work_dir.exists():
        print(f"Training {path} first ({key} of {definition.origin}) for {work_dir} ...", flush=True)
        with atomic.atomic_path(work_dir, directory=True) as tmp:
            runner.train(source, tmp)
    return work_dir


class PretrainedBiLM(WarmStart):
    """A classifier's biLM layers start from a language-modelling run (`model.bilm.run`).

    The run is a finished language-modelling run folder, or a definition trained
    first, once, and cached (`trained_run`). Its character CNN and LSTM stacks
    are copied into the classifier's `bilm_token_encoder` and `bilm_encoder`
    layers, frozen unless `model.bilm.trainable`. With `model.bilm.standardize`
    the classifier's `bilm_standardize_<j>` layers (`keras.layers.Normalization`)
    are then adapted to the biLM's layers over the first `STANDARDIZE_BATCHES`
    training batches' words (padding words left out).

    Args:
        definition: a classification definition whose `model.bilm` is set.
        inputter: the classifier's inputter, whose training batches `apply` reads
            when it standardizes; None only to read the run's architecture.
    """

    LAYERS = {"bilm_token_encoder": "token_encoder", "bilm_encoder": "encoder"}
    STANDARDIZE_BATCHES = 32
    # A unit that barely varies over the sample (held at the clip) must not be blown up wherever it
    # does vary: no unit's spread counts as less than a tenth of its layer's median spread.
    MIN_STD_SHARE = 0.1

    def __init__(self, definition, inputter=None):
        self.definition = definition
        self.inputter = inputter
        self.run_dir = None

    def resolve(self):
        self.run_dir = trained_run(self.definition, self.definition.model.bilm.run, "model.bilm.run")
        return self.run_dir

    def language_model(self):
        """The run's definition (its architecture) — the run is resolved first if it is not yet."""
        from seqapp import runner

        definition = runner.run_definition(self.run_dir or self.resolve())
        if not hasattr(definition.model, "projection_dim"):  # a biLM's architecture, which the classifier rebuilds
            raise ConfigError(self.definition.origin, "model.bilm.run", f"{self.run_dir} is a {definition.task} run, "
                              "not a language model")
        return definition

    def apply(self, model):
        source = keras.models.load_model(Path(self.run_dir) / "best.keras", compile=False)
        for name, attribute in self.LAYERS.items():
            layer = model.get_layer(name)
            layer.set_weights(getattr(source, attribute).get_weights())
            layer.trainable = self.definition.model.bilm.trainable
        print(f"Starting the biLM layers from {self.run_dir} "
              f"({'fine-tuned' if self.definition.model.bilm.trainable else 'frozen'})", flush=True)
        if not self.definition.model.bilm.standardize:
            return list(self.LAYERS)
        return [*self.LAYERS, *self._standardize(model)]

    def _standardize(self, model):
        """Adapts each `bilm_standardize_<j>` layer to its biLM layer's units over the training words."""
        token_encoder, encoder = model.get_layer("bilm_token_encoder"), model.get_layer("bilm_encoder")
        probe = keras.Model(model.input["chars"], encoder.output)
        names = [f"bilm_standardize_{index}" for index in range(len(encoder.output))]
        samples = [[] for _ in names]
        for features, _ in self.inputter.dataset("train", training=False).take(self.STANDARDIZE_BATCHES):
            chars = features["chars"]
            words = keras.ops.convert_to_numpy(token_encoder.compute_mask(chars))
            for sample, layer in zip(samples, probe(chars)):
                sample.append(keras.ops.convert_to_numpy(layer)[words])
        for name, sample in zip(names, samples):
            vectors = np.concatenate(sample)
            std = vectors.std(axis=0)
            std = np.maximum(std, self.MIN_STD_SHARE * np.median(std))
            normalization = model.get_layer(name)
            # Normalization's own adapt() would keep near-constant units' tiny variances: set its state.
            normalization.adapt_mean.assign(vectors.mean(axis=0))
            normalization.adapt_variance.assign(np.square(std))
            normalization.count.assign(len(vectors))
            normalization.finalize_state()
        print(f"Standardized the biLM's {len(names)} layers on {sum(len(s) for s in samples[0]):,} training words",
              flush=True)
        return names


def copy_layers(model, run_dir, tokenizer, labels, origin):
    """Copies into `model` the weights of each layer of `run_dir`'s best model that has the
    same name and weight shapes; the output layer only when the labels are the same.

    Returns:
        The names of the layers copied.

    Raises:
        ConfigError: the run read another vocabulary, or no layer fits.
    """
    run_dir = Path(run_dir)
    if (run_dir / "vocab.txt").read_bytes() != Path(tokenizer.vocab_path).read_bytes():
        raise ConfigError(origin, "train.init_from", f"{run_dir} used another vocabulary: give both definitions "
                          "the same tokenizer settings and embeddings.corpus")
    source = keras.models.load_model(run_dir / "best.keras")
    same_labels = (run_dir / "labels.txt").read_text(encoding="utf-8").split("\n")[:-1] == list(labels)
    copied = []
    for layer in model.layers:
        if not layer.weights or (layer.name == "probabilities" and not same_labels):
            continue
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        if [tuple(w.shape) for w in other.weights] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(other.get_weights())
            copied.append(layer.name)
    if not copied:
        raise ConfigError(origin, "train.init_from", f"no layer of {run_dir}'s model has this model's name and "
                          "weight shapes (another model family or size?)")
    print(f"Starting from {run_dir}: {', '.join(copied)}", flush=True)
    return copied
