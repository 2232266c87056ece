"""Reads users' own data files into memory, validating every record.

Each reader returns a list of plain dicts, one per example, for a later module to
wrap in ``tf.data``. Every problem raises :class:`~seqapp.errors.DataError` naming
the file, the 1-based line (or record) and the reason, so that bad data stops the
run before any training starts.

All readers share one way of reading a file (:func:`_read_text`):

- a ``.gz`` suffix means gzip;
- bytes are decoded strictly in the given encoding, and a leading byte order mark
  is dropped;
- lines end at ``"\\n"`` or ``"\\r\\n"`` and nowhere else, so characters such as
  U+0085 or U+2028 inside a text stay in that text.

Rows of :func:`read_text_classification` also carry ``LINE_KEY`` (``"_line"``):
the 1-based line their record starts on, so that :func:`encode_labels` can point
at the row whose label it rejects. Drop it before building tensors.
"""

import csv
import itertools
import gzip
import json
import zlib
from pathlib import Path, PurePosixPath

from seqapp.errors import DataError

LINE_KEY = "_line"

_DELIMITERS = {"csv": ",", "tsv": "\t"}
_FORMATS = (*_DELIMITERS, "jsonl")
_FORMAT_BY_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json-lines": "jsonl"}
_UNITS = ("line", "paragraph")
_CAPTIONS_HEADER = ["image", "caption"]
# Karpathy's split names and seqapp's.
_KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "validation", "test": "test"}
# Error messages list at most this many labels or columns.
_MAX_LISTED = 20


def read_text_classification(path, *, text_column="text", label_column="label", format=None,
                             encoding="utf-8"):
    """Reads labelled texts from a CSV, TSV or JSON Lines file.

    CSV and TSV files start with a header row and columns are chosen by name; other
    columns are ignored. JSON Lines files hold one object per line. Labels are
    strings (JSON integers become strings) with surrounding whitespace removed;
    texts are kept exactly as written.

    Args:
        path: the file; a trailing ``.gz`` means gzip.
        text_column: the column (or JSON key) holding the text.
        label_column: the column (or JSON key) holding the label.
        format: ``"csv"``, ``"tsv"`` or ``"jsonl"``; None infers it from the suffix
            (``.csv``, ``.tsv``, ``.jsonl`` or ``.json-lines``, each optionally
            followed by ``.gz``).
        encoding: the file's text encoding, e.g. ``"cp1252"``.

    Returns:
        A list of ``{"text": str, "label": str, LINE_KEY: int}``, in file order.

    Raises:
        DataError: the file cannot be read or a record is malformed.
        ValueError: ``format`` is not one of the formats above.
    """
    if format is None:
        format = _infer_format(path)
    elif format not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, got {format!r}")
    lines = _read_lines(path, encoding)
    if format == "jsonl":
        records = _jsonl_records(path, lines)
    else:
        records = _table(path, lines, _DELIMITERS[format], (text_column, label_column))
    return [
        {
            "text": _text(path, line, record, text_column),
            "label": _label(path, line, record, label_column),
            LINE_KEY: line,
        }
        for line, record in records
    ]


def read_parallel(source_path, target_path=None, *, source_column="source", target_column="target",
                  encoding="utf-8"):
    """Reads source/target text pairs, e.g. for translation.

    Either two line-aligned text files (line ``i`` of one translates line ``i`` of
    the other; a line blank in both files is skipped, a line blank in only one is
    an error), or, when ``target_path`` is None, one TSV file whose header names
    the two columns.

    Args:
        source_path: the source-side text file, or the TSV file.
        target_path: the target-side text file, or None for the TSV form.
        source_column: the TSV column holding the source text.
        target_column: the TSV column holding the target text.
        encoding: the files' text encoding.

    Returns:
        A list of ``{"source": str, "target": str}``, in file order.

    Raises:
        DataError: a file cannot be read, a record is malformed, or the two files
            differ in their number of lines.
    """
    if target_path is None:
        lines = _read_lines(source_path, encoding)
        return [
            {
                "source": _text(source_path, line, row, source_column),
                "target": _text(source_path, line, row, target_column),
            }
            for line, row in _table(source_path, lines, "\t", (source_column, target_column))
        ]
    sources = _read_lines(source_path, encoding)
    targets = _read_lines(target_path, encoding)
    if len(sources) != len(targets):
        raise DataError(source_path, None,
                        f"has {len(sources)} lines but {target_path} has {len(targets)}; "
                        f"line-aligned files need the same number of lines")
    return [
        {
            "source": _nonblank(source_path, line, source, "line (its target line is not)"),
            "target": _nonblank(target_path, line, target, "line (its source line is not)"),
        }
        for line, (source, target) in enumerate(zip(sources, targets), start=1)
        if not (_is_blank(source) and _is_blank(target))
    ]


def read_plain_text(path, *, unit="line", encoding="utf-8"):
    """Reads unlabelled text, e.g. for language modelling.

    Args:
        path: the file; a trailing ``.gz`` means gzip.
        unit: ``"line"``: one example per non-blank line; ``"paragraph"``: one
            example per block of lines separated by blank lines, its lines joined
            with ``"\\n"``.
        encoding: the file's text encoding.

    Returns:
        A list of ``{"text": str}``, in file order.

    Raises:
        DataError: the file cannot be read or holds no text.
        ValueError: ``unit`` is not ``"line"`` or ``"paragraph"``.
    """
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {_UNITS}, got {unit!r}")
    lines = _read_lines(path, encoding)
    if unit == "line":
        return [{"text": line} for line in lines if not _is_blank(line)]
    blocks = itertools.groupby(lines, key=_is_blank)
    return [{"text": "\n".join(block)} for blank, block in blocks if not blank]


def read_captions(image_dir, captions_path, *, encoding="utf-8"):
    """Reads image captions, checking that every captioned image exists.

    The captions file is either a TSV (``image<TAB>caption`` per line, with an
    optional ``image<TAB>caption`` header) or, with a ``.json`` suffix, COCO-style
    JSON: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id",
    "caption"}]}``. An image may have several captions. Image names are paths
    relative to ``image_dir`` and may not leave it (no absolute paths, no ``..``).

    Errors in a TSV name its line; errors in COCO JSON name the 1-based position of
    the entry in its list (``"images"`` or ``"annotations"``, as the reason says).

    Args:
        image_dir: the folder holding the images.
        captions_path: the captions file; a trailing ``.gz`` means gzip.
        encoding: the captions file's text encoding.

    Returns:
        A list of ``{"image_path": str, "caption": str}`` with absolute image paths,
        in file order.

    Raises:
        DataError: ``image_dir`` is not a folder, the captions file cannot be read,
            or a record is malformed or names a missing image.
    """
    root = Path(image_dir).resolve()
    if not root.is_dir():
        raise DataError(image_dir, None, "is not a folder of images")
    if _suffix(captions_path) == ".json":
        rows = _coco_captions(root, captions_path, encoding)
    else:
        rows = _tsv_captions(root, captions_path, encoding)
    if not rows:
        raise DataError(captions_path, None, "holds no captions")
    return rows


def read_karpathy_split(json_path, image_dir, *, encoding="utf-8"):
    """Reads image captions and their splits from a Karpathy-split JSON file.

    The file is ``dataset_flickr8k.json``, ``dataset_flickr30k.json`` or
    ``dataset_coco.json`` as Karpathy's NeuralTalk released them: ``{"images":
    [{"filename", "filepath" (optional: COCO's subfolder, e.g. "val2014"),
    "split", "sentences": [{"raw", "tokens"}]}]}``. Each sentence is one row,
    captioned by its ``"raw"`` text as written, or by its ``"tokens"`` joined with
    spaces if it has no ``"raw"``. Splits are renamed: ``"train"`` and
    ``"restval"`` (COCO's validation images trained on) become ``"train"``,
    ``"val"`` becomes ``"validation"``, ``"test"`` stays ``"test"``.

    Image paths (``filepath/filename``) are relative to ``image_dir`` and may not
    leave it (no absolute paths, no ``..``); an image may appear only once, so that
    no image is in two splits. Errors name the 1-based position of the entry in
    ``"images"`` as their line (the reason names a sentence's position in its
    ``"sentences"``), or the line of invalid JSON.

    Args:
        json_path: the JSON file; a trailing ``.gz`` means gzip.
        image_dir: the folder holding the images (for COCO, the one holding
            ``train2014/`` and ``val2014/``).
        encoding: the JSON file's text encoding.

    Returns:
        A list of ``{"image_path": str, "caption": str, "split": str}`` with
        absolute image paths and splits ``"train"``, ``"validation"`` or
        ``"test"``, in file order.

    Raises:
        DataError: ``image_dir`` is not a folder, the JSON file cannot be read, or
            an entry is malformed, names a missing image, an image named before, or
            an unknown split.
    """
    root = Path(image_dir).resolve()
    if not root.is_dir():
        raise DataError(image_dir, None, "is not a folder of images")
    try:
        data = json.loads(_read_text(json_path, encoding))
    except json.JSONDecodeError as error:
        raise _invalid_json(json_path, error.lineno, error) from None
    if not isinstance(data, dict):
        raise DataError(json_path, None,
                        f'expected a JSON object with "images", found {_json_type(data)}')
    entries = {}  # image path -> entry number, for repeats
    rows = []
    for number, entry in _coco_entries(json_path, data, "images",
                                       ("filename", "split", "sentences")):
        image_path = _karpathy_image(root, json_path, number, entry)
        if image_path in entries:
            name = Path(image_path).relative_to(root).as_posix()
            raise DataError(json_path, number,
                            f"image {name!r} is also entry {entries[image_path]}")
        entries[image_path] = number
        split = entry["split"]
        if not isinstance(split, str) or split not in _KARPATHY_SPLITS:
            raise DataError(json_path, number,
                            f"split {split!r} is none of {_listing(list(_KARPATHY_SPLITS))}")
        sentences = entry["sentences"]
        if not isinstance(sentences, list) or not sentences:
            found = "an empty array" if sentences == [] else _json_type(sentences)
            raise DataError(json_path, number,
                            f'"sentences" must be a non-empty array, found {found}')
        for position, sentence in enumerate(sentences, start=1):
            rows.append({"image_path": image_path,
                         "caption": _karpathy_caption(json_path, number, position, sentence),
                         "split": _KARPATHY_SPLITS[split]})
    if not rows:
        raise DataError(json_path, None, "holds no captions")
    return rows


def label_vocabulary(train_rows, *, path):
    """Returns the labels of the training rows, each once, sorted.

    Args:
        train_rows: rows from :func:`read_text_classification`.
        path: the file the rows came from, for errors.

    Returns:
        The sorted list of distinct labels.

    Raises:
        DataError: fewer than 2 distinct labels.
    """
    vocabulary = sorted({row["label"] for row in train_rows})
    if len(vocabulary) < 2:
        raise DataError(path, None,
                        f"a classifier needs at least 2 distinct labels, found {len(vocabulary)}: "
                        f"{_listing(vocabulary)}")
    return vocabulary


def encode_labels(rows, vocabulary, *, path):
    """Maps each row's label to its index in the vocabulary.

    Args:
        rows: rows from :func:`read_text_classification`.
        vocabulary: labels from :func:`label_vocabulary`, usually of the training split.
        path: the file the rows came from, for errors.

    Returns:
        The label ids, one per row.

    Raises:
        DataError: a label is not in the vocabulary (e.g. it occurs only in the
            test split); names the row's line.
    """
    ids = {label: index for index, label in enumerate(vocabulary)}
    encoded = []
    for row in rows:
        label = row["label"]
        if label not in ids:
            raise DataError(path, row.get(LINE_KEY),
                            f"label {label!r} is not among the training labels "
                            f"({_listing(vocabulary)})")
        encoded.append(ids[label])
    return encoded


# Reading files: one path from bytes to lines for every reader.


def _read_text(path, encoding):
    """Returns a file's text, decoded strictly, without a byte order mark.

    Args:
        path: the file; a ``.gz`` suffix means gzip.
        encoding: a Python codec name.

    Returns:
        The text.

    Raises:
        DataError: the file cannot be read or decoded, or holds only whitespace.
    """
    data = _read_bytes(path)
    try:
        text = data.decode(encoding)
    except LookupError:
        raise DataError(path, None, f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as error:
        raise _decode_error(path, encoding, error) from None
    # A byte order mark only tells the encoding; it is not part of the first line.
    text = text.removeprefix("\ufeff")
    if _is_blank(text):
        raise DataError(path, None, "file is empty")
    return text


def _read_lines(path, encoding):
    """Returns a file's lines, without their ``"\\n"`` or ``"\\r\\n"`` terminators.

    Line ``n`` (1-based) is item ``n - 1``; a final terminator does not start
    another line.

    Args:
        path: the file; a ``.gz`` suffix means gzip.
        encoding: a Python codec name.

    Returns:
        The list of lines.

    Raises:
        DataError: as :func:`_read_text`.
    """
    # Not str.splitlines(): it also breaks at U+0085, U+2028, form feeds and other
    # characters that occur inside real texts.
    lines = _read_text(path, encoding).split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _read_bytes(path):
    """Returns a file's bytes, decompressed if its suffix is ``.gz``."""
    try:
        if Path(path).suffix.lower() == ".gz":
            with gzip.open(path) as file:
                return file.read()
        return Path(path).read_bytes()
    except OSError as error:  # Also a gzip header error (gzip.BadGzipFile).
        raise DataError(path, None, f"cannot read: {error.strerror or error}") from None
    except (EOFError, zlib.error) as error:
        raise DataError(path, None, f"corrupt gzip data: {error}") from None


def _decode_error(path, encoding, error):
    """Returns the DataError for a UnicodeDecodeError, locating the bad bytes."""
    # Everything before the bad bytes decoded, so it decodes again.
    before = error.object[:error.start].decode(encoding).removeprefix("\ufeff")
    line = before.count("\n") + 1
    column = len(before) - before.rfind("\n")
    bad = " ".join(f"0x{byte:02x}" for byte in error.object[error.start:error.end])
    return DataError(path, line,
                     f"not valid {encoding} at column {column} (byte offset {error.start}): "
                     f"{bad} ({error.reason}); if the file uses another encoding, pass it as "
                     f'encoding=, e.g. encoding="cp1252" for Windows text')


def _suffix(path):
    """Returns the file's last suffix before any ``.gz``, lower-cased."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        path = path.with_suffix("")
    return path.suffix.lower()


def _infer_format(path):
    """Returns the text-classification format that the file's suffix names."""
    format = _FORMAT_BY_SUFFIX.get(_suffix(path))
    if format is None:
        raise DataError(path, None,
                        f"cannot tell the format from the file name; use a suffix among "
                        f"{sorted(_FORMAT_BY_SUFFIX)} (optionally + .gz) or pass format= one of "
                        f"{_FORMATS}")
    return format


# Records: CSV/TSV fields, table rows, JSON Lines objects.


def _records(path, lines, delimiter):
    """Yields the non-blank records of a CSV or TSV file.

    Args:
        path: the file, for errors.
        lines: its lines, from :func:`_read_lines`.
        delimiter: ``","`` or ``"\\t"``.

    Yields:
        ``(line, fields)``: the 1-based line the record starts on, and its fields.

    Raises:
        DataError: a record's quoting is malformed.
    """
    # TSV files come in two kinds. Most (paste, corpus releases, Tatoeba/Anki
    # exports) have no quoting at all, and their texts may start with a quote, as
    # in `"Hi," he said.`, which a quoting reader would mangle or run into the next
    # lines. Others are written by pandas or spreadsheets, which quote fields that
    # hold tabs, newlines or quotes. So a TSV is read with quoting only if all of
    # it parses under strict quoting rules; otherwise each line is one record,
    # split at tabs, and quotes are ordinary characters.
    if delimiter == "\t" and not _parses_quoted(lines, delimiter):
        yield from ((number, line.split("\t"))
                    for number, line in enumerate(lines, start=1) if not _is_blank(line))
        return
    # The reader keeps newlines inside quoted fields only if lines end with one.
    reader = csv.reader((line + "\n" for line in lines), delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataError(path, start,
                            f"malformed record ({error}); a field that starts with a quote must "
                            f"end with one, and quotes inside it must be doubled") from None
        if len(fields) > 1 or (fields and not _is_blank(fields[0])):
            yield start, fields
        start = reader.line_num + 1


def _parses_quoted(lines, delimiter):
    """Whether the lines parse as CSV with strict quoting rules."""
    try:
        for _ in csv.reader((line + "\n" for line in lines), delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return False
    return True


def _table(path, lines, delimiter, columns):
    """Yields the data rows of a CSV or TSV file with a header row.

    Args:
        path: the file, for errors.
        lines: its lines, from :func:`_read_lines`.
        delimiter: ``","`` or ``"\\t"``.
        columns: the column names the header must hold, each once.

    Yields:
        ``(line, row)``: the 1-based line the record starts on, and a dict from
        column name to field.

    Raises:
        DataError: a column is missing or repeated, a record has the wrong number
            of fields, or there are no data rows.
    """
    records = _records(path, lines, delimiter)
    header_line, header = next(records, (None, None))
    if header is None:
        raise DataError(path, None, "file is empty")
    for column in columns:
        if column not in header:
            raise DataError(path, header_line,
                            f"no column {column!r} in the header (columns present: "
                            f"{_listing(header)})")
        if header.count(column) > 1:
            raise DataError(path, header_line,
                            f"column {column!r} appears more than once in the header")
    has_rows = False
    for line, fields in records:
        if len(fields) != len(header):
            raise DataError(path, line,
                            f"expected {len(header)} fields as in the header, found {len(fields)}")
        has_rows = True
        yield line, dict(zip(header, fields))
    if not has_rows:
        raise DataError(path, header_line, "has a header row but no data rows")


def _jsonl_records(path, lines):
    """Yields ``(line, object)`` for each non-blank line of a JSON Lines file."""
    for number, line in enumerate(lines, start=1):
        if _is_blank(line):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _invalid_json(path, number, error) from None
        if not isinstance(record, dict):
            raise DataError(path, number, f"expected a JSON object, found {_json_type(record)}")
        yield number, record


# Fields.


def _field(path, line, record, key):
    """Returns ``record[key]``; a missing key is a DataError listing those present."""
    if key not in record:
        raise DataError(path, line, f"missing key {key!r} (keys present: {_listing(list(record))})")
    return record[key]


def _text(path, line, record, key):
    """Returns ``record[key]``, checked to be a string that is not blank."""
    value = _field(path, line, record, key)
    if not isinstance(value, str):
        raise DataError(path, line, f"{key!r} must be a string, found {_json_type(value)}")
    return _nonblank(path, line, value, repr(key))


def _label(path, line, record, key):
    """Returns ``record[key]`` as a label: a string or integer, as a stripped non-empty string."""
    value = _field(path, line, record, key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(path, line,
                        f"label {key!r} must be a string or an integer, found {_json_type(value)}")
    return _nonblank(path, line, value, f"label {key!r}").strip()


def _is_blank(text):
    """Whether text is empty or only whitespace (without copying it, as strip() would)."""
    return not text or text.isspace()


def _nonblank(path, line, text, what):
    """Returns ``text`` unchanged; empty or whitespace-only text is a DataError about ``what``."""
    if _is_blank(text):
        raise DataError(path, line, f"empty {what}")
    return text


# Captions.


def _tsv_captions(root, path, encoding):
    """Returns caption rows from an ``image<TAB>caption`` file."""
    records = _records(path, _read_lines(path, encoding), "\t")
    image_paths = {}  # Checks each image once, however many captions it has.
    rows = []
    for index, (number, fields) in enumerate(records):
        if index == 0 and fields == _CAPTIONS_HEADER:
            continue
        if len(fields) != 2:
            raise DataError(path, number,
                            f"expected 2 fields (image, caption), found {len(fields)}")
        image, caption = fields
        if image not in image_paths:
            image_paths[image] = _image_path(root, path, number, image)
        rows.append({"image_path": image_paths[image],
                     "caption": _nonblank(path, number, caption, "caption")})
    return rows


def _coco_captions(root, path, encoding):
    """Returns caption rows from a COCO-style JSON file."""
    try:
        data = json.loads(_read_text(path, encoding))
    except json.JSONDecodeError as error:
        raise _invalid_json(path, error.lineno, error) from None
    if not isinstance(data, dict):
        raise DataError(path, None,
                        f'expected a JSON object with "images" and "annotations", found '
                        f"{_json_type(data)}")
    image_paths = {}
    for number, image in _coco_entries(path, data, "images", ("id", "file_name")):
        image_id = _coco_id(path, number, image, "id")
        if image_id in image_paths:
            raise DataError(path, number, f'"images" has id {image_id!r} more than once')
        image_paths[image_id] = _image_path(root, path, number, image["file_name"])
    rows = []
    for number, annotation in _coco_entries(path, data, "annotations", ("image_id", "caption")):
        image_id = _coco_id(path, number, annotation, "image_id")
        if image_id not in image_paths:
            raise DataError(path, number,
                            f'annotation\'s image_id {image_id!r} is no "id" in "images"')
        rows.append({"image_path": image_paths[image_id],
                     "caption": _text(path, number, annotation, "caption")})
    return rows


def _coco_entries(path, data, section, keys):
    """Yields ``(number, entry)`` for each entry of ``data[section]``, checked to have ``keys``."""
    entries = data.get(section)
    if not isinstance(entries, list):
        found = "nothing" if section not in data else _json_type(entries)
        raise DataError(path, None, f'expected a list under "{section}", found {found}')
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise DataError(path, number,
                            f'entry {number} of "{section}" must be an object, found '
                            f"{_json_type(entry)}")
        for key in keys:
            _field(path, number, entry, key)
        yield number, entry


def _coco_id(path, number, entry, key):
    """Returns ``entry[key]``, checked to be an integer or string image id."""
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(path, number,
                        f"{key!r} must be an integer or a string, found {_json_type(value)}")
    return value


def _karpathy_image(root, path, number, entry):
    """Returns the absolute path of a Karpathy-split entry's image, checked to exist."""
    name = entry["filename"]
    folder = entry.get("filepath")
    if folder is None or not isinstance(name, str) or _is_blank(name):
        return _image_path(root, path, number, name)
    if not isinstance(folder, str):
        raise DataError(path, number, f"'filepath' must be a string, found {_json_type(folder)}")
    # An absolute file name stays absolute here, and is refused as such.
    return _image_path(root, path, number, str(PurePosixPath(folder, name)))


def _karpathy_caption(path, number, position, sentence):
    """Returns a Karpathy-split sentence's caption: its "raw" text, else its tokens joined."""
    where = f"sentence {position} of entry {number}"
    if not isinstance(sentence, dict):
        raise DataError(path, number, f"{where} must be an object, found {_json_type(sentence)}")
    if "raw" in sentence:
        raw = sentence["raw"]
        if not isinstance(raw, str):
            raise DataError(path, number, f"{where}: 'raw' must be a string, found "
                                          f"{_json_type(raw)}")
        return _nonblank(path, number, raw, f"'raw' in {where}")
    if "tokens" not in sentence:
        raise DataError(path, number, f"{where} has neither 'raw' nor 'tokens' (keys present: "
                                      f"{_listing(list(sentence))})")
    tokens = sentence["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(token, str) for token in tokens):
        raise DataError(path, number, f"{where}: 'tokens' must be an array of strings")
    return _nonblank(path, number, " ".join(tokens), f"'tokens' in {where}")


def _image_path(root, captions_path, number, name):
    """Returns the absolute path of image ``name`` under ``root``, checked to exist.

    The check is on the name only: a symbolic link inside ``root`` may point
    elsewhere, as users often link image folders in rather than copy them.
    """
    if not isinstance(name, str) or _is_blank(name):
        raise DataError(captions_path, number,
                        f"image file name must be a non-empty string, found {name!r}")
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise DataError(captions_path, number,
                        f"image {name!r} must be a path inside {root} (no absolute path, no '..')")
    image = root / relative
    if not image.is_file():
        raise DataError(captions_path, number, f"image {name!r} not found in {root}")
    return str(image)


# Messages.


def _listing(items):
    """Returns items as a comma-separated list of reprs, cut after _MAX_LISTED."""
    shown = ", ".join(repr(item) for item in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", ... ({len(items)} in all)"
    return shown


def _invalid_json(path, line, error):
    """Returns the DataError for a json.JSONDecodeError at ``line`` of ``path``."""
    return DataError(path, line, f"invalid JSON: {error.msg} at column {error.colno}")


def _json_type(value):
    """Returns the JSON name of a parsed JSON value's type, e.g. "array"."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names[type(value)]
