"""Scenes of one to three coloured shapes on a 3×3 grid, their sampling and rendering.

A scene places each object on its own grid cell, with a small jitter, and never
two objects on a diagonal of each other: the relation of any two objects (left
of, right of, above, below) is then the grid axis along which they differ most,
and that axis is never a tie. The jitter is small enough that the pixel centres
always differ most along the same axis.

Colour–shape pairs in ``HELD_OUT_PAIRS`` are kept out of the ordinary splits
(``heldout="exclude"``) and put into every compositional test scene
(``heldout="require"``), as in ShapeWorld (Kuhnle & Copestake, 2017).
"""

import dataclasses
import itertools
import json
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
# Far apart in RGB and from the background, so that no colour reads as another.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 100, 240),
    "yellow": (240, 220, 50),
    "purple": (160, 70, 210),
    "white": (235, 235, 235),
}
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
# One pair per shape; white keeps all its shapes, so each colour and each shape still
# occurs in training with four or five partners.
HELD_OUT_PAIRS = (
    ("blue", "circle"),
    ("red", "square"),
    ("green", "triangle"),
    ("yellow", "diamond"),
    ("purple", "cross"),
)
MAX_OBJECTS = 3
BACKGROUND = (40, 40, 40)

_GRID = 3
_CELL = 1 / _GRID
# Bounding-box side as a fraction of the image side: large is twice small.
_EXTENT = {"small": 0.125, "large": 0.25}
# Gap kept between an object and its cell's border: objects never touch.
_MARGIN = 1 / 64
# Centre offset bound per size: the object stays inside its cell, and at most a sixth
# of a cell, so that two objects on one row are at least twice as far apart across as
# up or down (the same holds for columns).
_JITTER = {size: min(_CELL / 6, _CELL / 2 - extent / 2 - _MARGIN) for size, extent in _EXTENT.items()}

_ALL_PAIRS = tuple(itertools.product(COLOURS, SHAPES))
_ALLOWED_PAIRS = tuple(pair for pair in _ALL_PAIRS if pair not in HELD_OUT_PAIRS)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One shape of a scene.

    Attributes:
        shape: one of ``SHAPES``.
        colour: one of ``COLOURS``.
        size: one of ``SIZES``.
        row: grid row, 0 (top) to 2.
        col: grid column, 0 (left) to 2.
        x: centre's horizontal position as a fraction of the image width.
        y: centre's vertical position as a fraction of the image height (0 is the top).
    """

    shape: str
    colour: str
    size: str
    row: int
    col: int
    x: float
    y: float

    def __post_init__(self):
        if self.shape not in SHAPES or self.colour not in COLOURS or self.size not in SIZES:
            raise ValueError(f"unknown size, colour or shape in {self}")
        if not (0 <= self.row < _GRID and 0 <= self.col < _GRID):
            raise ValueError(f"cell ({self.row}, {self.col}) is off the {_GRID}x{_GRID} grid")

    @property
    def description(self) -> tuple[str, str, str]:
        """``(size, colour, shape)``: how a caption names the object."""
        return self.size, self.colour, self.shape


@dataclasses.dataclass(frozen=True)
class Scene:
    """One to three objects, on distinct cells, no two on a diagonal, no two named alike.

    Attributes:
        objects: the objects, in sampling order (the order has no meaning).
    """

    objects: tuple[SceneObject, ...]

    def __post_init__(self):
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene has 1 to {MAX_OBJECTS} objects, not {len(self.objects)}")
        if len({obj.description for obj in self.objects}) < len(self.objects):
            raise ValueError("two objects share size, colour and shape: a caption could not tell them apart")
        for a, b in itertools.combinations(self.objects, 2):
            if relation(a, b) is None:
                raise ValueError(f"cells ({a.row}, {a.col}) and ({b.row}, {b.col}) have no unambiguous relation")


def relation(subject: SceneObject, reference: SceneObject) -> str | None:
    """Returns where ``subject`` is relative to ``reference``.

    Args:
        subject: the object the relation is stated of.
        reference: the object it is relative to.

    Returns:
        One of ``RELATIONS``, by the grid axis along which the two differ most, or
        None when they share a cell or lie on a diagonal (no dominant axis).
    """
    rows = subject.row - reference.row
    cols = subject.col - reference.col
    if abs(cols) > abs(rows):
        return "left of" if cols < 0 else "right of"
    if abs(rows) > abs(cols):
        return "above" if rows < 0 else "below"
    return None


def _layouts(count):
    """The ordered tuples of ``count`` grid cells, no two sharing a row-column diagonal or a cell."""
    cells = list(itertools.product(range(_GRID), repeat=2))
    return tuple(
        chosen
        for chosen in itertools.permutations(cells, count)
        if all(abs(r1 - r2) != abs(c1 - c2) for (r1, c1), (r2, c2) in itertools.combinations(chosen, 2))
    )


_LAYOUTS = {count: _layouts(count) for count in range(1, MAX_OBJECTS + 1)}


def sample_scene(rng: np.random.Generator, *, heldout: str = "exclude") -> Scene:
    """Samples a scene: 1–3 objects (uniformly), an unambiguous layout, distinct descriptions.

    Args:
        rng: the random generator; the scene depends on nothing else.
        heldout: ``"exclude"``: no object has a pair of ``HELD_OUT_PAIRS``;
            ``"require"``: one object, at a random position, has one (the others any pair).

    Returns:
        The scene.
    """
    if heldout not in ("exclude", "require"):
        raise ValueError(f"heldout must be 'exclude' or 'require', not {heldout!r}")
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    layout = _LAYOUTS[count][rng.integers(len(_LAYOUTS[count]))]
    forced = int(rng.integers(count)) if heldout == "require" else None
    objects = []
    for index, (row, col) in enumerate(layout):
        if index == forced:
            pairs = HELD_OUT_PAIRS
        else:
            pairs = _ALLOWED_PAIRS if heldout == "exclude" else _ALL_PAIRS
        while True:  # redraw the rare description that repeats an earlier one
            colour, shape = pairs[rng.integers(len(pairs))]
            size = SIZES[rng.integers(len(SIZES))]
            if all(obj.description != (size, colour, shape) for obj in objects):
                break
        x, y = (np.array([col, row]) + 0.5) * _CELL + rng.uniform(-_JITTER[size], _JITTER[size], size=2)
        objects.append(SceneObject(shape, colour, size, row, col, float(x), float(y)))
    return Scene(tuple(objects))


def sample_scenes(seed, count: int, *, heldout: str = "exclude") -> Iterator[Scene]:
    """Yields ``count`` scenes drawn from one generator seeded with ``seed``.

    Args:
        seed: anything ``np.random.default_rng`` accepts (an int, a tuple of ints).
        count: how many scenes.
        heldout: as in ``sample_scene``.

    Returns:
        An iterator of scenes, the same ones for the same arguments.
    """
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield sample_scene(rng, heldout=heldout)


def render(scene: Scene, image_size: int = 64) -> np.ndarray:
    """Draws ``scene`` in flat colours (no antialiasing) on a dark background.

    Args:
        scene: the scene.
        image_size: the side of the square image, in pixels.

    Returns:
        A uint8 array [image_size, image_size, 3].
    """
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x, y = obj.x * image_size, obj.y * image_size
        half = _EXTENT[obj.size] * image_size / 2
        fill = COLOURS[obj.colour]
        box = (x - half, y - half, x + half, y + half)
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(x, y - half), (x + half, y + half), (x - half, y + half)], fill=fill)
        elif obj.shape == "diamond":
            draw.polygon([(x, y - half), (x + half, y), (x, y + half), (x - half, y)], fill=fill)
        else:  # cross: two bars a third of the extent thick
            bar = half / 3
            draw.rectangle((x - half, y - bar, x + half, y + bar), fill=fill)
            draw.rectangle((x - bar, y - half, x + bar, y + half), fill=fill)
    return np.array(image, dtype=np.uint8)


def scene_to_json(scene: Scene) -> str:
    """Returns ``scene`` as compact JSON: a list of objects, each a dict of its fields."""
    return json.dumps([dataclasses.asdict(obj) for obj in scene.objects], separators=(",", ":"))


def scene_from_json(text: str) -> Scene:
    """Rebuilds the scene that ``scene_to_json`` wrote (floats round-trip exactly).

    Raises:
        ValueError: the JSON is malformed or describes an invalid scene.
        TypeError: an object has missing or unknown fields.
    """
    return Scene(tuple(SceneObject(**fields) for fields in json.loads(text)))
