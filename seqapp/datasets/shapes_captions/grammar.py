"""The caption grammar of shapes_captions: every caption of a scene, parsing, and checking.

Captions are lower-case words separated by single spaces, without punctuation::

    caption  ::= "there is" body | body
    body     ::= new                                    (a scene of one object)
               | new relation new                       (two objects)
               | new relation new "and" new relation old   (three objects)
    new      ::= "a" object        (an object not named before in the caption)
    old      ::= "the" object      (one of the two objects the first clause named)
    object   ::= size colour shape
    size     ::= "small" | "large"
    colour   ::= "red" | "green" | "blue" | "yellow" | "purple" | "white"
    shape    ::= "circle" | "square" | "triangle" | "diamond" | "cross"
    relation ::= "left of" | "right of" | "above" | "below"

A relation is stated of the object before it, relative to the object after it.
Every mention names size, colour and shape in full. A caption introduces each
object once, with "a"; the three-object form ties the third object to one of the
first two with "the", so every object is related to another. Each word is in
exactly one category, so parsing reads left to right without backtracking. A scene of one,
two or three objects has 2, 4 or 24 captions, of at most 23 words.
"""

import dataclasses
import itertools

from seqapp.datasets.shapes_captions import scenes

Mention = tuple[str, str, str]
"""An object as a caption names it: ``(size, colour, shape)``."""


@dataclasses.dataclass(frozen=True)
class Parsed:
    """What a caption states.

    Attributes:
        objects: the objects it introduces with "a", in caption order.
        relations: ``(subject, relation, reference)`` triples, one per relation word.
    """

    objects: tuple[Mention, ...]
    relations: tuple[tuple[Mention, str, Mention], ...]


def normalize(caption: str) -> str:
    """Lower-cases ``caption``, turns punctuation into spaces and collapses whitespace."""
    kept = "".join(char if char.isalnum() else " " for char in caption.lower())
    return " ".join(kept.split())


def _name(obj: scenes.SceneObject, article: str) -> str:
    return " ".join((article, *obj.description))


def realizations(scene: scenes.Scene) -> list[str]:
    """Returns every caption the grammar allows for ``scene``, sorted.

    Args:
        scene: a scene (its objects are distinctly named and pairwise related).

    Returns:
        The captions: 2 for one object, 4 for two, 24 for three.
    """
    if len(scene.objects) == 1:
        bodies = [_name(scene.objects[0], "a")]
    else:
        bodies = []
        for order in itertools.permutations(scene.objects):
            first, second = order[:2]
            clause = f"{_name(first, 'a')} {scenes.relation(first, second)} {_name(second, 'a')}"
            if len(order) == 2:
                bodies.append(clause)
                continue
            third = order[2]
            for anchor in (first, second):
                bodies.append(
                    f"{clause} and {_name(third, 'a')} {scenes.relation(third, anchor)} {_name(anchor, 'the')}"
                )
    return sorted(prefix + body for body in bodies for prefix in ("", "there is "))


class _Reader:
    """Reads the words of a normalized caption left to right."""

    def __init__(self, words):
        self.words = words
        self.at = 0

    def done(self):
        return self.at == len(self.words)

    def take(self, *expected):
        """Consumes ``expected`` if the next words are exactly those; returns whether it did."""
        if tuple(self.words[self.at : self.at + len(expected)]) != expected:
            return False
        self.at += len(expected)
        return True

    def mention(self, article):
        """Consumes ``article size colour shape``; returns the mention or None."""
        if not self.take(article) or self.at + 3 > len(self.words):
            return None
        size, colour, shape = self.words[self.at : self.at + 3]
        if size not in scenes.SIZES or colour not in scenes.COLOURS or shape not in scenes.SHAPES:
            return None
        self.at += 3
        return size, colour, shape

    def relation(self):
        """Consumes a relation; returns it or None."""
        for relation in scenes.RELATIONS:
            if self.take(*relation.split()):
                return relation
        return None


def parse(caption: str) -> Parsed | None:
    """Parses ``caption`` (normalized first).

    Args:
        caption: any string.

    Returns:
        What it states, or None when it is not in the grammar (including an object
        introduced twice, or "the" naming an object the first clause did not).
    """
    reader = _Reader(normalize(caption).split())
    reader.take("there", "is")
    objects = [reader.mention("a")]
    relations = []
    if objects[0] is None:
        return None
    if not reader.done():
        relation, second = reader.relation(), reader.mention("a")
        if relation is None or second is None:
            return None
        objects.append(second)
        relations.append((objects[0], relation, second))
    if not reader.done():
        if not reader.take("and"):
            return None
        third, relation, anchor = reader.mention("a"), reader.relation(), reader.mention("the")
        if third is None or relation is None or anchor not in objects:
            return None
        objects.append(third)
        relations.append((third, relation, anchor))
    if not reader.done() or len(set(objects)) < len(objects):
        return None
    return Parsed(tuple(objects), tuple(relations))


def describes(caption: str, scene: scenes.Scene) -> bool:
    """Slot accuracy of one caption: is it a true and complete description of ``scene``?

    Args:
        caption: any string.
        scene: the scene of the image.

    Returns:
        True when the caption parses, names exactly the scene's objects (size,
        colour and shape) and every relation it states holds in the scene.
    """
    parsed = parse(caption)
    if parsed is None:
        return False
    by_mention = {obj.description: obj for obj in scene.objects}
    if sorted(parsed.objects) != sorted(by_mention):
        return False
    return all(
        scenes.relation(by_mention[subject], by_mention[reference]) == relation
        for subject, relation, reference in parsed.relations
    )


def heldout_pairs(scene: scenes.Scene) -> list[tuple[str, str]]:
    """Returns the ``(colour, shape)`` pairs of ``scene`` that ``scenes.HELD_OUT_PAIRS`` lists, sorted."""
    return sorted({(obj.colour, obj.shape) for obj in scene.objects}.intersection(scenes.HELD_OUT_PAIRS))


def mentions_pair(caption: str, colour: str, shape: str) -> bool:
    """Returns whether ``caption`` parses and names an object of ``colour`` and ``shape`` (any size)."""
    parsed = parse(caption)
    return parsed is not None and any(mention[1:] == (colour, shape) for mention in parsed.objects)
