"""Turns encoded images into model-ready tensors, in ``tf.data`` and in an exported SavedModel.

One function decodes for both: :func:`load_image` maps image files in a training
pipeline, :func:`decode_images` turns a serving request's ``image_bytes`` into a
batch. Only core TensorFlow ops are used (no ``py_function``, no XLA, no ragged
tensors), so an export runs on the stock TF Serving binary.

Accepted formats are JPEG, PNG, GIF and BMP, told apart by their first bytes.
Each image becomes float32 ``[image_size, image_size, 3]`` with values in
``[0, 1]``:

- grayscale is repeated into 3 channels, an alpha channel is dropped (not
  blended), palette PNGs are expanded, 16-bit PNGs keep their precision
  (65535 is 1.0);
- a GIF gives its first frame only;
- the image is resized with antialiased bilinear filtering to a square: the
  aspect ratio is not kept, a non-square image is stretched.

Bad input raises ``tf.errors.InvalidArgumentError`` (INVALID_ARGUMENT in TF
Serving), never a crash. These checks run before anything is decoded, and their
messages start as quoted:

- ``"image_bytes is empty"``;
- ``"image_bytes is not a JPEG, PNG, GIF or BMP image"``;
- ``"image_bytes is too short for a PNG header"`` (or GIF, BMP);
- ``"image is W x H pixels, outside the limit of max_pixels=N"``: the size the
  decoder would allocate, read from the header (JPEG: ``ExtractJpegShape``; PNG:
  IHDR; BMP: its info header; GIF: the largest frame, from every image
  descriptor, as TensorFlow ignores the screen size), so a small file that claims
  a huge image is rejected without allocating it; a zero width or height is
  rejected the same way;
- ``"GIF frames hold P pixels together, outside the limit of 4 x max_pixels=N"``:
  giflib unpacks every frame, though only the first is kept;
- ``"image_bytes is a GIF with too many data blocks to check (more than 65536)"``.

Data that passes these checks but is corrupt further on fails in the decoder
itself with the decoder's message: a truncated JPEG with ``"jpeg::Uncompress
failed. Invalid JPEG data or crop window."`` (never half-decoded: TensorFlow's
``try_recover_truncated`` stays off), a JPEG whose header is cut short with
``"Invalid JPEG data, size N"`` (from ``ExtractJpegShape``), a truncated PNG with
``"Invalid PNG data, size N"``, a truncated BMP with ``"Input size should match
..."``, a GIF truncated in its first frame with ``"Invalid GIF data ..."``; a GIF
truncated in a later frame still gives its first frame.

Memory: an 8-bit image takes 3 bytes per pixel while it is decoded and a 16-bit
PNG 6, plus a float32 buffer of ``height x image_size x 3`` for resizing; at the
default ``max_pixels`` (4096 x 4096) one image needs at most about 60 MB (110 MB
for a 16-bit PNG). ``decode_images`` in a graph decodes up to 10 images at once
(``tf.map_fn``'s ``parallel_iterations``). A GIF's frames take 1 byte per pixel
more each, at most 4 x ``max_pixels`` together.
"""

import functools

import tensorflow as tf

MAX_PIXELS = 4096 * 4096

# Formats in the order of their index in the graph; each with its signature's first bytes.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
_JPEG, _PNG, _GIF, _BMP = range(len(_FORMATS))
_MAGIC = ((b"\xff\xd8\xff",), (b"\x89PNG\r\n\x1a\n",), (b"GIF87a", b"GIF89a"), (b"BM",))
# Bytes each format needs for its width and height (JPEG's are found by ExtractJpegShape;
# a GIF's 13 are its header and screen descriptor, which say where its blocks start).
_HEADER_LENGTHS = (0, 24, 13, 26)
_HEADER_BYTES = 32
# Byte 24 of a PNG (in IHDR) is the bit depth.
_PNG_BIT_DEPTH = 24
# A GIF's frames together may hold this many times max_pixels pixels.
_GIF_FRAMES = 4
# Steps (sub-blocks and blocks) a GIF's walk may take; see _gif_scan.
_GIF_MAX_STEPS = 2 ** 16


def decode_image(image_bytes, image_size, *, max_pixels=MAX_PIXELS):
    """Decodes one encoded image into a square float32 RGB image.

    Works in ``tf.data``, inside ``tf.function`` and eagerly (where it runs as a
    ``tf.function`` too, one per ``image_size`` and ``max_pixels``).

    Args:
        image_bytes: a scalar ``tf.string``: a JPEG, PNG, GIF or BMP file's bytes.
        image_size: the output's height and width, a Python int.
        max_pixels: the largest width x height accepted, a Python int.

    Returns:
        A float32 tensor of static shape ``[image_size, image_size, 3]``, values
        in ``[0, 1]``.

    Raises:
        tf.errors.InvalidArgumentError: the bytes are empty, not a JPEG, PNG, GIF
            or BMP image, have a cut-off header, claim more than ``max_pixels``
            pixels, or fail to decode (see the module docstring for the messages).
        ValueError: ``image_bytes`` is not a scalar, or ``image_size`` or
            ``max_pixels`` is not a positive int.
    """
    image_bytes = _strings(image_bytes, 0, "a scalar string")
    _check_sizes(image_size, max_pixels)
    if tf.executing_eagerly():
        return _graph(decode_image, image_size, max_pixels, rank=0)(image_bytes)
    return _decode(image_bytes, image_size, max_pixels, where="")


def decode_images(image_bytes, image_size, *, max_pixels=MAX_PIXELS):
    """Decodes a batch of encoded images, e.g. a serving signature's ``image_bytes`` input.

    Each image is decoded and resized on its own (``tf.map_fn``), so the images
    of a batch may differ in format and size. An empty batch gives an empty
    result.

    Args:
        image_bytes: a ``tf.string`` tensor of shape ``[batch]``.
        image_size: the output's height and width, a Python int.
        max_pixels: the largest width x height accepted per image, a Python int.

    Returns:
        A float32 tensor of shape ``[batch, image_size, image_size, 3]``, values in
        ``[0, 1]``.

    Raises:
        tf.errors.InvalidArgumentError: as :func:`decode_image`, for the first bad
            image met. The messages of the checks end with ``" (batch index i)"``;
            an error raised by a decoder itself (corrupt data after a valid
            header) cannot name the index.
        ValueError: ``image_bytes`` is not of rank 1, or ``image_size`` or
            ``max_pixels`` is not a positive int.
    """
    image_bytes = _strings(image_bytes, 1, "a [batch] string tensor")
    _check_sizes(image_size, max_pixels)
    if tf.executing_eagerly():
        return _graph(decode_images, image_size, max_pixels, rank=1)(image_bytes)
    spec = tf.TensorSpec([image_size, image_size, 3], tf.float32)
    indices = tf.range(tf.shape(image_bytes, out_type=tf.int64)[0])

    def decode(args):
        contents, index = args
        return _decode(contents, image_size, max_pixels,
                       where=tf.strings.format(" (batch index {})", index))

    return tf.map_fn(decode, (image_bytes, indices), fn_output_signature=spec)


def load_image(path, image_size, *, max_pixels=MAX_PIXELS):
    """Reads and decodes one image file, for ``tf.data`` pipelines.

    Args:
        path: a scalar ``tf.string``, the file's path.
        image_size: the output's height and width, a Python int.
        max_pixels: the largest width x height accepted, a Python int.

    Returns:
        As :func:`decode_image`.

    Raises:
        tf.errors.NotFoundError: the file does not exist.
        tf.errors.InvalidArgumentError: as :func:`decode_image`; the messages of
            the checks end with ``" (file PATH)"``.
    """
    path = _strings(path, 0, "a scalar string", name="path")
    _check_sizes(image_size, max_pixels)
    if tf.executing_eagerly():
        return _graph(load_image, image_size, max_pixels, rank=0)(path)
    return _decode(tf.io.read_file(path), image_size, max_pixels,
                   where=tf.strings.join([" (file ", path, ")"]))


@functools.lru_cache(maxsize=None)
def _graph(function, image_size, max_pixels, rank):
    """Returns ``function`` as a tf.function for string tensors of ``rank``.

    Called eagerly, the public functions run as a graph: op by op, decoding would
    take some 10 times as long, and checks and errors would differ.
    """
    return tf.function(lambda tensor: function(tensor, image_size, max_pixels=max_pixels),
                       input_signature=[tf.TensorSpec([None] * rank, tf.string)])


def _strings(value, rank, what, name="image_bytes"):
    """Returns ``value`` as a string tensor, checked to be of ``rank``."""
    tensor = tf.convert_to_tensor(value, tf.string)
    if tensor.shape.rank != rank:
        raise ValueError(f"{name} must be {what}, got shape {tensor.shape}")
    return tensor


def _decode(contents, image_size, max_pixels, where):
    """Checks, decodes and resizes one image; ``where`` ends each check's message."""
    # Each check runs only once the previous one passed: a later one reads what an
    # earlier one vouched for, and nothing is decoded before all passed.
    length = tf.strings.length(contents)
    contents = _after(_check(length > 0, "image_bytes is empty", where), contents)
    head = tf.strings.substr(contents, 0, _HEADER_BYTES)
    kind = _format(head)
    kind = _after(_check(kind >= 0, "image_bytes is not a JPEG, PNG, GIF or BMP image", where),
                  kind)
    contents = _after(_check(length >= tf.gather(_HEADER_LENGTHS, kind),
                             tf.strings.join(["image_bytes is too short for a ",
                                              tf.gather(_FORMATS, kind), " header"]),
                             where),
                      contents)
    header = _header_bytes(head)
    height, width, gif_pixels, scanned = _size(contents, header, kind)
    contents = _after(_check(scanned,
                             f"image_bytes is a GIF with too many data blocks to check (more "
                             f"than {_GIF_MAX_STEPS})",
                             where),
                      contents)
    # Compared without multiplying: a PNG may claim 2^32 - 1 x 2^32 - 1 pixels.
    fits = (width > 0) & (height > 0) & (height <= max_pixels // tf.maximum(width, 1))
    contents = _after(_check(fits,
                             tf.strings.format("image is {} x {} pixels, outside the limit of "
                                               "max_pixels={}", (width, height, max_pixels)),
                             where),
                      contents)
    contents = _after(_check(gif_pixels <= _GIF_FRAMES * max_pixels,
                             tf.strings.format("GIF frames hold {} pixels together, outside the "
                                               f"limit of {_GIF_FRAMES} x max_pixels={{}}",
                                               (gif_pixels, max_pixels)),
                             where),
                      contents)
    sixteen_bit = (kind == _PNG) & (header[_PNG_BIT_DEPTH] == 16)
    return tf.cond(sixteen_bit,
                   lambda: _decode_resized(contents, tf.uint16, image_size),
                   lambda: _decode_resized(contents, tf.uint8, image_size),
                   name="decode")


def _decode_resized(contents, dtype, image_size):
    """Decodes to ``dtype`` (uint8 or uint16) and resizes, giving float32 in [0, 1]."""
    image = tf.io.decode_image(contents, channels=3, dtype=dtype, expand_animations=False)
    image.set_shape([None, None, 3])
    # Resizing takes the integer image as it is and returns float32: converting the
    # full-size image first would take 4 times the memory and, at 4000 x 4000, 10
    # times as long as decoding. Antialiasing matters when shrinking large photos
    # and leaves enlarging unchanged.
    image = tf.image.resize(image, [image_size, image_size], method="bilinear", antialias=True)
    image = tf.clip_by_value(image / dtype.max, 0.0, 1.0)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _after(check, tensor):
    """Returns ``tensor``, available only once ``check`` ran."""
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def _check(condition, message, where):
    """Returns an op raising InvalidArgumentError(message + where) unless condition holds."""
    return tf.debugging.Assert(condition, [tf.strings.join([message, where])])


def _format(head):
    """Returns the index in _FORMATS of the format the first bytes show, or -1."""
    kind = tf.constant(-1)
    for index, signatures in reversed(list(enumerate(_MAGIC))):
        matches = tf.reduce_any(
            [tf.strings.substr(head, 0, len(signature)) == signature for signature in signatures])
        kind = tf.where(matches, index, kind)
    return kind


def _header_bytes(head):
    """Returns the first _HEADER_BYTES bytes as int64, zero-padded if the data is shorter."""
    values = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
    return tf.pad(values, [[0, _HEADER_BYTES - tf.size(values)]])


def _size(contents, header, kind):
    """Returns what the decoder will allocate for a ``kind`` image, before decoding it.

    Returns:
        ``(height, width, gif_pixels, scanned)``, int64 but for the bool
        ``scanned``: the output's height and width; for a GIF, the pixels of its
        frames together (0 for other formats) and whether its blocks could all be
        checked (True for other formats).
    """

    def number(offset, size, big_endian, signed=False):
        value = tf.add_n([header[offset + i] * 256 ** (size - 1 - i if big_endian else i)
                          for i in range(size)])
        if signed:
            value = tf.where(value >= 2 ** (8 * size - 1), value - 2 ** (8 * size), value)
        return value

    zero = tf.constant(0, tf.int64)
    jpeg = tf.cond(kind == _JPEG,
                   lambda: tf.cast(tf.io.extract_jpeg_shape(contents)[:2], tf.int64),
                   lambda: tf.zeros([2], tf.int64),
                   name="jpeg_size")
    gif_height, gif_width, gif_pixels, scanned = tf.cond(
        kind == _GIF, lambda: _gif_scan(contents), lambda: (zero, zero, zero, tf.constant(True)),
        name="gif_size")
    png = tf.stack([number(20, 4, True), number(16, 4, True)])
    # A negative BMP height means rows stored top to bottom.
    bmp = tf.stack([tf.abs(number(22, 4, False, signed=True)), number(18, 4, False, signed=True)])
    size = tf.gather(tf.stack([jpeg, png, tf.stack([gif_height, gif_width]), bmp]),
                     tf.maximum(kind, 0))
    return size[0], size[1], gif_pixels, scanned


def _gif_scan(contents):
    """Returns ``(height, width, pixels, scanned)`` of a GIF from its image descriptors.

    TensorFlow's GIF decoder ignores the header's screen size: its output is as
    wide and as high as the widest and the highest frame, and giflib unpacks every
    frame first. So every image descriptor counts, and finding them means walking
    all blocks: after the header and global colour table come extensions (0x21)
    and images (0x2C), each followed by data sub-blocks (a size byte, then that
    many bytes; size 0 ends them), until the trailer (0x3B). ``scanned`` is False
    if the walk took more than _GIF_MAX_STEPS steps (a sub-block or a block each):
    encoders write 255-byte sub-blocks, so that is a GIF of some 16 MB, or one
    built to be slow to walk.
    """
    data = tf.cast(tf.io.decode_raw(contents, tf.uint8), tf.int64)
    length = tf.size(data, out_type=tf.int64)
    # Reads past the end (a truncated file) see zeros and end the walk.
    data = tf.pad(data, [[0, 16]])

    def byte(position):
        return tf.gather(data, tf.minimum(position, length))

    def color_table_bytes(flags):
        return tf.where(flags >= 128,
                        tf.bitwise.left_shift(tf.constant(3, tf.int64), flags % 8 + 1), 0)

    def skip_sub_blocks(position, steps):
        def step(position, size, steps):
            position += size + 1
            return position, byte(position), steps + 1

        position, _, steps = tf.while_loop(
            lambda position, size, steps: (size > 0) & (steps < _GIF_MAX_STEPS), step,
            (position, byte(position), steps))
        return position + 1, steps

    def block(position, _done, steps, height, width, pixels):
        descriptor = tf.slice(data, [tf.minimum(position, length)], [10])
        is_image = descriptor[0] == 0x2C
        is_extension = descriptor[0] == 0x21
        frame_width = descriptor[5] + 256 * descriptor[6]
        frame_height = descriptor[7] + 256 * descriptor[8]
        # An image: 10 bytes, its local colour table, 1 byte of LZW code size.
        start = tf.where(is_image, position + 11 + color_table_bytes(descriptor[9]),
                         position + 2)
        position, steps = tf.cond(is_image | is_extension,
                                  lambda: skip_sub_blocks(start, steps),
                                  lambda: (position, steps))
        return (position, ~(is_image | is_extension), steps + 1,
                tf.where(is_image, tf.maximum(height, frame_height), height),
                tf.where(is_image, tf.maximum(width, frame_width), width),
                pixels + tf.where(is_image, frame_width * frame_height, 0))

    zero = tf.constant(0, tf.int64)
    _, _, steps, height, width, pixels = tf.while_loop(
        lambda position, done, steps, *_: ~done & (position < length) & (steps < _GIF_MAX_STEPS),
        block,
        (13 + color_table_bytes(data[10]), tf.constant(False), zero, zero, zero, zero))
    return height, width, pixels, steps < _GIF_MAX_STEPS


def _check_sizes(image_size, max_pixels):
    """Raises ValueError unless both are positive Python ints."""
    for name, value in (("image_size", image_size), ("max_pixels", max_pixels)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
