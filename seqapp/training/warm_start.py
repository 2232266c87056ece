"""Starting a model from pretrained weights instead of at random: one mechanism, several sources.

A `WarmStart` names where some layers' starting weights come from. The runner
calls `resolve()` on each before the model is built (the costly part, done once
and cached: learning word2vec vectors, training the run a model starts from),
then `apply(model)` after it is built, in order, so a later source overrides an
earlier one for the layers they share. A task lists its warm starts from its
definition (`Task.warm_starts`).

- `PretrainedEmbeddings`: word2vec vectors for the token embedding (`seqapp.embeddings`).
- `InitFrom`: every layer of another run's model with the same name and weight shapes.
"""

import hashlib
import json
from pathlib import Path

import keras

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
    """The finished run folder `train.init_from` names. A definition file there is trained
    first, once, into `SEQAPP_CACHE_DIR/init_runs/` (keyed by its settings and data); it is
    trained in a temporary folder and renamed into place, so a run found there is whole.

    Raises:
        ConfigError: the path is neither a run folder with a trained model nor a definition.
    """
    from seqapp import runner  # the runner trains; it also calls this module

    path = Path(definition.base_dir, definition.train.init_from)
    if path.is_dir():
        if not (path / "best.keras").exists():
            raise ConfigError(definition.origin, "train.init_from", f"{path} holds no trained model (best.keras)")
        return path
    if not path.is_file():
        raise ConfigError(definition.origin, "train.init_from",
                          f"{path} is neither a run folder nor a pipeline definition")
    source = config.load_definition(path)
    if getattr(source.train, "init_from", None) is not None:  # keeps the cache key whole (and rules out cycles)
        raise ConfigError(path, "train.init_from", "a definition used as another's init_from starts at random")
    key = json.dumps({"definition": source.model_dump(mode="json", exclude={"origin", "base_dir"}),
                      "data": sources.identity(source)}, sort_keys=True)
    work_dir = settings.cache_dir() / "init_runs" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if not work_dir.exists():
        print(f"Training {path} first (train.init_from of {definition.origin}) for {work_dir} ...", flush=True)
        with atomic.atomic_path(work_dir, directory=True) as tmp:
            runner.train(source, tmp)
    return work_dir


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
