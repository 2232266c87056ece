"""seqapp's datasets as TFDS builders, registered with TFDS on import.

Each builder reads ``$SEQAPP_DATA_DIR/<name>/`` when that folder exists (files
checked against their SOURCE.md sha256) and downloads the canonical release
otherwise. Prepared data goes to ``settings.tfds_dir()``; after importing this
package ``tfds.load(name, data_dir=settings.tfds_dir())`` works too.
"""

from typing import TYPE_CHECKING

import tensorflow_datasets as tfds

from seqapp import settings
from seqapp.datasets.anki_spa_eng import anki_spa_eng_dataset_builder
from seqapp.datasets.imdb import imdb_dataset_builder
from seqapp.datasets.mr_polarity import mr_polarity_dataset_builder
from seqapp.datasets.multi30k import multi30k_dataset_builder
from seqapp.datasets.ptb import ptb_dataset_builder
from seqapp.datasets.shapes_captions import shapes_captions_dataset_builder
from seqapp.datasets.sst2 import sst2_dataset_builder
from seqapp.datasets.tiny_shakespeare import tiny_shakespeare_dataset_builder
from seqapp.errors import SeqappError

if TYPE_CHECKING:  # TensorFlow itself loads lazily, on first use.
    import tensorflow as tf

DATASETS: dict[str, type] = {
    module.Builder.name: module.Builder
    for module in (
        mr_polarity_dataset_builder,
        sst2_dataset_builder,
        imdb_dataset_builder,
        multi30k_dataset_builder,
        anki_spa_eng_dataset_builder,
        ptb_dataset_builder,
        tiny_shakespeare_dataset_builder,
        shapes_captions_dataset_builder,
    )
}

TASKS: dict[str, str] = {
    "mr_polarity": "classification",
    "sst2": "classification",
    "imdb": "classification",
    "multi30k": "translation",
    "anki_spa_eng": "translation",
    "ptb": "language_modeling",
    "tiny_shakespeare": "language_modeling",
    "shapes_captions": "captioning",
}


def builder(name: str) -> tfds.core.DatasetBuilder:
    """Returns the builder of ``name``, with data_dir=settings.tfds_dir().

    ``"<name>/<config>"`` picks a config (``"sst2/sentences"``).
    """
    dataset, _, config = name.partition("/")
    if dataset not in DATASETS:
        raise SeqappError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[dataset](config=config or None, data_dir=str(settings.tfds_dir()))


def prepare(name: str) -> tfds.core.DatasetBuilder:
    """Prepares ``name`` (local files or download) unless done already; returns its builder."""
    ds_builder = builder(name)
    try:
        ds_builder.download_and_prepare()
    except Exception:
        # TFDS prepares into a temporary folder and renames it into place; when another process
        # renamed its copy first, ours cannot take the name. Theirs is complete: read it.
        ds_builder = builder(name)
        if not ds_builder.is_prepared():
            raise
    return ds_builder


def load(name: str, split: str) -> "tf.data.Dataset":
    """Returns ``split`` of ``name`` as a dataset of dicts, in a deterministic order."""
    return prepare(name).as_dataset(split=split, shuffle_files=False)
