"""The shapes_captions benchmark: scene sampling and rendering, the caption grammar, the TFDS builder."""

import collections
import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from seqapp import datasets
from seqapp.datasets.shapes_captions import grammar, scenes


def _scenes(seed, count, heldout="exclude"):
    return list(scenes.sample_scenes(seed, count, heldout=heldout))


@pytest.fixture(scope="module")
def many_scenes():
    """600 ordinary and 200 compositional scenes."""
    return _scenes(11, 600) + _scenes(12, 200, heldout="require")


def _object(shape="circle", colour="red", size="small", row=1, col=1):
    return scenes.SceneObject(shape, colour, size, row, col, (col + 0.5) / 3, (row + 0.5) / 3)


# --- generation ----------------------------------------------------------------------------------


def test_same_seed_same_images_and_captions_other_seed_differs():
    first, again, other = _scenes(3, 40), _scenes(3, 40), _scenes(4, 40)
    assert first == again
    for a, b in zip(first, again):
        np.testing.assert_array_equal(scenes.render(a), scenes.render(b))
        assert grammar.realizations(a) == grammar.realizations(b)
    assert [grammar.realizations(s) for s in first] != [grammar.realizations(s) for s in other]
    assert any(not np.array_equal(scenes.render(a), scenes.render(b)) for a, b in zip(first, other))


def test_sampled_scenes_have_one_to_three_unambiguously_related_objects(many_scenes):
    counts = collections.Counter(len(scene.objects) for scene in many_scenes)
    assert set(counts) == {1, 2, 3}
    for scene in many_scenes:
        for a, b in itertools.permutations(scene.objects, 2):
            stated = scenes.relation(a, b)
            assert stated in scenes.RELATIONS
            inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
            assert scenes.relation(b, a) == inverse[stated]
            # What the grid says is what the picture shows: the pixel centres differ most
            # along the same axis, in the same direction.
            dx, dy = a.x - b.x, a.y - b.y
            horizontal = stated in ("left of", "right of")
            assert (abs(dx) > abs(dy)) == horizontal
            along = dx if horizontal else dy
            assert along < 0 if stated in ("left of", "above") else along > 0


def test_objects_do_not_overlap_and_stay_in_the_image(many_scenes):
    for scene in many_scenes[:300]:
        masks = []
        for obj in scene.objects:
            alone = scenes.render(scenes.Scene((obj,)))
            masks.append((alone != scenes.BACKGROUND).any(axis=-1))
            assert masks[-1].sum() > 20
        for a, b in itertools.combinations(masks, 2):
            assert not (a & b).any()
        # Drawn together, every object keeps all its pixels.
        together = (scenes.render(scene) != scenes.BACKGROUND).any(axis=-1)
        assert together.sum() == sum(mask.sum() for mask in masks)


def test_heldout_policy(many_scenes):
    ordinary, compositional = many_scenes[:600], many_scenes[600:]
    assert all(grammar.heldout_pairs(scene) == [] for scene in ordinary)
    assert all(grammar.heldout_pairs(scene) for scene in compositional)
    # Each held-out pair is the forced one now and then.
    seen = {pair for scene in compositional for pair in grammar.heldout_pairs(scene)}
    assert seen == set(scenes.HELD_OUT_PAIRS)
    with pytest.raises(ValueError, match="heldout"):
        scenes.sample_scene(np.random.default_rng(0), heldout="include")


def test_scene_rejects_what_a_caption_could_not_state():
    with pytest.raises(ValueError, match="unambiguous"):
        scenes.Scene((_object(row=0, col=0), _object(colour="blue", row=1, col=1)))
    with pytest.raises(ValueError, match="unambiguous"):
        scenes.Scene((_object(row=0, col=0), _object(colour="blue", row=0, col=0)))
    with pytest.raises(ValueError, match="share size, colour and shape"):
        scenes.Scene((_object(row=0, col=0), _object(row=0, col=2)))
    with pytest.raises(ValueError, match="1 to 3"):
        row = tuple(_object(colour=colour, row=0, col=col) for col, colour in enumerate(("red", "green", "blue")))
        scenes.Scene(row + (_object(colour="white", row=2, col=1),))
    with pytest.raises(ValueError, match="unknown"):
        _object(shape="hexagon")


def test_scene_json_round_trip(many_scenes):
    for scene in many_scenes[:100]:
        assert scenes.scene_from_json(scenes.scene_to_json(scene)) == scene
    with pytest.raises(ValueError):
        scenes.scene_from_json('[{"shape":"circle","colour":"red","size":"huge","row":0,"col":0,"x":0.1,"y":0.1}]')


# --- rendering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_render_draws_the_colour_at_the_centre_and_large_is_bigger(shape):
    pixels = {}
    for size in scenes.SIZES:
        obj = scenes.SceneObject(shape, "purple", size, 1, 1, 0.5, 0.5)
        image = scenes.render(scenes.Scene((obj,)))
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image[31:34, 31:34], np.broadcast_to(scenes.COLOURS["purple"], (3, 3, 3)))
        coloured = (image == scenes.COLOURS["purple"]).all(axis=-1)
        assert coloured.sum() == (image != scenes.BACKGROUND).any(axis=-1).sum()  # flat colours only
        pixels[size] = coloured.sum()
    assert pixels["large"] >= 3 * pixels["small"]


def test_shapes_are_drawn_differently():
    masks = {}
    for shape in scenes.SHAPES:
        image = scenes.render(scenes.Scene((scenes.SceneObject(shape, "white", "small", 1, 1, 0.5, 0.5),)))
        masks[shape] = (image != scenes.BACKGROUND).any(axis=-1)
    for a, b in itertools.combinations(scenes.SHAPES, 2):
        assert (masks[a] != masks[b]).sum() >= 8, (a, b)


# --- grammar -------------------------------------------------------------------------------------


def test_every_realization_parses_and_describes_its_scene(many_scenes):
    for scene in many_scenes:
        captions = grammar.realizations(scene)
        assert len(captions) == {1: 2, 2: 4, 3: 24}[len(scene.objects)]
        assert captions == sorted(set(captions))
        names = sorted(obj.description for obj in scene.objects)
        for caption in captions:
            assert grammar.normalize(caption) == caption
            assert len(caption.split()) <= 23
            parsed = grammar.parse(caption)
            assert parsed is not None, caption
            assert sorted(parsed.objects) == names
            assert len(parsed.relations) == len(scene.objects) - 1
            assert grammar.describes(caption, scene), caption


def test_parse_states_objects_and_relations():
    caption = (
        "There is a small red circle left of a large blue square, "
        "and a small green cross above the large blue square."
    )
    parsed = grammar.parse(caption)
    red, blue, green = ("small", "red", "circle"), ("large", "blue", "square"), ("small", "green", "cross")
    assert parsed == grammar.Parsed((red, blue, green), ((red, "left of", blue), (green, "above", blue)))
    assert grammar.parse("a large white diamond") == grammar.Parsed((("large", "white", "diamond"),), ())


def test_normalize():
    assert grammar.normalize("  A Small RED circle. ") == "a small red circle"
    assert grammar.normalize("a small red circle,left of\ta large blue square!") == (
        "a small red circle left of a large blue square"
    )


@pytest.mark.parametrize(
    "caption",
    [
        "",
        "there is",
        "small red circle",
        "a small red",
        "a red small circle",
        "a huge red circle",
        "a small red circles",
        "the small red circle",
        "a small red circle left of",
        "a small red circle left a large blue square",
        "a small red circle and a large blue square",
        "a small red circle left of a large blue square and",
        "a small red circle left of a large blue square and a small green cross above a large blue square",
        "a small red circle left of a large blue square and a small green cross above the large white cross",
        "a small red circle left of a large blue square and a small green cross above the small green cross",
        "a small red circle left of a small red circle",
        "a small red circle left of a large blue square and a small red circle above the large blue square",
        "a small red circle right of a large blue square please",
        "there is there is a small red circle",
    ],
)
def test_non_grammatical_captions_do_not_parse(caption):
    assert grammar.parse(caption) is None


def _replace(words, index, vocabulary):
    """The captions with ``words[index]`` replaced by each other word of ``vocabulary``."""
    return [" ".join(words[:index] + [word] + words[index + 1 :]) for word in vocabulary if word != words[index]]


def test_one_changed_word_dropped_or_added_object_fails(many_scenes):
    checked = collections.Counter()
    for scene in many_scenes[:300]:
        for caption in grammar.realizations(scene)[:6]:
            words = caption.split()
            # Only objects introduced with "a": changing an attribute of a "the" mention may
            # turn it into another named object, and the caption into a true one.
            for start in (i for i, word in enumerate(words) if word == "a"):
                for offset, vocabulary in enumerate((scenes.SIZES, scenes.COLOURS, scenes.SHAPES), 1):
                    for changed in _replace(words, start + offset, vocabulary):
                        assert not grammar.describes(changed, scene), changed
                        checked["attribute"] += 1
            relation_at = [i for i, w in enumerate(words) if w in ("left", "right", "above", "below")]
            for index in relation_at:
                width = 2 if words[index] in ("left", "right") else 1
                for relation in scenes.RELATIONS:
                    if relation.split() != words[index : index + width]:
                        changed = " ".join(words[:index] + relation.split() + words[index + width :])
                        assert grammar.parse(changed) is not None
                        assert not grammar.describes(changed, scene), changed
                        checked["relation"] += 1
            if len(scene.objects) > 1:  # drop the last object and its relation
                if len(scene.objects) == 3:
                    dropped = caption.rsplit(" and ", 1)[0]
                else:
                    dropped = " ".join(words[: words.index("a") + 4])
                assert grammar.parse(dropped) is not None
                assert not grammar.describes(dropped, scene), dropped
                checked["dropped"] += 1
    assert checked["attribute"] > 1000 and checked["relation"] > 300 and checked["dropped"] > 100


def test_captions_of_a_scene_with_one_object_more_or_less_do_not_describe_it(many_scenes):
    extended = 0
    for scene in many_scenes[:300]:
        if len(scene.objects) == 3:
            continue
        used = {(obj.row, obj.col) for obj in scene.objects}
        for row, col in itertools.product(range(3), repeat=2):
            try:
                bigger = scenes.Scene(scene.objects + (_object("cross", "white", "large", row, col),))
            except ValueError:  # diagonal, same cell or same name: not a scene
                continue
            assert (row, col) not in used
            for caption in grammar.realizations(bigger):
                assert not grammar.describes(caption, scene), caption
            for caption in grammar.realizations(scene):
                assert not grammar.describes(caption, bigger), caption
            extended += 1
            break
    assert extended > 100


def test_same_objects_elsewhere_is_not_described():
    left = scenes.Scene((_object(row=1, col=0), _object("square", "blue", "large", 1, 2)))
    right = scenes.Scene((_object(row=1, col=2), _object("square", "blue", "large", 1, 0)))
    assert grammar.describes("a small red circle left of a large blue square", left)
    assert not grammar.describes("a small red circle left of a large blue square", right)
    assert grammar.describes("There is a large blue square, left of a small red circle.", right)
    assert not grammar.describes("a small red circle", left)
    assert not grammar.describes("not a caption", left)


def test_heldout_pairs_and_mentions_pair():
    scene = scenes.Scene((_object("square", "red", "large", 0, 0), _object("circle", "blue", "small", 2, 0),
                          _object("circle", "red", "small", 1, 2)))
    assert grammar.heldout_pairs(scene) == [("blue", "circle"), ("red", "square")]
    caption = grammar.realizations(scene)[0]
    assert grammar.mentions_pair(caption, "red", "square")
    assert grammar.mentions_pair(caption, "blue", "circle")
    assert not grammar.mentions_pair(caption, "blue", "square")
    assert not grammar.mentions_pair("a large red", "red", "square")
    assert not grammar.mentions_pair("a small green triangle", "red", "square")


# --- TFDS builder --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(seqapp_cache_dir):
    """``{split: [(image, captions, scene)]}`` of shapes_captions/tiny, prepared with TFDS."""
    builder = datasets.builder("shapes_captions/tiny")
    builder.download_and_prepare()
    splits = {}
    for split in builder.info.splits:
        splits[split] = [
            (
                example["image"],
                [caption.decode() for caption in example["captions"]],
                scenes.scene_from_json(example["scene"].decode()),
            )
            for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
        ]
    return splits


def test_tiny_is_registered_and_sized(tiny):
    assert datasets.TASKS["shapes_captions"] == "captioning"
    assert datasets.builder("shapes_captions/tiny").builder_config.name == "tiny"
    assert datasets.builder("shapes_captions").builder_config.name == "default"
    assert {split: len(rows) for split, rows in tiny.items()} == {
        "train": 600, "validation": 100, "test": 100, "test_compositional": 100
    }


def test_tiny_examples_are_their_scenes(tiny):
    for rows in tiny.values():
        for image, captions, scene in rows:
            np.testing.assert_array_equal(image, scenes.render(scene))
            assert captions == grammar.realizations(scene)
    # Splits are sampled from different seeds.
    assert len({scenes.scene_to_json(rows[0][2]) for rows in tiny.values()}) == 4


def test_tiny_follows_the_compositional_protocol(tiny):
    for split in ("train", "validation", "test"):
        for _, captions, scene in tiny[split]:
            assert grammar.heldout_pairs(scene) == []
            assert not any(grammar.mentions_pair(c, *pair) for c in captions for pair in scenes.HELD_OUT_PAIRS)
    for _, captions, scene in tiny["test_compositional"]:
        pairs = grammar.heldout_pairs(scene)
        assert pairs
        assert all(grammar.mentions_pair(c, *pairs[0]) for c in captions)
    train_objects = [obj for _, _, scene in tiny["train"] for obj in scene.objects]
    assert {obj.colour for obj in train_objects} == set(scenes.COLOURS)
    assert {obj.shape for obj in train_objects} == set(scenes.SHAPES)
    assert {obj.size for obj in train_objects} == set(scenes.SIZES)
