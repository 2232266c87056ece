"""Captioning (one-to-many): image -> text.

Data: images with every caption each has, from a built-in dataset
(`shapes_captions`: generated scenes, with the scene itself so that evaluation
can check what a caption says) or the user's image folder with a captions file
per split (TSV or COCO-style JSON) or one Karpathy-split JSON. Models:
`seqapp.models.captioner` (a CNN image encoder, and an LSTM with soft attention
or a Transformer decoder), trained with teacher forcing, a masked,
label-smoothed loss; checkpointed and stopped on the exact match of greedily
decoded validation captions. Evaluation captions whole splits
(`seqapp.captioner`, the graph the export serves) for BLEU-4, CIDEr-D, exact
match and, on `shapes_captions`, slot accuracy and held-out-pair recall.
The export answers `image_bytes` -> `caption`, `score`, and `caption_explain`
adds the tokens and the attention over the image.
"""

import dataclasses
import functools
import io
import itertools
import json
from pathlib import Path
from typing import Literal, Optional

import keras
import numpy as np
import pydantic
import tensorflow as tf

from seqapp import config
from seqapp import evaluation
from seqapp import exporters
from seqapp import plots
from seqapp.captioner import Captioner
from seqapp.data import images
from seqapp.data import pipeline
from seqapp.data import readers
from seqapp.data import sources
from seqapp.errors import ConfigError
from seqapp.errors import SeqappError
from seqapp.inputters import Inputter
from seqapp.losses import compile_sequence_model
from seqapp.models import captioner as captioners
from seqapp.tasks.base import Run
from seqapp.tasks.base import Task
from seqapp.tasks.base import as_text
from seqapp.training.decoded_metric import DecodedMetric

# A run keeps a few of its validation images, encoded as a client would send them, for warmup.
_WARMUP_IMAGES = 4
_EVAL_BATCH = 64
# Validation images captioned after every epoch for checkpointing and early stopping.
_MONITORED_IMAGES = 500


# ---------------------------------------------------------------- definition

class CaptioningData(config.DataConfig):
    """`data` of a captioning definition.

    Attributes:
        format: the user's files: "captions" (a captions file per split, TSV
            `image<TAB>caption` or COCO-style JSON, see `readers.read_captions`)
            or "karpathy" (one Karpathy-split JSON as `train`, whose entries say
            their split).
        images: the folder the user's captions files name images in.
        captions_per_image: training examples per image: this many of its
            captions (all when it has fewer).
        caption_choice: which: "random" (drawn per image with the
            definition's seed) or "first" (in the order the data lists them:
            `shapes_captions` lists a scene's captions sorted, so the first
            names the objects in one fixed order, which spares the decoder
            guessing an order it cannot see).
    """

    format: Optional[Literal["captions", "karpathy"]] = None
    images: Optional[str] = None
    captions_per_image: int = pydantic.Field(5, ge=1)
    caption_choice: Literal["random", "first"] = "random"


class CaptionerModelConfig(config.ModelConfig):
    """A captioner (`seqapp.models.captioner.build_captioner`, whose arguments these are;
    `embedding_dim` is its `dim`).

    Attributes:
        family: "lstm_attention" (Show, Attend and Tell) or "transformer".
        image_size: images are resized to this square size.
        embedding_dim: width of the image memory and of the token embeddings.
        units: the LSTM's width.
        num_layers: the Transformer's decoder layers.
        num_encoder_layers: Transformer self-attention layers over the feature map.
        num_heads, ffn_dim: the Transformer's attention heads and feed-forward size.
        encoder_filters, encoder_blocks, encoder_norm: the CNN trained from scratch.
        encoder_colour_channels: a pointwise colour stream beside that CNN,
            which then reads the image without its hue (0: none); it helps
            colour-shape pairs never seen in training.
        backbone, backbone_weights, backbone_alpha, backbone_layer: a
            `keras.applications` backbone instead of that CNN, its weights file
            (relative paths from the definition's folder), width multiplier and
            feature layer.
        attention_regularization: the LSTM's doubly stochastic attention penalty.
    """

    FAMILIES = captioners.CAPTIONER_FAMILIES

    family: str = "transformer"
    image_size: int = pydantic.Field(64, ge=8)
    num_encoder_layers: int = pydantic.Field(0, ge=0)
    num_heads: int = pydantic.Field(4, ge=1)
    ffn_dim: int = pydantic.Field(512, ge=1)
    dropout: float = pydantic.Field(0.1, ge=0.0, lt=1.0)
    encoder_filters: int = pydantic.Field(16, ge=1)
    encoder_blocks: int = pydantic.Field(3, ge=1)
    encoder_norm: Literal["batch", "layer"] = "batch"
    encoder_colour_channels: int = pydantic.Field(0, ge=0)
    backbone: Optional[str] = None
    backbone_weights: Optional[str] = None
    backbone_alpha: float = pydantic.Field(1.0, gt=0.0)
    backbone_layer: Optional[str] = None
    attention_regularization: float = pydantic.Field(0.0, ge=0.0)


class CaptioningDefinition(config.Definition):
    """A captioning pipeline definition."""

    task: Literal["captioning"]
    data: CaptioningData
    model: CaptionerModelConfig = CaptionerModelConfig()
    pipeline: config.PipelineConfig = config.PipelineConfig(max_length=32)
    train: config.SequenceTrainConfig = config.SequenceTrainConfig()
    decode: config.SearchConfig = config.SearchConfig()

    def check(self, source):
        data = self.data
        if data.dataset is None and data.images is None:
            raise ConfigError(source, "data.images", "the user's captions need the folder of their images")
        if data.format == "karpathy" and (data.validation or data.test):
            raise ConfigError(source, f"data.{'validation' if data.validation else 'test'}",
                              "a Karpathy-split JSON holds every split: give it as data.train only")
        if self.model.backbone_weights and not self.model.backbone:
            raise ConfigError(source, "model.backbone_weights", "weights for no backbone: set model.backbone")


# ---------------------------------------------------------------- data

class CaptioningInputter(Inputter):
    """Images with their captions -> teacher-forced `({"image", "decoder_*"}, target_ids)` batches.

    Raw examples are one per image: `{"image": uint8 [S, S, 3], "captions": string [n],
    "scene": string}` (`scene` is the JSON scene of `shapes_captions`, "" otherwise). Each
    image makes `data.captions_per_image` training examples; batches carry the image as
    float32 in [0, 1], the input the export's decoding gives the model.
    """

    @functools.cached_property
    def tokenizers(self):
        return {"caption": self.learned_tokenizer("captions")}

    @property
    def image_size(self):
        return self.definition.model.image_size

    def vocabulary_corpus(self, fields):
        identity, _, what = super().vocabulary_corpus(fields)
        return identity, lambda: self.examples("train").flat_map(
            lambda ex: tf.data.Dataset.from_tensor_slices(ex["captions"])), what

    def raw_examples(self, split):
        definition, size = self.definition, self.image_size
        if definition.data.dataset is None:
            return _user_images(definition, split, size)
        examples, features = sources.dataset_split(definition, split)
        scene = "scene" in features
        return examples.map(lambda ex: {"image": _resized(ex["image"], size), "captions": ex["captions"],
                                        "scene": ex["scene"] if scene else tf.constant("")},
                            num_parallel_calls=tf.data.AUTOTUNE)

    def encode(self, examples):
        cfg, data, seed = self.definition.pipeline, self.definition.data, self.definition.seed

        def pairs(index, ex):
            captions = ex["captions"]
            if data.caption_choice == "random":
                captions = tf.random.experimental.stateless_shuffle(captions, seed=[seed, index])
            chosen = captions[:data.captions_per_image]
            return tf.data.Dataset.from_tensor_slices(chosen).map(lambda text: {"image": ex["image"], "caption": text})

        return pipeline.encode_captions(examples.enumerate().flat_map(pairs), self.tokenizers["caption"],
                                        max_length=cfg.max_length, overlong=cfg.overlong)

    def dataset(self, split, *, training, batching_mode=None, input_context=None):
        batches = super().dataset(split, training=training, batching_mode=batching_mode, input_context=input_context)
        return batches.map(lambda features, labels: ({**features, "image": _pixels(features["image"])}, labels))


def _pixels(image):
    """uint8 images as the float32 in [0, 1] the model reads."""
    return tf.cast(image, tf.float32) / 255.0


def _resized(image, size):
    """A uint8 image resized (bilinear) to `size` x `size`, unchanged when it already is."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, [size, size])), 0, 255), tf.uint8)


@functools.lru_cache(maxsize=16)
def _user_rows(definition, split):
    """The user's `{image_path, caption}` rows of `split` (read and checked once)."""
    data = definition.data
    folder = Path(definition.base_dir, data.images)
    if data.format == "karpathy":
        rows = readers.read_karpathy_split(sources.user_file(definition, "train"), folder, encoding=data.encoding)
        rows = [row for row in rows if row["split"] == split]
        if not rows:
            raise ConfigError(definition.origin, "data.train", f"the Karpathy JSON has no {split!r} images")
        return rows
    return readers.read_captions(folder, sources.user_file(definition, split), encoding=data.encoding)


def _user_images(definition, split, size):
    """One raw example per image of the user's rows, its captions in file order."""
    captions = {}
    for row in _user_rows(definition, split):
        captions.setdefault(row["image_path"], []).append(row["caption"])
    examples = tf.data.Dataset.from_tensor_slices({"path": list(captions),
                                                   "captions": tf.ragged.constant(list(captions.values()))})

    def load(ex):
        image = tf.cast(tf.round(images.load_image(ex["path"], size) * 255.0), tf.uint8)
        return {"image": image, "captions": ex["captions"], "scene": tf.constant("")}

    return examples.map(load, num_parallel_calls=tf.data.AUTOTUNE)


# ---------------------------------------------------------------- the task

@dataclasses.dataclass
class CaptioningRun(Run):
    """A finished captioning run; `captioner` captions with its model and tokenizer."""

    captioner: Captioner = None


class CaptioningTask(Task):
    name = "captioning"
    inputter_class = CaptioningInputter
    definition_class = CaptioningDefinition
    export_name = "captioning"
    monitor = "exact_match"

    def write_run_files(self, inputter, folder):
        folder.copy_in(inputter.tokenizers["caption"].vocab_path, "caption_vocab.txt")
        for split in ("validation", "train"):
            try:
                examples = inputter.examples(split).take(_WARMUP_IMAGES)
                pictures = [ex["image"] for ex in examples.as_numpy_iterator()]
                break
            except ConfigError:  # no validation split
                continue
        # What clients send: mostly PNG, one JPEG.
        for index, picture in enumerate(pictures):
            kind = "jpeg" if index == len(pictures) - 1 and index else "png"
            folder.write_bytes(f"warmup/{index}.{kind}", _encode(picture, kind))

    def monitored(self, has_validation):
        # Greedy captions of validation images, which the loss hardly predicts: it also counts which of
        # several equally right paraphrases the model expects. Without a validation split, the loss.
        return ("val_exact_match", "max") if has_validation else ("loss", "min")

    def callbacks(self, inputter):
        definition = inputter.definition
        examples = inputter.examples("validation").take(_MONITORED_IMAGES).cache()
        tokenizer = inputter.tokenizers["caption"]

        def measure(model):
            captioner = Captioner(model, tokenizer, max_length=definition.pipeline.max_length,
                                  decode=definition.decode, image_size=definition.model.image_size)
            hypotheses, references, _ = caption_all(captioner, examples, beam_size=1)
            metrics = evaluation.caption_metrics(hypotheses, references)
            return {"exact_match": metrics["exact_match"], "bleu4": metrics["bleu4"]}

        return [DecodedMetric(measure)]

    def tuning_objective(self):
        # BLEU-4 of the greedy validation captions `callbacks` decodes for exact match anyway: it also
        # credits a caption that is nearly right, which ranks weak early trials apart.
        return "val_bleu4", "max"

    def build_model(self, inputter, hp=None):
        cfg = inputter.definition.model.model_dump()
        cfg["dim"] = cfg.pop("embedding_dim")
        if cfg["backbone_weights"]:
            cfg["backbone_weights"] = str(Path(inputter.definition.base_dir, cfg["backbone_weights"]))
        return captioners.build_captioner(inputter.tokenizers["caption"].vocab_size + 1, **cfg)

    def compile(self, model, definition):
        compile_sequence_model(model, definition.train)

    def load_run(self, work_dir, definition):
        work_dir = Path(work_dir)
        model = keras.models.load_model(work_dir / "best.keras")
        tokenizer = self.run_tokenizer(definition, work_dir / "caption_vocab.txt")
        captioner = Captioner(model, tokenizer, max_length=definition.pipeline.max_length, decode=definition.decode,
                              image_size=definition.model.image_size)
        return CaptioningRun(work_dir=work_dir, definition=definition, model=model,
                             tokenizers={"caption": tokenizer}, captioner=captioner)

    def evaluate(self, run, splits, *, inputter=None, beam_size=None):
        """Perplexity (teacher-forced) and the caption metrics (`evaluation.caption_metrics`) of
        each split, captioned by the run's `Captioner`; `beam_size` overrides `decode.beam_size`."""
        inputter = inputter or self.run_inputter(run)
        results = {}
        for split, batches in self.split_datasets(inputter, splits):
            hypotheses, references, scenes = caption_all(run.captioner, inputter.examples(split), beam_size=beam_size)
            results[split] = {**evaluation.caption_metrics(hypotheses, references, scenes),
                              "perplexity": evaluation.perplexity(run.model, batches),
                              "beam_size": beam_size or run.definition.decode.beam_size}
        return evaluation.merge_metrics(run.work_dir, results)

    def evaluate_after_training(self, run, inputter):
        return self.evaluate(run, ("validation", "test", "test_compositional"), inputter=inputter, beam_size=1)

    def evaluate_files(self, run, files, *, beam_size=None):
        if set(files) != {"data", "images"}:
            raise SeqappError("a captioning run is evaluated on --split, or on --data CAPTIONS (TSV or COCO JSON) "
                              "with --images FOLDER")
        rows = readers.read_captions(files["images"], files["data"])
        captions = {}
        for row in rows:
            captions.setdefault(row["image_path"], []).append(row["caption"])
        size = run.definition.model.image_size
        examples = tf.data.Dataset.from_tensor_slices(list(captions)).map(
            lambda path: {"image": tf.cast(tf.round(images.load_image(path, size) * 255.0), tf.uint8),
                          "captions": tf.constant([""]), "scene": tf.constant("")})
        hypotheses, _, _ = caption_all(run.captioner, examples, beam_size=beam_size)
        return {Path(files["data"]).name: evaluation.caption_metrics(hypotheses, list(captions.values()))}

    def format_metrics(self, results, work_dir):
        lines = []
        for split, metrics in results.items():
            parts = [f"BLEU-4 {metrics['bleu4']:.3f}", f"CIDEr-D {metrics['cider_d']:.3f}",
                     f"exact match {metrics['exact_match']:.3f}"]
            if "slot_accuracy" in metrics:
                parts.append(f"slot accuracy {metrics['slot_accuracy']:.3f}")
            if metrics.get("heldout_pair_recall") is not None:
                parts.append(f"held-out-pair recall {metrics['heldout_pair_recall']:.3f}")
            if "perplexity" in metrics:
                parts.append(f"perplexity {metrics['perplexity']:.2f} (beam {metrics['beam_size']}")
            lines.append(f"{split}: {', '.join(parts)}{', ' if 'perplexity' in metrics else ' ('}"
                         f"{metrics['images']} images)")
        return "\n".join(lines)

    def explain(self, run, out, *, text=None, image=None, beam_size=None):
        if image is None or text is not None:
            raise SeqappError("a captioning run explains an image: give --image PATH (and no text)")
        try:
            data = Path(image).read_bytes()
        except OSError as error:
            raise SeqappError(f"--image {image}: {error.strerror or error}") from None
        try:
            pixels = images.decode_images(tf.constant([data]), run.captioner.image_size)
        except tf.errors.InvalidArgumentError as error:
            raise SeqappError(f"--image {image}: {error.message}") from None
        outputs = run.captioner.caption_pixels(pixels, beam_size=beam_size, with_attention=True)
        tokens = [t.decode() for t in outputs["tokens"][0].numpy() if t]
        caption = outputs["caption"][0].numpy().decode()
        png = plots.attention_over_image(pixels[0].numpy(), outputs["attention"][0].numpy()[:len(tokens)],
                                         run.model.feature_map_shape, tokens, out, title=caption)
        return caption, png

    def signatures(self, run):
        captioner = run.captioner

        def caption(image_bytes):
            outputs = captioner.caption(image_bytes)
            return {"caption": outputs["caption"], "score": outputs["score"]}

        def caption_explain(image_bytes):
            outputs = captioner.caption(image_bytes, with_attention=True)
            return {key: outputs[key] for key in ("caption", "score", "tokens", "attention")}

        spec = [tf.TensorSpec([None], tf.string, name="image_bytes")]
        return [captioner.model, captioner], [exporters.Signature("serving_default", caption, spec),
                                              exporters.Signature("caption_explain", caption_explain, spec)]

    def warmup_inputs(self, run):
        folder = Path(run.work_dir) / "warmup"
        return {"image_bytes": [path.read_bytes() for path in sorted(folder.iterdir())] if folder.is_dir() else []}

    def example_inputs(self, run):
        inputs = self.warmup_inputs(run)
        return {"serving_default": inputs, "caption_explain": inputs}

    def card(self, run):
        return {**super().card(run), "image_size": run.definition.model.image_size,
                "decode": run.definition.decode.model_dump()}

    def default_definition(self, dataset):
        return {"task": self.name, "data": {"dataset": dataset}, "tokenizer": {"vocab_size": 1000}}

    def demo_definition(self, small=False):
        # 4,000 generated scenes and a small Transformer: two minutes on a laptop CPU, so expect rough
        # captions (`pipelines/captioning_transformer.yaml` is the full-size setup).
        definition = {
            "task": self.name,
            "data": {"dataset": "shapes_captions", "max_train_examples": 4000, "captions_per_image": 1,
                     "caption_choice": "first"},
            "tokenizer": {"vocab_size": 1000},
            "pipeline": {"max_length": 32, "tokens_per_batch": 1024, "max_batch_size": 64},
            "model": {"family": "transformer", "embedding_dim": 64, "num_layers": 2, "num_heads": 4,
                      "ffn_dim": 128, "encoder_filters": 16},
            "train": {"epochs": 5, "learning_rate": 0.002, "warmup_steps": 100, "label_smoothing": 0.1},
            "decode": {"beam_size": 1},
        }
        if small:
            definition["data"] = {"dataset": "shapes_captions/tiny", "max_train_examples": 200,
                                  "captions_per_image": 1, "caption_choice": "first"}
            definition["model"].update(embedding_dim=16, num_layers=1, num_heads=2, ffn_dim=32, encoder_filters=4,
                                       encoder_blocks=2)
            definition["train"]["epochs"] = 1
            definition["decode"] = {"beam_size": 2}
            definition["pipeline"]["max_length"] = 26
        return definition

    def demo_inputs(self):
        pictures = [_encode(picture, kind) for picture, kind in zip(_demo_pictures(), ("png", "png", "jpeg"))]
        return {"image_bytes": pictures}

    def format_outputs(self, inputs, outputs):
        truths = [scene_captions[0] for scene_captions in _demo_truths()]
        return "\n".join(f"  image {index} ({kind}, true: {truth!r}) -> {as_text(caption)!r} (score {float(score):.2f})"
                         for index, (kind, truth, caption, score)
                         in enumerate(zip(("PNG", "PNG", "JPEG"), truths, outputs["caption"], outputs["score"])))


def caption_all(captioner, examples, *, beam_size=None, batch_size=_EVAL_BATCH):
    """Captions every raw example (`CaptioningInputter`'s) with one traced graph.

    Returns:
        `(hypotheses, references, scenes)`: the captions, each image's reference
        captions, and the `shapes_captions` scenes (None unless every example has one).
    """
    from seqapp.datasets.shapes_captions import scenes as shapes

    size = captioner.image_size
    caption = tf.function(lambda pixels: captioner.caption_pixels(pixels, beam_size=beam_size)["caption"],
                          input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
    hypotheses, references, scenes = [], [], []
    for batch in examples.padded_batch(batch_size, padded_shapes={"image": [size, size, 3], "captions": [None],
                                                                   "scene": []}).as_numpy_iterator():
        hypotheses += [text.decode() for text in caption(_pixels(batch["image"])).numpy()]
        references += [[text.decode() for text in row if text] for row in batch["captions"]]
        scenes += [text.decode() for text in batch["scene"]]
    return hypotheses, references, ([shapes.scene_from_json(s) for s in scenes] if all(scenes) else None)


def _encode(picture, kind):
    """uint8 [height, width, 3] as PNG or JPEG file bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=kind.upper(), **({"quality": 95} if kind == "jpeg" else {}))
    return buffer.getvalue()


@functools.lru_cache(maxsize=1)
def _demo_scenes():
    from seqapp.datasets.shapes_captions import scenes

    return tuple(itertools.islice(scenes.sample_scenes(2026, 3), 3))


def _demo_pictures():
    from seqapp.datasets.shapes_captions import scenes

    return [scenes.render(scene) for scene in _demo_scenes()]


def _demo_truths():
    from seqapp.datasets.shapes_captions import grammar

    return [grammar.realizations(scene) for scene in _demo_scenes()]
