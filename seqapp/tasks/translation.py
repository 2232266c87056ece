"""Translation (delayed many-to-many): text -> text.

Data: `{"source", "target"}` pairs from a built-in dataset (two of its
languages) or the user's parallel text. Models: `seqapp.models.seq2seq`
(Transformer, LSTM with attention), trained with teacher forcing, a masked,
label-smoothed loss and the warmup + inverse-square-root schedule; watched on
validation loss. Evaluation decodes whole splits (`seqapp.translator`) for
sacreBLEU's BLEU and chrF, with teacher-forced perplexity. The export answers
`text` -> `translation`, `score`, and `translate_explain` adds the attention.
"""

import dataclasses
import functools
from pathlib import Path
from typing import Literal, Optional, Union

import keras
import pydantic
import tensorflow as tf

from seqapp import config
from seqapp import evaluation
from seqapp import exporters
from seqapp import plots
from seqapp.data import pipeline
from seqapp.data import readers
from seqapp.data import sources
from seqapp.errors import ConfigError
from seqapp.errors import SeqappError
from seqapp.inputters import Inputter
from seqapp.losses import compile_sequence_model
from seqapp.models import seq2seq
from seqapp.tasks.base import Run
from seqapp.tasks.base import Task
from seqapp.tasks.base import as_text
from seqapp.training.decoded_metric import DecodedMetric
from seqapp.translator import Translator

# Validation sentences decoded after every epoch of a tuning trial (its objective, validation BLEU).
_TUNING_SENTENCES = 500
# The translation direction `seqapp data stats` measures for each built-in translation dataset.
_DIRECTIONS = {"multi30k": ("de", "en"), "anki_spa_eng": ("en", "es")}


# ---------------------------------------------------------------- definition

class TranslationData(config.DataConfig):
    """`data` of a translation definition.

    Attributes:
        format: the user's files: "parallel" (aligned files or a source/target TSV).
        train, validation, test: a TSV path or `{source: ..., target: ...}` per split.
        source, target: the language keys of a dataset (e.g. "de", "en") or the
            TSV columns of the user's parallel text.
    """

    format: Optional[Literal["parallel"]] = None
    train: Optional[Union[str, config.ParallelFiles]] = None
    validation: Optional[Union[str, config.ParallelFiles]] = None
    test: Optional[Union[str, config.ParallelFiles]] = None
    source: Optional[str] = None
    target: Optional[str] = None


class TranslationTokenizerConfig(config.TokenizerConfig):
    """`tokenizer` of a translation definition.

    Attributes:
        shared: one vocabulary for source and target.
    """

    shared: bool = False


class Seq2SeqModelConfig(config.ModelConfig):
    """An encoder-decoder (`seqapp.models.seq2seq.build_seq2seq`, whose arguments these are).

    Attributes:
        family: "transformer" or "lstm_attention".
        embedding_dim: token embedding size (the Transformer's model width).
        num_layers: encoder layers and decoder layers.
        num_heads, ffn_dim, norm_first: Transformer attention heads, feed-forward
            size, pre-layer-norm (True) or post-layer-norm.
        share_embeddings: one embedding for source, target and output projection
            (needs `tokenizer.shared`).
        attention: the LSTM decoder's attention, "luong" (multiplicative) or
            "bahdanau" (additive).
    """

    FAMILIES = seq2seq.FAMILIES

    family: str = "transformer"
    num_heads: int = pydantic.Field(4, ge=1)
    ffn_dim: int = pydantic.Field(1024, ge=1)
    norm_first: bool = True
    share_embeddings: bool = False
    attention: Literal["luong", "bahdanau"] = "luong"


class DecodeConfig(config.SearchConfig):
    """How translations are decoded: the search (`config.SearchConfig`) and the output length.

    Attributes:
        max_output_ratio, max_output_extra: a translation has at most
            `ratio * source_tokens + extra` tokens (and never more than
            `pipeline.max_length`); one that reaches it returns what it has.
    """

    max_output_ratio: float = pydantic.Field(1.5, ge=0.0)
    max_output_extra: int = pydantic.Field(10, ge=0)


class TranslationDefinition(config.Definition):
    """A translation pipeline definition."""

    task: Literal["translation"]
    data: TranslationData
    tokenizer: TranslationTokenizerConfig = TranslationTokenizerConfig()
    model: Seq2SeqModelConfig = Seq2SeqModelConfig()
    train: config.SequenceTrainConfig = config.SequenceTrainConfig()
    decode: DecodeConfig = DecodeConfig()

    def check(self, source):
        for key in ("source", "target"):
            if getattr(self.data, key) is None:
                raise ConfigError(source, f"data.{key}", "translation needs data.source and data.target")
        if self.model.share_embeddings and not self.tokenizer.shared:
            raise ConfigError(source, "model.share_embeddings", "needs tokenizer.shared: true (one vocabulary)")


# ---------------------------------------------------------------- data

class TranslationInputter(Inputter):
    """`{"source", "target"}` pairs -> teacher-forced `({"encoder_*", "decoder_*"}, target_ids)` batches."""

    @functools.cached_property
    def tokenizers(self):
        if self.definition.tokenizer.shared:
            shared = self.learned_tokenizer("source", "target")
            return {"source": shared, "target": shared}
        return {"source": self.learned_tokenizer("source"), "target": self.learned_tokenizer("target")}

    def vocabulary_corpus(self, fields):
        identity, texts, what = super().vocabulary_corpus(fields)
        data = self.definition.data
        return {**identity, "source": data.source, "target": data.target}, texts, what

    def raw_examples(self, split):
        definition, data = self.definition, self.definition.data
        if data.dataset is None:
            rows = _user_rows(definition, split)
            return tf.data.Dataset.from_tensor_slices({"source": [row["source"] for row in rows],
                                                       "target": [row["target"] for row in rows]})
        examples, features = sources.dataset_split(definition, split)
        for key in ("source", "target"):
            language = getattr(data, key)
            if language not in features:
                raise ConfigError(definition.origin, f"data.{key}",
                                  f"{language!r} is not in {data.dataset}: {sorted(features.keys())}")
        return examples.map(lambda ex: {"source": ex[data.source], "target": ex[data.target]})

    def encode(self, examples):
        cfg = self.definition.pipeline
        return pipeline.encode_seq2seq(examples, self.tokenizers["source"], self.tokenizers["target"],
                                       max_length=cfg.max_length, overlong=cfg.overlong)


@functools.lru_cache(maxsize=16)
def _user_rows(definition, split):
    data = definition.data
    if isinstance(getattr(data, split), str):
        return readers.read_parallel(sources.user_file(definition, split), encoding=data.encoding,
                                     source_column=data.source or "source", target_column=data.target or "target")
    return readers.read_parallel(sources.user_file(definition, split, key="source"),
                                 sources.user_file(definition, split, key="target"), encoding=data.encoding)


def _read_lines(path):
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SeqappError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SeqappError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


# ---------------------------------------------------------------- the task

@dataclasses.dataclass
class TranslationRun(Run):
    """A finished translation run; `translator` decodes with its model and tokenizers."""

    translator: Translator = None


class TranslationTask(Task):
    name = "translation"
    inputter_class = TranslationInputter
    definition_class = TranslationDefinition
    export_name = "translation"
    monitor = "loss"
    warmup_field = "source"

    def default_definition(self, dataset):
        source, target = _DIRECTIONS[dataset]
        return {"task": self.name, "data": {"dataset": dataset, "source": source, "target": target},
                "tokenizer": {"lower_case": False, "normalization_form": "NFC"}}

    def write_run_files(self, inputter, folder):
        for side in ("source", "target"):
            folder.copy_in(inputter.tokenizers[side].vocab_path, f"{side}_vocab.txt")
        super().write_run_files(inputter, folder)

    def build_model(self, inputter, hp=None):
        return seq2seq.build_seq2seq(inputter.tokenizers["source"].vocab_size + 1,
                                     inputter.tokenizers["target"].vocab_size + 1,
                                     **inputter.definition.model.model_dump())

    def compile(self, model, definition):
        compile_sequence_model(model, definition.train)

    def tuning_objective(self):
        # sacreBLEU of greedy translations of a fixed validation slice each epoch (`tuning_callbacks`):
        # what the search should win on; the loss also rewards hedged distributions.
        return "val_bleu", "max"

    def tuning_callbacks(self, inputter):
        definition = inputter.definition
        sources = inputter.texts("validation", "source", _TUNING_SENTENCES)
        references = inputter.texts("validation", "target", _TUNING_SENTENCES)

        def measure(model):
            translator = Translator(model, inputter.tokenizers["source"], inputter.tokenizers["target"],
                                    max_length=definition.pipeline.max_length, decode=definition.decode)
            hypotheses = evaluation.translate_all(translator, sources, beam_size=1)
            return {"bleu": evaluation.translation_metrics(hypotheses, references)["bleu"]}

        return [DecodedMetric(measure)]

    def load_run(self, work_dir, definition):
        work_dir = Path(work_dir)
        model = keras.models.load_model(work_dir / "best.keras")
        tokenizers = {side: self.run_tokenizer(definition, work_dir / f"{side}_vocab.txt")
                      for side in ("source", "target")}
        translator = Translator(model, tokenizers["source"], tokenizers["target"],
                                max_length=definition.pipeline.max_length, decode=definition.decode)
        return TranslationRun(work_dir=work_dir, definition=definition, model=model, tokenizers=tokenizers,
                              translator=translator)

    def evaluate(self, run, splits, *, inputter=None, beam_size=None, cached=True):
        """Perplexity (teacher-forced) and BLEU/chrF of each decoded split (sacreBLEU, cased,
        detokenized); `beam_size` overrides `decode.beam_size`, `cached` decodes with the
        incremental cache."""
        inputter = inputter or self.run_inputter(run)
        results = {}
        for split, batches in self.split_datasets(inputter, splits):
            hypotheses = evaluation.translate_all(run.translator, inputter.texts(split, "source"),
                                                  beam_size=beam_size, cached=cached)
            results[split] = {**evaluation.translation_metrics(hypotheses, inputter.texts(split, "target")),
                              "perplexity": evaluation.perplexity(run.model, batches),
                              "beam_size": beam_size or run.definition.decode.beam_size}
        return evaluation.merge_metrics(run.work_dir, results)

    def evaluate_after_training(self, run, inputter):
        return self.evaluate(run, ("validation", "test"), inputter=inputter, beam_size=1)

    def evaluate_files(self, run, files, *, beam_size=None):
        if set(files) - {"source", "reference", "output"} or not {"source", "reference"} <= set(files):
            raise SeqappError("a translation run is evaluated on --split, or on --source FILE with --reference "
                              "FILE (and optionally --output FILE)")
        source_lines, references = _read_lines(files["source"]), _read_lines(files["reference"])
        if len(source_lines) != len(references):
            raise SeqappError(f"{files['source']} has {len(source_lines)} lines but {files['reference']} has "
                              f"{len(references)}")
        hypotheses = evaluation.translate_all(run.translator, source_lines, beam_size=beam_size)
        if "output" in files:
            Path(files["output"]).write_text("".join(f"{line}\n" for line in hypotheses), encoding="utf-8")
        return {Path(files["source"]).name: evaluation.translation_metrics(hypotheses, references)}

    def format_metrics(self, results, work_dir):
        lines = []
        for split, metrics in results.items():
            extra = (f", perplexity {metrics['perplexity']:.2f} (beam {metrics['beam_size']}, "
                     if "perplexity" in metrics else " (")
            lines.append(f"{split}: BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f}{extra}"
                         f"{metrics['sentences']} sentences)")
        return "\n".join(lines)

    def explain(self, run, out, *, text=None, image=None, beam_size=None):
        if text is None or image is not None:
            raise SeqappError("a translation run explains a sentence: give it as TEXT (and no --image)")
        outputs = run.translator.translate(tf.constant([text]), beam_size=beam_size, with_attention=True)
        tokens = [t.decode() for t in outputs["tokens"][0].numpy() if t]
        source_tokens = [t.decode() for t in outputs["source_tokens"][0].numpy() if t]
        translation = outputs["translation"][0].numpy().decode()
        png = plots.attention_heatmap(outputs["attention"][0].numpy(), source_tokens, tokens, out,
                                      title=translation)
        return translation, png

    def signatures(self, run):
        translator = run.translator

        def translate(texts):
            outputs = translator.translate(texts)
            return {"translation": outputs["translation"], "score": outputs["score"]}

        def translate_explain(texts):
            outputs = translator.translate(texts, with_attention=True)
            return {key: outputs[key] for key in ("translation", "score", "tokens", "source_tokens", "attention")}

        spec = [tf.TensorSpec([None], tf.string, name="text")]
        return [translator.model, translator], [exporters.Signature("serving_default", translate, spec),
                                                exporters.Signature("translate_explain", translate_explain, spec)]

    def example_inputs(self, run):
        inputs = self.warmup_inputs(run)
        return {"serving_default": inputs, "translate_explain": inputs}

    def card(self, run):
        return {**super().card(run), "decode": run.definition.decode.model_dump()}

    def demo_definition(self, small=False):
        # A slice of Multi30k and a narrow model: minutes on a laptop CPU, so expect rough translations
        # (`pipelines/translation_transformer.yaml` is the full-size setup).
        definition = {
            "task": self.name,
            "data": {"dataset": "multi30k", "source": "de", "target": "en", "max_train_examples": 10000},
            "tokenizer": {"vocab_size": 4000, "lower_case": False, "normalization_form": "NFC", "shared": True},
            "pipeline": {"max_length": 48, "tokens_per_batch": 2048},
            "model": {"family": "transformer", "embedding_dim": 128, "num_layers": 2, "num_heads": 4,
                      "ffn_dim": 256, "dropout": 0.1, "share_embeddings": True},
            "train": {"epochs": 5, "learning_rate": 0.002, "warmup_steps": 100, "label_smoothing": 0.1},
            "decode": {"beam_size": 4},
        }
        if small:
            definition["data"]["splits"] = {"validation": "validation[:100]", "test": "test[:100]"}
            definition["data"]["max_train_examples"] = 300
            definition["tokenizer"]["vocab_size"] = 500
            definition["model"].update(embedding_dim=16, num_layers=1, num_heads=2, ffn_dim=32)
            definition["train"]["epochs"] = 1
            definition["decode"] = {"beam_size": 2, "max_output_extra": 3}
        return definition

    def demo_inputs(self):
        return {"text": ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.",
                         "Eine Frau mit einem roten Hut sitzt auf einer Bank.", ""]}

    def format_outputs(self, inputs, outputs):
        return "\n".join(f"  {text!r} -> {as_text(translation)!r} (score {float(score):.2f})"
                         for text, translation, score in zip(inputs["text"], outputs["translation"],
                                                             outputs["score"]))
