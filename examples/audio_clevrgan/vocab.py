"""CLEVR's vocabulary: attribute values, their order, colours, sizes, relations and synonyms.

The orders below are CLEVR's (``image_generation/data/properties.json``) and also the class order of the
attribute maps produced by :mod:`audio_clevrgan.render` and predicted by :mod:`audio_clevrgan.segmenter`:
class 0 of every attribute map is *background*, class ``i + 1`` is ``VALUES[attribute][i]``.
"""

from __future__ import annotations

#: Shapes, in CLEVR's class order (1 = cube, 2 = sphere, 3 = cylinder).
SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")

#: The eight CLEVR colours, in class order, with their RGB values (0-255).
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
COLORS: tuple[str, ...] = tuple(COLOR_RGB)

#: Materials, in class order (1 = rubber, 2 = metal).
MATERIALS: tuple[str, ...] = ("rubber", "metal")

#: Sizes, in class order (1 = large, 2 = small), with CLEVR's scale (sphere radius, cube half-side, cylinder radius).
SIZE_SCALE: dict[str, float] = {"large": 0.7, "small": 0.35}
SIZES: tuple[str, ...] = tuple(SIZE_SCALE)

#: The four attributes of an object, in the channel order of attribute maps ``[..., 4, H, W]``.
ATTRIBUTES: tuple[str, ...] = ("shape", "color", "material", "size")

#: Values of every attribute, in class order.
VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLORS,
    "material": MATERIALS,
    "size": SIZES,
}

#: Number of classes per attribute, *without* the background class.
NUM_VALUES: dict[str, int] = {a: len(v) for a, v in VALUES.items()}

#: The spatial relations CLEVR computes (above/below are not used).
RELATIONS: tuple[str, ...] = ("left", "right", "front", "behind")

#: CLEVR's threshold: object j is ``rel`` of object i iff (pos_j - pos_i) . dir_rel > RELATION_EPS.
RELATION_EPS: float = 0.2

#: CLEVR's synonyms (``question_generation/synonyms.json``), for caption writers.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "sphere": ("sphere", "ball"),
    "cube": ("cube", "block"),
    "cylinder": ("cylinder",),
    "large": ("large", "big"),
    "small": ("small", "tiny"),
    "metal": ("metal", "metallic", "shiny"),
    "rubber": ("rubber", "matte"),
    "left": ("left of", "to the left of", "on the left side of"),
    "right": ("right of", "to the right of", "on the right side of"),
    "front": ("in front of",),
    "behind": ("behind",),
}


def value_index(attribute: str, value: str) -> int:
    """Class index of ``value`` for ``attribute`` in attribute maps (1-based; 0 is background).

    >>> value_index("color", "red")
    2
    """
    try:
        return VALUES[attribute].index(value) + 1
    except (KeyError, ValueError):
        raise ValueError(
            f"unknown {attribute!r} value {value!r}; expected one of {VALUES.get(attribute)}"
        ) from None


__all__ = [
    "ATTRIBUTES",
    "COLORS",
    "COLOR_RGB",
    "MATERIALS",
    "NUM_VALUES",
    "RELATIONS",
    "RELATION_EPS",
    "SHAPES",
    "SIZES",
    "SIZE_SCALE",
    "SYNONYMS",
    "VALUES",
    "value_index",
]
