"""Image in, text out: decode, encode, search and detokenize inside one graph.

`Captioner` is the captioning task's `seqapp.generator.Generator`: evaluation,
`seqapp explain`, the export's signatures and the demo all call it, so what is
measured is what is served.
"""

import tensorflow as tf

from seqapp.data import images
from seqapp.generator import Generator


class Captioner(Generator):
    """Wraps a captioning model and its caption tokenizer for in-graph captioning.

    Args:
        model: a captioner from `seqapp.models.captioner` (an image encoder and a decoder with the
            decoding interface of `seqapp.models.transformer`).
        tokenizer: the run's caption `WordPieceTokenizer`.
        max_length: no caption has more tokens.
        decode: the definition's `decode` section (`config.SearchConfig`: beam size, length penalty).
        image_size: images are resized to `image_size` x `image_size`, the model's input.

    Example:

    >>> captioner = Captioner(model, tokenizer, max_length=24, decode=config.SearchConfig(), image_size=64)
    >>> captioner.caption(tf.constant([open("scene.png", "rb").read()]))["caption"]
    <tf.Tensor: shape=(1,), dtype=string, numpy=array([b'a small red circle left of a large blue square'], ...)>
    """

    encoder_keys = ("image",)

    def __init__(self, model, tokenizer, *, max_length, decode, image_size, name=None):
        super().__init__(model, tokenizer, max_length=max_length, decode=decode, name=name)
        self.image_size = image_size

    def encoder_features(self, pixels):
        return {"image": pixels}

    def max_output_lengths(self, features):
        return tf.fill([tf.shape(features["image"])[0]], self.max_length)

    def caption_pixels(self, pixels, *, beam_size=None, cached=True, with_attention=False):
        """Captions decoded images: float32 [batch, image_size, image_size, 3] in [0, 1].

        Returns:
            A dict of dense tensors: `caption` (string [batch]), `score` (float [batch]),
            `token_ids` (int32 [batch, steps]) and, `with_attention`, `tokens` (string [batch,
            steps]) and `attention` (float [batch, steps, feature-map positions], rows summing to 1
            on real steps).
        """
        outputs = self.generate(pixels, beam_size=beam_size, cached=cached, with_attention=with_attention)
        outputs["caption"] = outputs.pop("text")
        del outputs["features"]
        return outputs

    def caption(self, image_bytes, *, beam_size=None, cached=True, with_attention=False):
        """Captions encoded images (JPEG, PNG, GIF or BMP bytes, string [batch]); a malformed one
        fails with InvalidArgumentError naming the problem (see `seqapp.data.images`)."""
        pixels = images.decode_images(image_bytes, self.image_size)
        return self.caption_pixels(pixels, beam_size=beam_size, cached=cached, with_attention=with_attention)
