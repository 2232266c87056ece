"""`ConvImageEncoder`: an image as a sequence of position-embedded feature-map vectors."""

import math

import keras
import numpy as np
from keras import ops

# name -> (keras.applications constructor, [0, 1] image -> the input the application expects)
BACKBONES = {
    "mobilenet_v2": (keras.applications.MobileNetV2, lambda images: images * 2.0 - 1.0),
}
NORMS = ("batch", "layer")
# RGB -> YIQ (NTSC): Y is luminance, (I, Q) the chroma plane that a change of hue turns.
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def hue_free(images):
    """Each pixel's luminance and chroma magnitude: what is left of it when hue is taken away.

    In YIQ, luminance Y and the length of the chroma vector (I, Q) are the
    same for every turn of the hue (a rotation of the (I, Q) plane), so a
    network that reads only these cannot tell a red shape from a blue one of
    the same brightness and saturation.

    Args:
        images: float `(batch, height, width, 3)` RGB in [0, 1].

    Returns:
        `(batch, height, width, 2)`: Y in [0, 1] and chroma in [0, ~0.6].

    Example:

    >>> hue_free(np.array([[[[0.5, 0.5, 0.5]]]], "float32"))  # grey: Y 0.5, no chroma
    """
    yiq = ops.einsum("bhwc,dc->bhwd", images, ops.convert_to_tensor(_RGB_TO_YIQ, images.dtype))
    # The small constant keeps sqrt's gradient finite on grey pixels.
    chroma = ops.sqrt(ops.sum(ops.square(yiq[..., 1:]), axis=-1, keepdims=True) + 1e-12)
    return ops.concatenate([yiq[..., :1], chroma], axis=-1)


@keras.saving.register_keras_serializable(package="seqapp")
class ConvImageEncoder(keras.layers.Layer):
    """A CNN feature map, projected, position-embedded and flattened into a memory.

    The CNN is either trained from scratch or a `keras.applications` backbone:

    - from scratch: `blocks` blocks of two [3x3 convolution -> normalization ->
      ReLU] followed by a 2x2 max-pool, the first block with `filters` filters,
      each next one with twice as many (32 -> 64 -> 128). A 64x64 image and 3
      blocks give an 8x8 map.
    - `backbone="mobilenet_v2"`: the application without its top
      (`weights=None`; load pretrained weights with `load_backbone_weights`),
      optionally cut at the layer `backbone_layer` for a finer map; the image
      is rescaled from [0, 1] to the application's input range.

    A 1x1 projection (a `Dense` over channels) brings the map to `dim`
    channels, then a learned row embedding and a learned column embedding are
    added at each position, so attention can tell positions apart (left of,
    above, ...), which neither the projection nor the pooling can. The map is
    flattened row by row into `H' * W'` memory vectors; `feature_map_shape` is
    `(H', W')` once built, for drawing attention over the image.

    `colour_channels > 0` (from scratch only) splits colour from form, so that
    a colour and a shape never seen together still read as each: the CNN reads
    the image without its hue (`hue_free`: luminance and chroma magnitude), so
    it learns shapes, sizes and places but not which hue they have, and a
    pointwise stream (a `Dense` of `colour_channels` ReLU units over each
    pixel's RGB, max-pooled to the map's cells) reads colour and no shape. The
    projection reads both.

    Only core TensorFlow ops (convolutions, batch norm, max-pool, depthwise
    convolutions for MobileNetV2): an exported model runs on TF Serving's CPU
    build. The image size must be fixed (it sizes the position embeddings).

    Args:
        dim: width of the output vectors.
        filters: filters of the first block (from scratch).
        blocks: number of blocks, each halving the map (from scratch).
        norm: "batch" (BatchNormalization, momentum 0.9) or "layer"
            (LayerNormalization over channels, independent of the batch, but
            much slower to train on shapes captions) after each convolution.
        backbone: None (from scratch) or a name of `BACKBONES`.
        backbone_alpha: the width multiplier of MobileNetV2.
        backbone_layer: the name of the backbone layer whose output is used
            (None: the last one).
        colour_channels: width of the pointwise colour stream (0: none, the
            CNN reads colour itself).
        **kwargs: base layer keyword arguments.

    Call arguments:
        images: float `(batch, size, size, 3)` in [0, 1].
        training: whether batch norm uses batch statistics.

    Returns:
        `(batch, H' * W', dim)`.

    Example:

    >>> encoder = ConvImageEncoder(dim=16, filters=8, blocks=3)
    >>> encoder(np.random.rand(2, 64, 64, 3).astype("float32")).shape
    (2, 64, 16)
    >>> encoder.feature_map_shape
    (8, 8)
    """

    def __init__(self, dim, filters=32, blocks=3, norm="batch", backbone=None, backbone_alpha=1.0,
                 backbone_layer=None, colour_channels=0, **kwargs):
        super().__init__(**kwargs)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if backbone is not None and backbone not in BACKBONES:
            raise ValueError(f"backbone must be None or one of {sorted(BACKBONES)}, got {backbone!r}")
        if colour_channels and backbone is not None:
            raise ValueError("colour_channels splits colour from the CNN trained from scratch; a backbone has "
                             "learned its own colour features")
        self.dim = dim
        self.filters = filters
        self.blocks = blocks
        self.norm = norm
        self.backbone = backbone
        self.backbone_alpha = backbone_alpha
        self.backbone_layer = backbone_layer
        self.colour_channels = colour_channels
        self.feature_map_shape = None

    def _make_backbone(self, image_shape):
        application, _ = BACKBONES[self.backbone]
        return application(input_shape=tuple(image_shape), alpha=self.backbone_alpha, include_top=False,
                           weights=None)

    def _make_norm(self, name):
        if self.norm == "batch":
            # Moving statistics that keep up with a CNN trained from scratch at a high learning rate: with
            # Keras' 0.99 they lagged so far behind that greedy exact match on shapes captions swung
            # between 0.08 and 0.9 from one epoch to the next (with batch statistics it did not).
            return keras.layers.BatchNormalization(momentum=0.9, name=name)
        return keras.layers.LayerNormalization(epsilon=1e-6, name=name)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(f"ConvImageEncoder needs a fixed image size, got the input shape {input_shape}")
        if self.backbone is None:
            self.convolutions, self.norms = [], []
            channels = 2 if self.colour_channels else input_shape[-1]  # hue_free's
            for block in range(self.blocks):
                for i in range(2):
                    conv = keras.layers.Conv2D(self.filters * 2 ** block, 3, padding="same",
                                               name=f"block{block}_conv{i}")
                    conv.build((None, height, width, channels))
                    channels = conv.filters
                    norm = self._make_norm(f"block{block}_norm{i}")
                    norm.build((None, height, width, channels))
                    self.convolutions.append(conv)
                    self.norms.append(norm)
                height, width = math.ceil(height / 2), math.ceil(width / 2)
            self.pool = keras.layers.MaxPooling2D(2, padding="same")
            if self.colour_channels:
                self.colour = keras.layers.Dense(self.colour_channels, activation="relu", name="colour")
                self.colour.build(input_shape)
                self.colour_pool = keras.layers.MaxPooling2D(2 ** self.blocks, padding="same")
                channels += self.colour_channels
            feature_shape = (None, height, width, channels)
        else:
            backbone = self._make_backbone(input_shape[1:])
            if self.backbone_layer is not None:
                backbone = keras.Model(backbone.input, backbone.get_layer(self.backbone_layer).output,
                                       name=f"{backbone.name}_to_{self.backbone_layer}")
            self.backbone_model = backbone
            feature_shape = backbone.output.shape
        self.feature_map_shape = (int(feature_shape[1]), int(feature_shape[2]))
        self.projection = keras.layers.Dense(self.dim, name="projection")
        self.projection.build(feature_shape)
        # One initializer each: a Keras initializer draws the same values at every call, and equal row and
        # column tables would make position (i, j) indistinguishable from (j, i).
        self.row_embedding = self.add_weight(shape=(self.feature_map_shape[0], self.dim), name="row_embedding",
                                             initializer=keras.initializers.RandomNormal(stddev=0.1))
        self.column_embedding = self.add_weight(shape=(self.feature_map_shape[1], self.dim), name="column_embedding",
                                                initializer=keras.initializers.RandomNormal(stddev=0.1))

    def load_backbone_weights(self, path):
        """Loads the weights of the whole `include_top=False` application from `path`.

        `path` is what the application's `load_weights` reads: Keras' own
        ImageNet files (legacy `.h5`) or a `.weights.h5` file; with
        `backbone_layer`, the layers up to that one take their weights from it.
        """
        if self.backbone is None:
            raise ValueError("this encoder has no backbone to load weights into")
        whole = self._make_backbone(self.backbone_model.input.shape[1:])
        whole.load_weights(path)
        for layer in self.backbone_model.layers:
            if layer.weights:
                layer.set_weights(whole.get_layer(layer.name).get_weights())

    def call(self, images, training=None):
        images = ops.cast(images, self.compute_dtype)
        if self.backbone is None:
            centred = images * 2.0 - 1.0
            x = hue_free(images) * 2.0 - 1.0 if self.colour_channels else centred
            for i, (conv, norm) in enumerate(zip(self.convolutions, self.norms)):
                x = ops.relu(norm(conv(x), training=training))
                if i % 2:
                    x = self.pool(x)
            if self.colour_channels:
                x = ops.concatenate([x, self.colour_pool(self.colour(centred))], axis=-1)
        else:
            x = self.backbone_model(BACKBONES[self.backbone][1](images), training=training)
        x = self.projection(x)
        x = x + self.row_embedding[:, None, :] + self.column_embedding[None, :, :]
        height, width = self.feature_map_shape
        return ops.reshape(x, (-1, height * width, self.dim))

    def compute_output_shape(self, input_shape):
        if self.feature_map_shape is not None:
            positions = self.feature_map_shape[0] * self.feature_map_shape[1]
        elif self.backbone is None:
            positions = math.ceil(input_shape[1] / 2 ** self.blocks) * math.ceil(input_shape[2] / 2 ** self.blocks)
        else:
            positions = None
        return (input_shape[0], positions, self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "filters": self.filters, "blocks": self.blocks,
                "norm": self.norm, "backbone": self.backbone, "backbone_alpha": self.backbone_alpha,
                "backbone_layer": self.backbone_layer, "colour_channels": self.colour_channels}
