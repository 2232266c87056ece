"""Tests for seqapp.data.images: encoded images to model-ready tensors, eagerly, in tf.data, in a
tf.function with a dynamic batch and in a SavedModel loaded by a process that imports only TensorFlow."""

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from seqapp import exporters
from seqapp.data import images

SIZE = 8
RED, BLUE, YELLOW = (255, 0, 0), (0, 0, 255), (255, 255, 0)


def encode(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def solid(colour, size=(10, 7), mode="RGB"):
    return Image.new(mode, size, colour)


def gif(*frames, **options):
    """An animated GIF of the given frames (Pillow images), looping, 100 ms each."""
    return encode(frames[0], "GIF", save_all=True, append_images=list(frames[1:]), duration=100,
                  loop=0, **options)


def png_claiming(width, height):
    """A PNG signature and a valid IHDR chunk claiming width x height, 8-bit RGB, and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))


def gif_blocks_start(data):
    """The offset of a GIF's first block: after the header, screen descriptor and colour table."""
    flags = data[10]
    return 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)


def expect_invalid(call, *fragments):
    """Asserts that call() raises InvalidArgumentError whose message holds the fragments."""
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        call()
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value.message


def batch_function():
    """decode_images in a tf.function taking a batch of any size, as a serving signature does."""
    return tf.function(lambda image_bytes: images.decode_images(image_bytes, SIZE),
                       input_signature=[tf.TensorSpec([None], tf.string)])


@pytest.fixture(scope="module")
def decode_batch():
    return batch_function()


@pytest.fixture(scope="module")
def huge_jpeg():
    """A 4,000 x 4,000 JPEG: red top half, blue bottom half."""
    pixels = np.zeros((4000, 4000, 3), np.uint8)
    pixels[:2000, :, 0] = 255
    pixels[2000:, :, 2] = 255
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


# What each image decodes to.


GOOD = {
    "jpeg": (encode(solid(RED), "JPEG", quality=95), (1, 0, 0)),
    "png": (encode(solid(RED), "PNG"), (1, 0, 0)),
    "grayscale-png": (encode(solid(128, mode="L"), "PNG"), (128 / 255,) * 3),
    "grayscale-jpeg": (encode(solid(200, mode="L"), "JPEG", quality=95), (200 / 255,) * 3),
    "rgba-png": (encode(solid((0, 255, 0, 10), mode="RGBA"), "PNG"), (0, 1, 0)),  # alpha dropped
    "palette-png": (encode(solid(RED).convert("P"), "PNG"), (1, 0, 0)),
    "16-bit-png-max": (encode(solid(65535, mode="I;16"), "PNG"), (1, 1, 1)),
    # 1000/65535; an 8-bit decode would give 3/255 = 0.0118.
    "16-bit-png-precision": (encode(solid(1000, mode="I;16"), "PNG"), (1000 / 65535,) * 3),
    "bmp": (encode(solid(RED), "BMP"), (1, 0, 0)),
    "animated-gif": (gif(solid(BLUE, (6, 6)), solid(YELLOW, (6, 6))), (0, 0, 1)),  # frame 1 only
    "1x1-png": (encode(solid(BLUE, (1, 1)), "PNG"), (0, 0, 1)),
}


@pytest.mark.parametrize("name", GOOD)
def test_decode_image_gives_rgb_in_0_1_at_the_requested_size(name):
    data, colour = GOOD[name]
    image = images.decode_image(data, SIZE)
    assert image.dtype == tf.float32 and image.shape == (SIZE, SIZE, 3)
    tolerance = 0.02 if "jpeg" in name else 1e-5  # JPEG is lossy
    np.testing.assert_allclose(image.numpy(), np.broadcast_to(colour, image.shape), atol=tolerance)


def test_fixtures_are_what_their_names_say():
    assert GOOD["16-bit-png-max"][0][24] == 16  # the IHDR's bit depth
    assert Image.open(io.BytesIO(GOOD["palette-png"][0])).mode == "P"
    assert Image.open(io.BytesIO(GOOD["rgba-png"][0])).mode == "RGBA"
    assert Image.open(io.BytesIO(GOOD["animated-gif"][0])).n_frames == 2


def test_non_square_images_are_stretched_not_cropped():
    pixels = np.zeros((10, 40, 3), np.uint8)
    pixels[:, :20] = RED
    pixels[:, 20:] = BLUE
    image = images.decode_image(encode(Image.fromarray(pixels), "PNG"), SIZE).numpy()
    np.testing.assert_allclose(image[:, :3], np.broadcast_to((1, 0, 0), (SIZE, 3, 3)), atol=1e-5)
    np.testing.assert_allclose(image[:, -3:], np.broadcast_to((0, 0, 1), (SIZE, 3, 3)), atol=1e-5)


def test_a_4000_x_4000_jpeg_is_decoded_and_shrunk(huge_jpeg):
    image = images.decode_image(huge_jpeg, 16).numpy()
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image[:7], np.broadcast_to((1, 0, 0), (7, 16, 3)), atol=0.02)
    np.testing.assert_allclose(image[9:], np.broadcast_to((0, 0, 1), (7, 16, 3)), atol=0.02)
    # The default limit is 4096 x 4096; a lower one refuses it before decoding.
    expect_invalid(lambda: images.decode_image(huge_jpeg, 16, max_pixels=3999 * 4000),
                   "image is 4000 x 4000 pixels, outside the limit of max_pixels=15996000")


# Bad input.


def truncated_jpeg():
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "JPEG")
    return data[:len(data) // 2]


BAD = {
    "empty": (b"", "image_bytes is empty"),
    "random-bytes": (np.random.default_rng(0).bytes(300),
                     "image_bytes is not a JPEG, PNG, GIF or BMP image"),
    "text": (b"GIF is what this text starts with, but GIF8 it is not",
             "image_bytes is not a JPEG, PNG, GIF or BMP image"),
    "webp": (encode(solid(RED), "WEBP"), "image_bytes is not a JPEG, PNG, GIF or BMP image"),
    "png-signature-only": (b"\x89PNG\r\n\x1a\n", "image_bytes is too short for a PNG header"),
    "gif-signature-only": (b"GIF89a\x01\x00", "image_bytes is too short for a GIF header"),
    "huge-png-header": (png_claiming(100_000, 100_000),
                        "image is 100000 x 100000 pixels, outside the limit of max_pixels=16777216"),
    "largest-png-header": (png_claiming(2**32 - 1, 2**32 - 1),
                           "image is 4294967295 x 4294967295 pixels"),  # no overflow
    "zero-width-png": (png_claiming(0, 10), "image is 0 x 10 pixels"),
    # The header is intact, so the checks pass; the decoder refuses the rest.
    "truncated-jpeg": (truncated_jpeg(), "jpeg::Uncompress failed. Invalid JPEG data"),
    "jpeg-signature-only": (b"\xff\xd8\xff\xe0", "Invalid JPEG data, size 4"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_an_invalid_argument_naming_the_problem(name):
    data, message = BAD[name]
    assert message in expect_invalid(lambda: images.decode_image(data, SIZE), message)


def test_a_header_claiming_a_huge_image_is_refused_before_decoding():
    # The IHDR-only PNG would fail to decode with "Invalid PNG data"; the limit refuses it first.
    expect_invalid(lambda: images.decode_image(png_claiming(5000, 4000), SIZE),
                   "image is 5000 x 4000 pixels, outside the limit")
    expect_invalid(lambda: images.decode_image(png_claiming(4000, 4000), SIZE), "Invalid PNG")


def test_max_pixels_is_inclusive():
    data = encode(solid(RED, (100, 50)), "PNG")
    assert images.decode_image(data, SIZE, max_pixels=5000).shape == (SIZE, SIZE, 3)
    expect_invalid(lambda: images.decode_image(data, SIZE, max_pixels=4999),
                   "image is 100 x 50 pixels, outside the limit of max_pixels=4999")


def test_gif_limit_counts_frames_not_the_screen_size():
    # TensorFlow sizes a GIF by its largest frame and ignores the header's screen size, so a GIF
    # claiming a 1 x 1 screen still decodes to its 300 x 200 frame.
    data = bytearray(encode(solid(RED, (300, 200)), "GIF"))
    data[6:10] = struct.pack("<HH", 1, 1)
    assert tf.io.decode_image(bytes(data), channels=3, expand_animations=False).shape == (200, 300, 3)
    expect_invalid(lambda: images.decode_image(bytes(data), SIZE, max_pixels=300 * 200 - 1),
                   "image is 300 x 200 pixels, outside the limit of max_pixels=59999")
    image = images.decode_image(bytes(data), SIZE, max_pixels=300 * 200)
    np.testing.assert_allclose(image.numpy(), np.broadcast_to((1, 0, 0), image.shape), atol=1e-5)


def test_gif_frames_together_are_limited():
    frames = [solid((value, value, value), (40, 30)) for value in (0, 50, 100, 150, 200)]
    data = gif(*frames, comment=b"five frames")
    assert images.decode_image(data, SIZE, max_pixels=1500).shape == (SIZE, SIZE, 3)
    expect_invalid(lambda: images.decode_image(data, SIZE, max_pixels=1200),
                   "GIF frames hold 6000 pixels together, outside the limit of 4 x max_pixels=1200")


def test_a_gif_built_to_be_slow_to_check_is_refused():
    data = encode(solid(RED, (4, 4)), "GIF")
    start = gif_blocks_start(data)
    # A comment extension of 70,000 one-byte sub-blocks before the image.
    slow = data[:start] + b"\x21\xfe" + b"\x01x" * 70_000 + b"\x00" + data[start:]
    expect_invalid(lambda: images.decode_image(slow, SIZE),
                   "image_bytes is a GIF with too many data blocks to check (more than 65536)")
    fine = data[:start] + b"\x21\xfe" + b"\x01x" * 1_000 + b"\x00" + data[start:]
    np.testing.assert_allclose(images.decode_image(fine, SIZE).numpy()[0, 0], (1, 0, 0), atol=1e-5)


def test_truncated_gifs():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    first, second = Image.fromarray(pixels), solid(BLUE, (40, 40))
    one_frame = encode(first, "GIF")
    expect_invalid(lambda: images.decode_image(one_frame[:len(one_frame) // 2], SIZE),
                   "Invalid GIF data")
    # Cut in its second frame, a GIF still gives its first.
    two_frames = gif(first, second)
    cut = two_frames[:len(two_frames) - 20]
    assert two_frames.rfind(b"\x21\xf9\x04") < len(cut)  # the second frame's control block is kept
    np.testing.assert_array_equal(images.decode_image(cut, SIZE).numpy(),
                                  images.decode_image(one_frame, SIZE).numpy())


def test_arguments_are_checked():
    data = GOOD["png"][0]
    for size in (0, -1, 2.5, True, None):
        with pytest.raises(ValueError, match="image_size must be a positive int"):
            images.decode_image(data, size)
    with pytest.raises(ValueError, match="max_pixels must be a positive int"):
        images.decode_images([data], SIZE, max_pixels=0)
    with pytest.raises(ValueError, match="scalar"):
        images.decode_image([data], SIZE)
    with pytest.raises(ValueError, match=r"\[batch\] string tensor"):
        images.decode_images(data, SIZE)


# Batches.


def test_decode_images_in_a_tf_function_with_a_dynamic_batch():
    decode = batch_function()
    names = ["jpeg", "rgba-png", "16-bit-png-max", "animated-gif", "bmp"]
    batch = decode(tf.constant([GOOD[name][0] for name in names]))
    assert batch.shape == (5, SIZE, SIZE, 3)
    for image, name in zip(batch.numpy(), names):
        np.testing.assert_allclose(image, np.broadcast_to(GOOD[name][1], image.shape), atol=0.02)
    assert decode(tf.constant([GOOD["png"][0]])).shape == (1, SIZE, SIZE, 3)
    assert decode(tf.constant([], tf.string)).shape == (0, SIZE, SIZE, 3)
    assert decode.experimental_get_tracing_count() == 1
    concrete = decode.get_concrete_function()
    assert concrete.structured_outputs.shape.as_list() == [None, SIZE, SIZE, 3]


@pytest.mark.parametrize("bad, message", [
    ("empty", "image_bytes is empty (batch index 1)"),
    ("random-bytes", "image_bytes is not a JPEG, PNG, GIF or BMP image (batch index 1)"),
    ("huge-png-header", "image is 100000 x 100000 pixels, outside the limit of "
                        "max_pixels=16777216 (batch index 1)"),
    ("truncated-jpeg", "jpeg::Uncompress failed"),  # the decoder's own error: no index
])
def test_a_bad_image_in_a_batch_is_an_error_naming_it(decode_batch, bad, message):
    batch = [GOOD["png"][0], BAD[bad][0], GOOD["jpeg"][0]]
    expect_invalid(lambda: decode_batch(tf.constant(batch)), message)
    expect_invalid(lambda: images.decode_images(batch, SIZE), message)


def test_decode_images_eagerly_matches_the_graph(decode_batch):
    batch = [GOOD[name][0] for name in ("jpeg", "grayscale-png", "palette-png")]
    np.testing.assert_allclose(images.decode_images(batch, SIZE).numpy(),
                               decode_batch(tf.constant(batch)).numpy(), atol=1e-6)
    assert images.decode_images(tf.constant([], tf.string), SIZE).shape == (0, SIZE, SIZE, 3)


# tf.data.


def test_load_image_in_a_tf_data_pipeline(tmp_path):
    paths = []
    for name in ("jpeg", "16-bit-png-max", "animated-gif"):
        path = tmp_path / f"{name}.img"
        path.write_bytes(GOOD[name][0])
        paths.append(str(path))
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(lambda path: images.load_image(path, SIZE))
    assert dataset.element_spec == tf.TensorSpec([SIZE, SIZE, 3], tf.float32)
    for image, name in zip(dataset, ("jpeg", "16-bit-png-max", "animated-gif")):
        np.testing.assert_allclose(image.numpy(), np.broadcast_to(GOOD[name][1], image.shape),
                                   atol=0.02)


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"not an image at all")
    dataset = tf.data.Dataset.from_tensor_slices([str(bad)]).map(
        lambda path: images.load_image(path, SIZE))
    expect_invalid(lambda: list(dataset),
                   f"image_bytes is not a JPEG, PNG, GIF or BMP image (file {bad})")
    expect_invalid(lambda: images.load_image(str(bad), SIZE), f"(file {bad})")
    with pytest.raises(tf.errors.NotFoundError):
        images.load_image(str(tmp_path / "missing.png"), SIZE)


# SavedModel.


class Decoder(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        return {"images": images.decode_images(image_bytes, SIZE)}


@pytest.fixture(scope="module")
def saved_decoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("decoder") / "1"
    module = Decoder()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_saved_graph_uses_only_core_ops(saved_decoder):
    ops = set(exporters.check_ops(saved_decoder))  # raises on ops TF Serving cannot run
    assert {"DecodeImage", "ExtractJpegShape", "Substr", "DecodeRaw", "Assert",
            "ScaleAndTranslate"} <= ops, sorted(ops)
    assert not {op for op in ops if "PyFunc" in op or "Ragged" in op or op.startswith("Xla")}
    assert not set(exporters.TF_SERVING_TEXT_OPS) & ops  # no tf-text either


def test_saved_model_reloaded_in_process(saved_decoder):
    serve = tf.saved_model.load(str(saved_decoder)).signatures["serving_default"]
    out = serve(image_bytes=tf.constant([GOOD["png"][0], GOOD["animated-gif"][0]]))["images"]
    np.testing.assert_allclose(out[0].numpy()[0, 0], (1, 0, 0), atol=1e-5)
    np.testing.assert_allclose(out[1].numpy()[0, 0], (0, 0, 1), atol=1e-5)
    expect_invalid(lambda: serve(image_bytes=tf.constant([GOOD["png"][0], b""])),
                   "image_bytes is empty (batch index 1)")


FRESH_PROCESS = r"""
import json, sys
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
good, bad = (tf.constant([bytes.fromhex(x) for x in json.loads(arg)]) for arg in sys.argv[2:4])
images = serve(image_bytes=good)["images"]
try:
    serve(image_bytes=bad)
    error = None
except tf.errors.InvalidArgumentError as e:
    error = e.message
print(json.dumps({"modules": sorted(m for m in sys.modules if m.split(".")[0] == "seqapp"),
                  "shape": images.shape.as_list(), "corner": images[:, 0, 0].numpy().tolist(),
                  "error": error}))
"""


def test_saved_model_in_a_fresh_process_that_imports_only_tensorflow(saved_decoder, tmp_path):
    good = [GOOD[name][0].hex() for name in ("jpeg", "16-bit-png-max", "animated-gif")]
    bad = [GOOD["png"][0].hex(), BAD["huge-png-header"][0].hex()]
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(saved_decoder), json.dumps(good), json.dumps(bad)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["modules"] == []
    assert served["shape"] == [3, SIZE, SIZE, 3]
    np.testing.assert_allclose(served["corner"], [(1, 0, 0), (1, 1, 1), (0, 0, 1)], atol=0.02)
    assert ("image is 100000 x 100000 pixels, outside the limit of max_pixels=16777216 "
            "(batch index 1)") in served["error"]
