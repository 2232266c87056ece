"""shapes_captions: generated 64×64 images of coloured shapes, with every caption the grammar allows.

Nothing is downloaded: each split is sampled from its own seed, derived from the
config's seed and a fixed key per split, so a split never changes when another one
is resized or added. Splits are sampled independently, so a validation or test image
may have the same captions as some training image: in the default config about 60 %
do (every one-object scene, as there are only 50 of them up to position; about three
quarters of the two-object ones; under 2 % of the three-object ones). Keeping the
splits identically distributed matters more here; a memorization check should read
the three-object scenes or test_compositional, none of whose captions occur in train.
"""

import dataclasses

import tensorflow_datasets as tfds

from seqapp.datasets.shapes_captions import grammar, scenes

_IMAGE_SIZE = 64
_HOMEPAGE = "https://arxiv.org/abs/1704.04517"
_CITATION = """\
@article{kuhnle2017shapeworld,
  title   = {{ShapeWorld} - A new test methodology for multimodal language understanding},
  author  = {Kuhnle, Alexander and Copestake, Ann},
  journal = {arXiv preprint arXiv:1704.04517},
  year    = {2017}
}"""

# split: (key mixed into the config's seed, scenes.sample_scene's heldout policy).
_SPLITS = {
    "train": (0, "exclude"),
    "validation": (1, "exclude"),
    "test": (2, "exclude"),
    "test_compositional": (3, "require"),
}


@dataclasses.dataclass(eq=False)
class ShapesCaptionsConfig(tfds.core.BuilderConfig):
    """A config: how many images each split has, and the seed the splits' seeds derive from.

    Attributes:
        split_sizes: images per split, for every split of ``_SPLITS``.
        seed: the config's seed.
    """

    split_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    seed: int = 0


class Builder(tfds.core.GeneratorBasedBuilder):
    """shapes_captions: one example per generated scene (image, all its captions, the scene as JSON)."""

    GENERATED = True  # `seqapp data list`: nothing to download or read
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        ShapesCaptionsConfig(
            name="default",
            description="train 20,000, validation 1,000, test 1,000, test_compositional 1,000 images.",
            split_sizes={"train": 20_000, "validation": 1_000, "test": 1_000, "test_compositional": 1_000},
            seed=20_170_414,
        ),
        ShapesCaptionsConfig(
            name="tiny",
            description="train 600, validation 100, test 100, test_compositional 100 images: for tests and demos.",
            split_sizes={"train": 600, "validation": 100, "test": 100, "test_compositional": 100},
            seed=7,
        ),
    ]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Generated captioning benchmark: 1-3 shapes (5 shapes, 6 colours, 2 sizes) on a 3x3 grid, "
                "captioned by a small grammar (every caption it allows: 2, 4 or 24 per image). The colour-shape "
                "pairs of scenes.HELD_OUT_PAIRS never occur in train, validation or test, and occur in "
                "every test_compositional image (ShapeWorld's protocol)."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(_IMAGE_SIZE, _IMAGE_SIZE, 3), encoding_format="png"),
                    "captions": tfds.features.Sequence(tfds.features.Text()),
                    "scene": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage=_HOMEPAGE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated: nothing to download
        config = self.builder_config
        return {
            split: self._generate_examples((config.seed, key), config.split_sizes[split], heldout)
            for split, (key, heldout) in _SPLITS.items()
        }

    def _generate_examples(self, seed, count, heldout):
        for index, scene in enumerate(scenes.sample_scenes(seed, count, heldout=heldout)):
            yield index, {
                "image": scenes.render(scene, _IMAGE_SIZE),
                "captions": grammar.realizations(scene),
                "scene": scenes.scene_to_json(scene),
            }
