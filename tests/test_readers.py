"""Tests for seqapp.data.readers: users' data files, read and validated at the edge."""

import csv
import gc
import gzip
import io
import json
import sys
import time

import pytest

from seqapp import settings
from seqapp.data import readers
from seqapp.errors import DataError

UNICODE_TEXTS = [
    "café naïve Straße",
    "日本語のテキスト",
    "emoji 👍🏽🎉 and a family 👨‍👩‍👧",
    "עברית RTL and e\u0301 (combining accent)",
    "separators \u2028 \u2029 \x85 \x0c \x1e stay inside the text",
]


def write(directory, name, content, encoding="utf-8"):
    """Writes content (str or bytes) to directory/name, gzipped if the name ends in .gz."""
    data = content if isinstance(content, bytes) else content.encode(encoding)
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def to_csv(rows, delimiter=","):
    """Returns rows written as CSV (or TSV) text the way csv.writer, and pandas, write it."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def to_jsonl(objects, ensure_ascii=False):
    return "".join(json.dumps(obj, ensure_ascii=ensure_ascii) + "\n" for obj in objects)


def expect_data_error(call, path, line, *fragments):
    """Asserts that call() raises a DataError at path:line whose reason holds the fragments."""
    with pytest.raises(DataError) as info:
        call()
    error = info.value
    assert (error.path, error.line) == (str(path), line), str(error)
    for fragment in fragments:
        assert fragment in error.reason, str(error)
    return error


def texts_and_labels(rows):
    return [(row["text"], row["label"]) for row in rows]


# read_text_classification: formats.


def test_csv_picks_columns_by_name_and_parses_quoted_fields(tmp_path):
    path = write(tmp_path, "train.csv", to_csv([
        ["id", "label", "text", "extra"],
        [1, "pos", "a review, with a comma", "x"],
        [2, "neg", 'spans\ntwo lines and "quotes"', "y"],
        [3, " neutral ", "tab\tinside", "z"],
    ]))
    rows = readers.read_text_classification(path)
    assert texts_and_labels(rows) == [
        ("a review, with a comma", "pos"),
        ('spans\ntwo lines and "quotes"', "neg"),
        ("tab\tinside", "neutral"),  # Labels lose surrounding whitespace.
    ]
    # Each row knows the line its record starts on, after a two-line record too.
    assert [row[readers.LINE_KEY] for row in rows] == [2, 3, 5]


def test_custom_column_names(tmp_path):
    path = write(tmp_path, "train.csv", "sentence,sentiment\ngood,1\nbad,0\n")
    rows = readers.read_text_classification(path, text_column="sentence", label_column="sentiment")
    assert texts_and_labels(rows) == [("good", "1"), ("bad", "0")]


def test_jsonl_integer_labels_become_strings_and_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path, "train.jsonl",
                 '{"text": "one", "label": 0, "meta": [1]}\n'
                 '\n  \n'
                 '{"label": "two", "text": "deux"}\n')
    rows = readers.read_text_classification(path)
    assert texts_and_labels(rows) == [("one", "0"), ("deux", "two")]
    assert [row[readers.LINE_KEY] for row in rows] == [1, 4]


@pytest.mark.parametrize("name, content", [
    ("d.csv", "text,label\nhello,a\n"),
    ("d.CSV.gz", "text,label\nhello,a\n"),
    ("d.tsv", "text\tlabel\nhello\ta\n"),
    ("d.tsv.gz", "text\tlabel\nhello\ta\n"),
    ("d.jsonl", '{"text": "hello", "label": "a"}\n'),
    ("d.json-lines", '{"text": "hello", "label": "a"}\n'),
    ("d.jsonl.gz", '{"text": "hello", "label": "a"}\n'),
])
def test_format_is_inferred_from_the_suffix(tmp_path, name, content):
    rows = readers.read_text_classification(write(tmp_path, name, content))
    assert texts_and_labels(rows) == [("hello", "a")]


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = write(tmp_path, "data.txt", "text\tlabel\nhello\ta\n")
    rows = readers.read_text_classification(path, format="tsv")
    assert texts_and_labels(rows) == [("hello", "a")]


def test_unknown_suffix_and_unknown_format(tmp_path):
    path = write(tmp_path, "data.txt", "text,label\nhello,a\n")
    expect_data_error(lambda: readers.read_text_classification(path), path, None, "format=")
    with pytest.raises(ValueError, match="format must be one of"):
        readers.read_text_classification(path, format="xlsx")


def test_plain_tsv_with_stray_quotes_is_read_as_written(tmp_path):
    lines = ['"Hi," he said.\tgreeting', 'the " conan " remake\treview', '"unclosed quote\tother']
    path = write(tmp_path, "d.tsv", "text\tlabel\n" + "\n".join(lines) + "\n")
    rows = readers.read_text_classification(path)
    assert [row["text"] + "\t" + row["label"] for row in rows] == lines


def test_quoted_tsv_as_pandas_writes_it(tmp_path):
    records = [["a\ttab", "x"], ['say "hi"', "y"], ["two\nlines", "z"], ["plain", "w"]]
    path = write(tmp_path, "d.tsv", to_csv([["text", "label"], *records], delimiter="\t"))
    rows = readers.read_text_classification(path)
    assert [[row["text"], row["label"]] for row in rows] == records
    assert [row[readers.LINE_KEY] for row in rows] == [2, 3, 4, 6]


# read_text_classification: malformed files.


@pytest.mark.parametrize("name, content, line, fragments", [
    ("d.csv", "", None, ["empty"]),
    ("d.csv", "\n  \n\t\n", None, ["empty"]),
    ("d.jsonl", "\n", None, ["empty"]),
    ("d.csv", '""\n', None, ["empty"]),
    ("d.csv", "text,label\n\n", 1, ["no data rows"]),
    ("d.csv", "txt,label\nhi,pos\n", 1, ["no column 'text'", "columns present: 'txt', 'label'"]),
    ("d.csv", "text,text,label\na,b,c\n", 1, ["'text' appears more than once"]),
    ("d.csv", 'text,label\n"two\nlines",pos\nc,pos,extra\n', 4, ["expected 2 fields", "found 3"]),
    ("d.csv", "text,label\nno label\n", 2, ["expected 2 fields", "found 1"]),
    ("d.tsv", 'text\tlabel\nhe said "hi\tpos\textra\n', 2, ["expected 2 fields", "found 3"]),
    ("d.csv", 'text,label\nok,pos\n"never closed,pos\nx,y\n', 3, ["malformed record", "quote"]),
    ("d.csv", 'text,label\n"quoted" then more,pos\n', 2, ["malformed record"]),
    ("d.csv", "text,label\n,pos\n", 2, ["empty 'text'"]),
    ("d.csv", "text,label\n  \t ,pos\n", 2, ["empty 'text'"]),
    ("d.csv", "text,label\nhi, \n", 2, ["empty label 'label'"]),
    ("d.jsonl", '{"text": "a", "label": 1}\n{"text": \n', 2, ["invalid JSON"]),
    ("d.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', 2, ["expected a JSON object, found array"]),
    ("d.jsonl", '{"text": "a"}\n', 1, ["missing key 'label'", "keys present: 'text'"]),
    ("d.jsonl", '{"text": 5, "label": "x"}\n', 1, ["'text' must be a string, found number"]),
    ("d.jsonl", '{"text": null, "label": "x"}\n', 1, ["found null"]),
    ("d.jsonl", '{"text": "", "label": "x"}\n', 1, ["empty 'text'"]),
    ("d.jsonl", '{"text": "a", "label": 1.5}\n', 1, ["string or an integer, found number"]),
    ("d.jsonl", '{"text": "a", "label": true}\n', 1, ["string or an integer, found boolean"]),
    ("d.jsonl", '{"text": "a", "label": ""}\n', 1, ["empty label"]),
])
def test_malformed_files_name_the_line_and_reason(tmp_path, name, content, line, fragments):
    path = write(tmp_path, name, content)
    expect_data_error(lambda: readers.read_text_classification(path), path, line, *fragments)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    expect_data_error(lambda: readers.read_text_classification(path), path, None, "cannot read")


# Gzip and encodings.


def test_gzip_is_transparent(tmp_path):
    path = write(tmp_path, "corpus.txt.gz", "first line\nsecond line\n")
    assert readers.read_plain_text(path) == [{"text": "first line"}, {"text": "second line"}]


def test_corrupt_gzip(tmp_path):
    path = write(tmp_path, "corpus.txt.gz", "x")
    path.write_bytes(b"not gzip at all")
    expect_data_error(lambda: readers.read_plain_text(path), path, None, "cannot read")
    path.write_bytes(gzip.compress(b"line one\nline two\n")[:-12])  # Truncated.
    expect_data_error(lambda: readers.read_plain_text(path), path, None, "gzip")


def test_mixed_utf8_and_cp1252_bytes_name_line_column_offset_and_byte(tmp_path):
    data = "text,label\ncafé,pos\n".encode() + b"don\x92t,neg\n"
    offset = data.index(b"\x92")
    path = write(tmp_path, "d.csv", data)
    expect_data_error(lambda: readers.read_text_classification(path), path, 3,
                      "0x92", "column 4", f"byte offset {offset}", "encoding=")


def test_other_encodings_are_read_when_named(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\ncafé don’t,pos\n", encoding="cp1252")
    expect_data_error(lambda: readers.read_text_classification(path), path, 2, "encoding=")
    rows = readers.read_text_classification(path, encoding="cp1252")
    assert texts_and_labels(rows) == [("café don’t", "pos")]
    expect_data_error(lambda: readers.read_text_classification(path, encoding="no-such-codec"),
                      path, None, "unknown encoding")


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    path = write(tmp_path, "d.csv", b"\xef\xbb\xbftext,label\nhi,pos\n")
    assert texts_and_labels(readers.read_text_classification(path)) == [("hi", "pos")]


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path, "d.csv", 'text,label\r\n"two\r\nlines",pos\r\nhi,neg\r\n')
    assert texts_and_labels(readers.read_text_classification(path)) == [
        ("two\nlines", "pos"), ("hi", "neg")]
    path = write(tmp_path, "plain.txt", "one \r\ntwo\r\n")
    assert readers.read_plain_text(path) == [{"text": "one "}, {"text": "two"}]


def test_lines_split_only_at_newlines(tmp_path):
    path = write(tmp_path, "plain.txt", "a\u2028b\x85c\x0cd\u2029e\x1cf\rg\nsecond\n")
    assert readers.read_plain_text(path) == [{"text": "a\u2028b\x85c\x0cd\u2029e\x1cf\rg"},
                                             {"text": "second"}]


@pytest.mark.parametrize("name, content", [
    ("d.csv", to_csv([["text", "label"], *[[text, "ü"] for text in UNICODE_TEXTS]])),
    ("d.tsv", to_csv([["text", "label"], *[[text, "ü"] for text in UNICODE_TEXTS]], "\t")),
    ("d.jsonl", to_jsonl({"text": text, "label": "ü"} for text in UNICODE_TEXTS)),
    ("ascii.jsonl", to_jsonl(({"text": text, "label": "ü"} for text in UNICODE_TEXTS),
                             ensure_ascii=True)),
])
def test_non_ascii_and_emoji_round_trip(tmp_path, name, content):
    rows = readers.read_text_classification(write(tmp_path, name, content))
    assert texts_and_labels(rows) == [(text, "ü") for text in UNICODE_TEXTS]


def _big_csv(directory, rows):
    records = [[f'review {i}, "quoted" ✓ ' * 10, f"label{i % 7}"] for i in range(rows)]
    return write(directory, f"big{rows}.csv.gz", to_csv([["text", "label"], *records])), records


def _python_calls(call):
    """`(calls, call())`: the Python function calls and C function calls made while `call()` runs (a
    generator counts once per resumption), a measure of work that does not depend on the machine or its
    load; and what `call()` returned."""
    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(None)
    return calls, result


def _cpu_seconds(call, repeat=5):
    """The least CPU time of this thread (not wall-clock time: waiting for a shared core does not count)
    that `call()` took in `repeat` runs, garbage collection off."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            start = time.thread_time()
            call()
            best = min(best, time.thread_time() - start)
    finally:
        gc.enable()
    return best


def test_reading_thousands_of_rows_costs_linear_work(tmp_path):
    # Guards against work that grows faster than the file (re-scanning earlier lines or text per record,
    # e.g. to find a record's line number): 16 times the rows must cost about 16 times the work.
    paths, calls = [], []
    for size in (500, 8000):
        path, records = _big_csv(tmp_path, size)
        count, rows = _python_calls(lambda: readers.read_text_classification(path))
        assert [[row["text"], row["label"]] for row in rows] == records
        paths.append(path)
        calls.append(count)
    # Python-level work, counted exactly: linear is a ratio of 16 (less the fixed cost), quadratic 256.
    assert calls[1] <= 16 * 1.1 * calls[0], calls
    # Work inside C calls (str.count, slicing, ...) is not counted above: its CPU time must scale about as
    # linearly. Generous bound (3 times linear); quadratic reading of 8,000 rows would be near 256.
    seconds = [_cpu_seconds(lambda path=path: readers.read_text_classification(path)) for path in paths]
    assert seconds[1] <= 16 * 3 * seconds[0], seconds


# read_parallel.


def test_line_aligned_files(tmp_path):
    source = write(tmp_path, "train.en", "Hello.\n\nTwo dogs 🐕\n")
    target = write(tmp_path, "train.de.gz", "Hallo.\n\nZwei Hunde 🐕\n")
    assert readers.read_parallel(source, target) == [
        {"source": "Hello.", "target": "Hallo."},
        {"source": "Two dogs 🐕", "target": "Zwei Hunde 🐕"},  # The blank pair is skipped.
    ]


def test_line_counts_must_match(tmp_path):
    source = write(tmp_path, "a.en", "one\ntwo\nthree\n")
    target = write(tmp_path, "a.de", "eins\nzwei\n")
    error = expect_data_error(lambda: readers.read_parallel(source, target), source, None,
                              "has 3 lines", f"{target} has 2")
    assert str(source) in str(error)


def test_a_line_blank_on_one_side_only(tmp_path):
    source = write(tmp_path, "a.en", "one\ntwo\n")
    target = write(tmp_path, "a.de", "eins\n \n")
    expect_data_error(lambda: readers.read_parallel(source, target), target, 2, "empty line")


def test_parallel_tsv(tmp_path):
    path = write(tmp_path, "pairs.tsv",
                 'id\tsource\ttarget\n1\t"Look," she said.\tElla dijo "mira".\n2\tGo.\tVe.\n')
    assert readers.read_parallel(path) == [
        {"source": '"Look," she said.', "target": 'Ella dijo "mira".'},
        {"source": "Go.", "target": "Ve."},
    ]
    rows = readers.read_parallel(path, source_column="target", target_column="source")
    assert rows[1] == {"source": "Ve.", "target": "Go."}
    expect_data_error(lambda: readers.read_parallel(path, target_column="es"), path, 1,
                      "no column 'es'", "'id', 'source', 'target'")


# read_plain_text.


def test_plain_text_lines_skip_blank_lines_and_keep_the_rest(tmp_path):
    path = write(tmp_path, "lm.txt", " leading space \n\n \t \nlast")
    assert readers.read_plain_text(path) == [{"text": " leading space "}, {"text": "last"}]


def test_plain_text_paragraphs(tmp_path):
    path = write(tmp_path, "lm.txt", "\n\nfirst para\nstill first\n\n \nsecond\n\n")
    assert readers.read_plain_text(path, unit="paragraph") == [
        {"text": "first para\nstill first"}, {"text": "second"}]
    with pytest.raises(ValueError, match="unit must be one of"):
        readers.read_plain_text(path, unit="sentence")


# read_captions.


@pytest.fixture
def image_dir(tmp_path):
    images = tmp_path / "images"
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        write(images, name, b"\xff\xd8 not really a jpeg")
    return images


def test_captions_tsv_with_header_and_several_captions_per_image(tmp_path, image_dir):
    path = write(tmp_path, "captions.tsv",
                 'image\tcaption\n'
                 'a.jpg\tA dog "runs".\n'
                 'a.jpg\tUn chien court 🐕\n'
                 'sub/c.jpg\tA cat.\n')
    assert readers.read_captions(image_dir, path) == [
        {"image_path": str(image_dir / "a.jpg"), "caption": 'A dog "runs".'},
        {"image_path": str(image_dir / "a.jpg"), "caption": "Un chien court 🐕"},
        {"image_path": str(image_dir / "sub" / "c.jpg"), "caption": "A cat."},
    ]


def test_captions_tsv_without_header(tmp_path, image_dir):
    path = write(tmp_path, "captions.tsv", "b.jpg\tTwo birds.\n")
    rows = readers.read_captions(str(image_dir), path)
    assert rows == [{"image_path": str(image_dir / "b.jpg"), "caption": "Two birds."}]
    assert (image_dir / "b.jpg").samefile(rows[0]["image_path"])


@pytest.mark.parametrize("content, line, fragments", [
    ("image\tcaption\na.jpg\tok\nmissing.jpg\tA ghost.\n", 3, ["'missing.jpg' not found"]),
    ("a.jpg\tok\n../images/a.jpg\tSneaky.\n", 2, ["inside", "'..'"]),
    ("a.jpg\tok\n/etc/passwd\tSneaky.\n", 2, ["inside", "absolute"]),
    ("a.jpg\tok\nb.jpg\n", 2, ["expected 2 fields", "found 1"]),
    ("a.jpg\tok\nb.jpg\tone\ttwo\n", 2, ["expected 2 fields", "found 3"]),
    ("a.jpg\t \n", 1, ["empty caption"]),
    ("\tNo image.\n", 1, ["image file name"]),
])
def test_captions_tsv_errors(tmp_path, image_dir, content, line, fragments):
    path = write(tmp_path, "captions.tsv", content)
    expect_data_error(lambda: readers.read_captions(image_dir, path), path, line, *fragments)


def coco(images, annotations):
    return json.dumps({"info": {}, "images": images, "annotations": annotations}, indent=1)


def test_captions_coco_json(tmp_path, image_dir):
    path = write(tmp_path, "captions.json", coco(
        [{"id": 7, "file_name": "a.jpg"}, {"id": "b", "file_name": "sub/c.jpg"}],
        [{"id": 1, "image_id": 7, "caption": "A dog."},
         {"id": 2, "image_id": "b", "caption": "A cat."},
         {"id": 3, "image_id": 7, "caption": "Ein Hund."}]))
    assert readers.read_captions(image_dir, path) == [
        {"image_path": str(image_dir / "a.jpg"), "caption": "A dog."},
        {"image_path": str(image_dir / "sub" / "c.jpg"), "caption": "A cat."},
        {"image_path": str(image_dir / "a.jpg"), "caption": "Ein Hund."},
    ]


@pytest.mark.parametrize("content, line, fragments", [
    (coco([{"id": 1, "file_name": "a.jpg"}],
          [{"image_id": 1, "caption": "ok"}, {"image_id": 2, "caption": "Who?"}]),
     2, ["image_id 2", '"images"']),
    (coco([{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "gone.jpg"}],
          [{"image_id": 1, "caption": "ok"}]),
     2, ["'gone.jpg' not found"]),
    (coco([{"id": 1, "file_name": "../../etc/passwd"}], []), 1, ["'..'"]),
    (coco([{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], []),
     2, ["id 1 more than once"]),
    (coco([{"id": 1}], []), 1, ["missing key 'file_name'"]),
    (coco([{"id": [1], "file_name": "a.jpg"}], []), 1, ["'id' must be an integer or a string"]),
    (coco([{"id": 1, "file_name": "a.jpg"}], [{"image_id": 1, "caption": 3}]),
     1, ["'caption' must be a string"]),
    (coco([{"id": 1, "file_name": "a.jpg"}], ["A dog."]), 1, ['"annotations" must be an object']),
    (coco([{"id": 1, "file_name": "a.jpg"}], []), None, ["no captions"]),
    (json.dumps({"images": []}), None, ['list under "annotations", found nothing']),
    ('{"images": [],\n "annotations": [\n}', 3, ["invalid JSON"]),
    ("[]", None, ["found array"]),
], ids=["unknown-image-id", "missing-image", "escaping-path", "duplicate-id", "missing-key",
        "list-id", "number-caption", "string-annotation", "no-annotations", "no-annotations-key",
        "invalid-json", "not-an-object"])
def test_captions_coco_errors(tmp_path, image_dir, content, line, fragments):
    path = write(tmp_path, "captions.json", content)
    expect_data_error(lambda: readers.read_captions(image_dir, path), path, line, *fragments)


def test_captions_image_dir_must_be_a_folder(tmp_path):
    path = write(tmp_path, "captions.tsv", "a.jpg\tA dog.\n")
    expect_data_error(lambda: readers.read_captions(tmp_path / "nope", path),
                      tmp_path / "nope", None, "not a folder")


# read_karpathy_split.


def karpathy(*images):
    return json.dumps({"dataset": "test", "images": list(images)}, indent=1)


def karpathy_image(filename, split="train", *raws, **extra):
    sentences = [{"tokens": raw.lower().rstrip(".").split(), "raw": raw, "sentid": index}
                 for index, raw in enumerate(raws or ["A thing."])]
    return {"filename": filename, "split": split, "sentences": sentences, "imgid": 0, **extra}


def test_karpathy_split_maps_splits_and_reads_every_sentence(tmp_path, image_dir):
    path = write(tmp_path, "dataset_flickr8k.json", karpathy(
        karpathy_image("a.jpg", "train", "A dog runs.", "Un chien court 🐕"),
        karpathy_image("c.jpg", "restval", "A cat.", filepath="sub"),
        karpathy_image("b.jpg", "val", "Two birds."),
        {"filename": "c.jpg", "filepath": "", "split": "test",
         "sentences": [{"tokens": ["a", "cat", "sleeps"]}, {"raw": " As written. ", "tokens": []}]},
    ))
    # c.jpg and sub/c.jpg are two images.
    write(image_dir, "c.jpg", b"\xff\xd8 not really a jpeg")
    rows = readers.read_karpathy_split(path, image_dir)
    assert rows == [
        {"image_path": str(image_dir / "a.jpg"), "caption": "A dog runs.", "split": "train"},
        {"image_path": str(image_dir / "a.jpg"), "caption": "Un chien court 🐕", "split": "train"},
        {"image_path": str(image_dir / "sub" / "c.jpg"), "caption": "A cat.", "split": "train"},
        {"image_path": str(image_dir / "b.jpg"), "caption": "Two birds.", "split": "validation"},
        {"image_path": str(image_dir / "c.jpg"), "caption": "a cat sleeps", "split": "test"},
        {"image_path": str(image_dir / "c.jpg"), "caption": " As written. ", "split": "test"},
    ]


def test_karpathy_split_gzip_and_relative_image_dir(tmp_path, image_dir, monkeypatch):
    path = write(tmp_path, "dataset_coco.json.gz", karpathy(karpathy_image("a.jpg", "test")))
    monkeypatch.chdir(tmp_path)
    rows = readers.read_karpathy_split(path, "images")
    assert rows == [{"image_path": str(image_dir / "a.jpg"), "caption": "A thing.",
                     "split": "test"}]


@pytest.mark.parametrize("content, line, fragments", [
    ('{"images": [\n {"filename": "a.jpg",}\n]}', 2, ["invalid JSON"]),
    ("[]", None, ['"images"', "found array"]),
    (json.dumps({"annotations": []}), None, ['list under "images", found nothing']),
    (json.dumps({"images": {}}), None, ['list under "images", found object']),
    (karpathy(), None, ["no captions"]),
    (karpathy(karpathy_image("a.jpg"), "b.jpg"), 2, ['entry 2 of "images" must be an object']),
    (karpathy(karpathy_image("a.jpg"), {"split": "train", "sentences": []}),
     2, ["missing key 'filename'", "'split'"]),
    (karpathy(karpathy_image("a.jpg"), {"filename": "b.jpg", "sentences": []}),
     2, ["missing key 'split'"]),
    (karpathy(karpathy_image("a.jpg"), karpathy_image("gone.jpg")), 2, ["'gone.jpg' not found"]),
    (karpathy(karpathy_image("c.jpg")), 1, ["'c.jpg' not found"]),  # it is sub/c.jpg
    (karpathy(karpathy_image("../images/a.jpg")), 1, ["inside", "'..'"]),
    (karpathy(karpathy_image("a.jpg", filepath="../images")), 1, ["inside", "'..'"]),
    (karpathy(karpathy_image("/etc/passwd", filepath="sub")), 1, ["inside", "absolute"]),
    (karpathy(karpathy_image("a.jpg", filepath=["sub"])), 1, ["'filepath' must be a string"]),
    (karpathy(karpathy_image("")), 1, ["image file name must be a non-empty string"]),
    (karpathy(karpathy_image(7)), 1, ["image file name must be a non-empty string, found 7"]),
    (karpathy(karpathy_image("a.jpg"), karpathy_image("b.jpg"), karpathy_image("a.jpg", "test")),
     3, ["image 'a.jpg' is also entry 1"]),
    (karpathy(karpathy_image("a.jpg"), karpathy_image("b.jpg", "dev")),
     2, ["split 'dev' is none of 'train', 'restval', 'val', 'test'"]),
    (karpathy(karpathy_image("a.jpg", "Train")), 1, ["split 'Train'"]),
    (karpathy({"filename": "a.jpg", "split": "train", "sentences": []}),
     1, ['"sentences" must be a non-empty array, found an empty array']),
    (karpathy({"filename": "a.jpg", "split": "train", "sentences": "A dog."}),
     1, ['"sentences" must be a non-empty array, found string']),
    (karpathy({"filename": "a.jpg", "split": "train", "sentences": [{"raw": "ok"}, "A dog."]}),
     1, ["sentence 2 of entry 1 must be an object"]),
    (karpathy({"filename": "a.jpg", "split": "train", "sentences": [{"sentid": 3}]}),
     1, ["sentence 1 of entry 1 has neither 'raw' nor 'tokens'", "'sentid'"]),
    (karpathy({"filename": "a.jpg", "split": "train", "sentences": [{"raw": 5}]}),
     1, ["'raw' must be a string, found number"]),
    (karpathy({"filename": "a.jpg", "split": "train", "sentences": [{"raw": "  "}]}),
     1, ["empty 'raw' in sentence 1 of entry 1"]),
    (karpathy({"filename": "a.jpg", "split": "train", "sentences": [{"tokens": "a dog"}]}),
     1, ["'tokens' must be an array of strings"]),
    (karpathy({"filename": "a.jpg", "split": "train", "sentences": [{"tokens": []}]}),
     1, ["empty 'tokens' in sentence 1 of entry 1"]),
], ids=["invalid-json", "not-an-object", "no-images", "images-not-a-list", "no-entries",
        "string-entry", "no-filename", "no-split", "missing-image", "missing-subfolder",
        "escaping-filename", "escaping-filepath", "absolute-filename", "list-filepath",
        "empty-filename", "number-filename", "repeated-image", "unknown-split", "split-case",
        "no-sentences", "string-sentences", "string-sentence", "no-raw-no-tokens",
        "number-raw", "blank-raw", "string-tokens", "no-tokens"])
def test_karpathy_split_errors(tmp_path, image_dir, content, line, fragments):
    path = write(tmp_path, "dataset.json", content)
    expect_data_error(lambda: readers.read_karpathy_split(path, image_dir), path, line,
                      *fragments)


def test_karpathy_split_image_dir_must_be_a_folder(tmp_path):
    path = write(tmp_path, "dataset.json", karpathy(karpathy_image("a.jpg")))
    expect_data_error(lambda: readers.read_karpathy_split(path, tmp_path / "nope"),
                      tmp_path / "nope", None, "not a folder")


# Labels.


def test_label_vocabulary_and_encoding(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\na,pos\nb,neg\nc,neutral\nd,pos\n")
    test = write(tmp_path, "test.csv", "text,label\na,neg\nb,pos\nc,surprise\n")
    train_rows = readers.read_text_classification(train)
    vocabulary = readers.label_vocabulary(train_rows, path=train)
    assert vocabulary == ["neg", "neutral", "pos"]
    assert readers.encode_labels(train_rows, vocabulary, path=train) == [2, 0, 1, 2]
    test_rows = readers.read_text_classification(test)
    expect_data_error(lambda: readers.encode_labels(test_rows, vocabulary, path=test), test, 4,
                      "'surprise'", "'neg', 'neutral', 'pos'")


def test_a_single_label_is_not_a_classification_task(tmp_path):
    path = write(tmp_path, "train.jsonl",
                 to_jsonl([{"text": "a", "label": 1}, {"text": "b", "label": 1}]))
    rows = readers.read_text_classification(path)
    expect_data_error(lambda: readers.label_vocabulary(rows, path=path), path, None,
                      "at least 2 distinct labels", "found 1: '1'")


def test_long_label_lists_are_cut(tmp_path):
    path = write(tmp_path, "test.csv", "text,label\na,unknown\n")
    vocabulary = [f"label{i:02}" for i in range(30)]
    rows = readers.read_text_classification(path)
    error = expect_data_error(lambda: readers.encode_labels(rows, vocabulary, path=path),
                              path, 2, "'label19', ... (30 in all)")
    assert "label20" not in error.reason


# The shared data sets (SEQAPP_DATA_DIR), read in full.


@pytest.fixture(scope="module")
def data_dir():
    root = settings.data_dir()
    if root is None:
        pytest.fail("SEQAPP_DATA_DIR is not set: point it at the shared data folder "
                    "(e.g. SEQAPP_DATA_DIR=/work/shared/data) to run the real-data checks")
    return root


@pytest.mark.slow
def test_imdb_train(data_dir):
    rows = readers.read_text_classification(data_dir / "imdb" / "train.csv.gz",
                                            text_column="text", label_column="label")
    assert len(rows) == 25_000
    assert {row["label"] for row in rows} == {"0", "1"}
    assert readers.label_vocabulary(rows, path="imdb") == ["0", "1"]


@pytest.mark.slow
def test_ptb_valid(data_dir):
    assert len(readers.read_plain_text(data_dir / "ptb" / "ptb.valid.txt")) == 3_370


@pytest.mark.slow
def test_mr_polarity_is_cp1252_not_utf8(data_dir):
    path = data_dir / "mr_polarity" / "rt-polarity.pos"
    error = expect_data_error(lambda: readers.read_plain_text(path), path, 44, "0xf3", "encoding=")
    assert str(error).startswith(f"{path}:44: ")
    assert len(readers.read_plain_text(path, encoding="cp1252")) == 5_331


@pytest.mark.slow
def test_anki_pairs_as_a_parallel_tsv(data_dir, tmp_path):
    # Tatoeba/Anki pairs are a plain TSV whose sentences often start with a quote.
    with gzip.open(data_dir / "anki_spa_eng" / "spa.txt.gz", "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    sample = lines[:50] + [line for line in lines if line.startswith('"')][:50]
    path = write(tmp_path, "pairs.tsv", "source\ttarget\n" + "\n".join(sample) + "\n")
    rows = readers.read_parallel(path)
    assert len(rows) == len(sample) > 50
    assert [row["source"] + "\t" + row["target"] for row in rows] == sample


@pytest.mark.slow
def test_multi30k_line_aligned(data_dir):
    folder = data_dir / "multi30k"
    rows = readers.read_parallel(folder / "val.en.gz", folder / "val.de.gz")
    assert len(rows) == 1_014
