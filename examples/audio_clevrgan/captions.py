"""Synthetic captions of CLEVR-like scenes, in the style of Audio CLEVRGAN's human captions.

A scene is a plain list of object dicts::

    {"shape": "cube", "color": "gray", "material": "rubber", "size": "large", "x": 0.31, "y": 0.72}

``x`` and ``y`` are the object's centroid in the image plane: ``x`` grows to the right and ``y`` grows
downwards, i.e. towards the viewer (an object lower in the picture is *in front of* one higher up).

Every caption names every object with all four of its attributes (size, colour, material, shape) and
states, for every object after the first, its spatial relation to an object mentioned before it. Word
order, sentence templates and CLEVR's synonyms (ball/sphere, block/cube, big/large, tiny/small,
shiny/metallic/metal, matte/rubber) vary; the randomness comes only from the ``numpy.random.Generator``
passed in, so a caption is a pure function of (objects, generator state).

Relations follow CLEVR's rule: object ``j`` is ``rel`` of object ``i`` iff the displacement
``pos_j - pos_i`` projected on the direction of ``rel`` exceeds ``eps``. With image-plane coordinates
the directions are left = -x, right = +x, front = +y (towards the viewer), behind = -y.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_VALUES",
    "SPOKEN_WORDS",
    "WORD_TO_ATTRIBUTE",
    "SEMANTIC_TEST_WORDS",
    "RELATIONS",
    "DEFAULT_EPS",
    "RelationMention",
    "Caption",
    "canonical_word",
    "spoken_words",
    "validate_objects",
    "spatial_relations",
    "relations_between",
    "describe_object",
    "make_caption",
    "attribute_word_owners",
]

# Attribute names in the order size, colour, material, shape is how English stacks adjectives; the tuple
# below is the order objects are validated and words are listed in.
ATTRIBUTES: tuple[str, ...] = ("shape", "color", "material", "size")

# Values in CLEVR's class order (the ground-truth segmenter's order: colour 1-8, shape 1-3, ...).
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": ("cube", "sphere", "cylinder"),
    "color": ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"),
    "material": ("rubber", "metal"),
    "size": ("large", "small"),
}

# Every word a caption may use for a value; the first word is the canonical one (the value's own name,
# which is also the isolated word spoken in the semantic test).
SPOKEN_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "shape": {"cube": ("cube", "block"), "sphere": ("sphere", "ball"), "cylinder": ("cylinder",)},
    "color": {c: (c,) for c in ATTRIBUTE_VALUES["color"]},
    "material": {"rubber": ("rubber", "matte"), "metal": ("metal", "metallic", "shiny")},
    "size": {"large": ("large", "big"), "small": ("small", "tiny")},
}

# word -> (attribute, value), for every word in SPOKEN_WORDS.
WORD_TO_ATTRIBUTE: dict[str, tuple[str, str]] = {
    word: (attribute, value)
    for attribute, values in SPOKEN_WORDS.items()
    for value, words in values.items()
    for word in words
}

# The semantic ("isolated spoken word") test's word list, in the order of the paper's evaluation code:
# (attribute, value, canonical word).
SEMANTIC_TEST_WORDS: tuple[tuple[str, str, str], ...] = tuple(
    (attribute, value, value)
    for attribute in ("material", "shape", "size", "color")
    for value in ATTRIBUTE_VALUES[attribute]
)

RELATIONS: tuple[str, ...] = ("left", "right", "front", "behind")

# CLEVR's eps is 0.2 on a ground plane whose objects span about 6 units (x, y ~ U(-3, 3)), i.e. 1/30 of
# the scene's width. The default assumes coordinates normalised to [0, 1] (x / width, y / height); pass
# ``eps`` in your own unit otherwise (e.g. ``width / 30`` for pixel coordinates).
DEFAULT_EPS: float = 0.2 / 6.0

# Material words that read as adjectives before a noun, and the noun used after "made of".
_MATERIAL_NOUN = {"rubber": "rubber", "metal": "metal"}

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

_LATERAL_PHRASES = {
    "left": ("to the left of", "left of", "on the left side of", "to the left hand side of"),
    "right": ("to the right of", "right of", "on the right side of", "to the right hand side of"),
}
_DEPTH_PHRASES = {"front": ("in front of",), "behind": ("behind",)}
_NEAR_PHRASES = ("next to", "near", "close to", "beside")


@dataclass(frozen=True)
class RelationMention:
    """One spatial statement of a caption: object ``subject`` is ``relations`` of object ``reference``.

    ``relations`` is the complete set of relations that hold between the two (sorted in the order of
    :data:`RELATIONS`); an empty tuple means the caption said "next to" (neither axis passes ``eps``).
    ``subject`` and ``reference`` index the input object list.
    """

    subject: int
    relations: tuple[str, ...]
    reference: int


@dataclass(frozen=True)
class Caption:
    """A generated caption.

    Attributes:
        text: the caption, lower case, sentences ending with ".", e.g.
            ``"there is a large gray rubber cube in front of a small red metal sphere."``
        order: indices of the input objects in the order the caption introduces them (length = #objects).
        mentions: the spatial statements, one per object after the first (length = #objects - 1).
    """

    text: str
    order: tuple[int, ...]
    mentions: tuple[RelationMention, ...]

    @property
    def words(self) -> list[str]:
        """The caption's words without punctuation, lower case (length = number of words)."""
        return [w for w in self.text.replace(".", " ").replace(",", " ").split() if w]


def canonical_word(attribute: str, value: str) -> str:
    """The canonical spoken word for an attribute value (e.g. ``("material", "metal") -> "metal"``)."""
    return spoken_words(attribute, value)[0]


def spoken_words(attribute: str, value: str) -> tuple[str, ...]:
    """Every word a caption may use for an attribute value, canonical first.

    E.g. ``spoken_words("material", "metal") == ("metal", "metallic", "shiny")``.
    """
    try:
        return SPOKEN_WORDS[attribute][value]
    except KeyError:
        if attribute not in SPOKEN_WORDS:
            raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}") from None
        raise ValueError(
            f"unknown {attribute} {value!r}; expected one of {ATTRIBUTE_VALUES[attribute]}"
        ) from None


def validate_objects(objects: Sequence[Mapping]) -> None:
    """Raise ``ValueError`` naming the object and field if a scene is malformed.

    Each object needs ``shape``, ``color``, ``material``, ``size`` (CLEVR's canonical values, see
    :data:`ATTRIBUTE_VALUES`) and finite numeric ``x``, ``y``.
    """
    if len(objects) == 0:
        raise ValueError("a scene needs at least one object to caption")
    for k, obj in enumerate(objects):
        for attribute in ATTRIBUTES:
            if attribute not in obj:
                raise ValueError(f"object {k} has no {attribute!r}: {dict(obj)!r}")
            if obj[attribute] not in ATTRIBUTE_VALUES[attribute]:
                raise ValueError(
                    f"object {k} has unknown {attribute} {obj[attribute]!r}; "
                    f"expected one of {ATTRIBUTE_VALUES[attribute]}"
                )
        for coord in ("x", "y"):
            if coord not in obj:
                raise ValueError(f"object {k} has no {coord!r} coordinate: {dict(obj)!r}")
            try:
                ok = np.isfinite(float(obj[coord]))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"object {k} has a non-finite {coord!r} coordinate: {obj[coord]!r}")


def relations_between(subject: Mapping, reference: Mapping, eps: float = DEFAULT_EPS) -> tuple[str, ...]:
    """Every relation ``rel`` such that ``subject`` is ``rel`` of ``reference`` (in :data:`RELATIONS` order).

    ``subject`` is left of ``reference`` iff ``reference.x - subject.x > eps``; right iff
    ``subject.x - reference.x > eps``; in front iff ``subject.y - reference.y > eps`` (y grows towards the
    viewer); behind iff ``reference.y - subject.y > eps``. At most one lateral and one depth relation hold.
    """
    dx = float(subject["x"]) - float(reference["x"])
    dy = float(subject["y"]) - float(reference["y"])
    found = []
    if -dx > eps:
        found.append("left")
    if dx > eps:
        found.append("right")
    if dy > eps:
        found.append("front")
    if -dy > eps:
        found.append("behind")
    return tuple(found)


def spatial_relations(objects: Sequence[Mapping], eps: float = DEFAULT_EPS) -> dict[str, list[list[int]]]:
    """All pairwise relations of a scene, in CLEVR's scene-graph layout.

    Returns ``{rel: table}`` for each ``rel`` in :data:`RELATIONS`, where ``table`` has one list per object
    (length n) and ``table[i]`` is the sorted list of indices ``j != i`` such that object ``j`` is ``rel``
    of object ``i``.
    """
    validate_objects(objects)
    out: dict[str, list[list[int]]] = {rel: [[] for _ in objects] for rel in RELATIONS}
    for i, ref in enumerate(objects):
        for j, subj in enumerate(objects):
            if i == j:
                continue
            for rel in relations_between(subj, ref, eps):
                out[rel][i].append(j)
    return out


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _article(next_word: str) -> str:
    return "an" if next_word[:1] in "aeiou" else "a"


def describe_object(obj: Mapping, rng: np.random.Generator, definite: bool = False, compact: bool = False) -> str:
    """A noun phrase naming all four attributes of one object, e.g. ``"a big shiny red ball"``.

    Word order, template and synonyms are drawn from ``rng``. With ``definite=True`` the article is "the".
    ``compact=True`` keeps to the two five-word templates (size colour material shape, size material
    colour shape).
    """
    size = _pick(rng, SPOKEN_WORDS["size"][obj["size"]])
    color = _pick(rng, SPOKEN_WORDS["color"][obj["color"]])
    material = _pick(rng, SPOKEN_WORDS["material"][obj["material"]])
    material_noun = _MATERIAL_NOUN[obj["material"]]
    shape = _pick(rng, SPOKEN_WORDS["shape"][obj["shape"]])
    template = int(rng.integers(2 if compact else 5))
    if template == 0:
        body = f"{size} {color} {material} {shape}"
    elif template == 1:
        body = f"{size} {material} {color} {shape}"
    elif template == 2:
        body = f"{size} {color} {shape} made of {material_noun}"
    elif template == 3:
        body = f"{color} {material} {shape} that is {size}"
    else:
        body = f"{size} {shape} that is {color} and {material}"
    return f"{'the' if definite else _article(body)} {body}"


def _relation_phrase(relations: tuple[str, ...], rng: np.random.Generator, compact: bool = False) -> str:
    lateral = [r for r in relations if r in _LATERAL_PHRASES]
    depth = [r for r in relations if r in _DEPTH_PHRASES]
    if not lateral and not depth:
        return _pick(rng, _NEAR_PHRASES[:2] if compact else _NEAR_PHRASES)
    parts = []
    if depth:
        parts.append(_pick(rng, _DEPTH_PHRASES[depth[0]]))
    if lateral:
        options = _LATERAL_PHRASES[lateral[0]]
        parts.append(_pick(rng, options[:2] if compact else options))
    if len(parts) == 2 and rng.random() < 0.5:
        parts.reverse()
    if len(parts) == 2:
        # "behind and to the left of": only the last phrase keeps its trailing "of".
        first = parts[0][: -len(" of")] if parts[0].endswith(" of") else parts[0]
        return f"{first} and {parts[1]}"
    return parts[0]


def _reference_phrase(objects: Sequence[Mapping], index: int, rng: np.random.Generator) -> str:
    """A short definite description of an already-introduced object that singles it out if possible."""
    obj = objects[index]
    keys_by_detail = (("color", "shape"), ("size", "color", "shape"), ("size", "color", "material", "shape"))
    for keys in keys_by_detail:
        same = [o for o in objects if all(o[k] == obj[k] for k in keys)]
        if len(same) == 1 or keys == keys_by_detail[-1]:
            words = [_pick(rng, SPOKEN_WORDS[k][obj[k]]) for k in keys]
            return "the " + " ".join(words)
    raise AssertionError("unreachable")


def _count_phrase(n: int, rng: np.random.Generator) -> str:
    number = _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)
    return _pick(
        rng,
        (
            f"there are {number} objects",
            f"i see {number} objects",
            f"in this picture i have {number} objects",
            f"this image has {number} objects",
        ),
    )


def make_caption(
    objects: Sequence[Mapping], rng: np.random.Generator, eps: float = DEFAULT_EPS, compact: bool = False
) -> Caption:
    """Caption a scene: every object with all four attributes, plus a spatial relation per extra object.

    Args:
        objects: n >= 1 object dicts with keys shape, color, material, size, x, y (see module docstring).
        rng: the only source of randomness (object order, templates, synonyms).
        eps: relation threshold in the unit of x, y (see :data:`DEFAULT_EPS`).
        compact: use only the shortest templates (no counting sentence, no "made of" / "that is" / "i can
            also see" fillers, mostly "it" for the previous object): a quarter to a third fewer words (3
            objects: 32 instead of 41 on average), hence shorter audio, with the same attributes,
            synonyms and relations.

    Returns:
        A :class:`Caption`; ``caption.mentions[k]`` says which relation the caption states between the
        (k+2)-th introduced object and an earlier one, and that relation set is exactly
        ``relations_between(objects[subject], objects[reference], eps)``.
    """
    validate_objects(objects)
    n = len(objects)
    order = [int(i) for i in rng.permutation(n)]
    sentences: list[str] = []
    mentions: list[RelationMention] = []

    if n == 1:
        np0 = describe_object(objects[order[0]], rng, compact=compact)
        openers = ("there is {}", "{}", "i see {}", "in this picture there is {}", "the image shows {}")
        opener = _pick(rng, openers[:2] if compact else openers)
        sentences.append(opener.format(np0))
        return Caption(text=_join(sentences, rng), order=tuple(order), mentions=())

    counted = not compact and rng.random() < 0.2
    if counted:
        sentences.append(_count_phrase(n, rng))

    # Which earlier object "it" may refer to (None: no unambiguous antecedent).
    antecedent: int | None
    if rng.random() < 0.5:
        # The paper's figure style: "there is A in front of B", both with full descriptions.
        subj, ref = order[0], order[1]
        rels = relations_between(objects[subj], objects[ref], eps)
        sentences.append(
            f"there is {describe_object(objects[subj], rng, compact=compact)} "
            f"{_relation_phrase(rels, rng, compact)} {describe_object(objects[ref], rng, compact=compact)}"
        )
        mentions.append(RelationMention(subj, rels, ref))
        introduced = [subj, ref]
        antecedent = None
    else:
        first = order[0]
        openers = ("there is {}", "i see {}", "in this picture there is {}")
        sentences.append(_pick(rng, openers[:1] if compact else openers).format(
            describe_object(objects[first], rng, compact=compact)
        ))
        introduced = [first]
        antecedent = first

    for subj in order[len(introduced):]:
        if antecedent is not None and rng.random() < (0.8 if compact else 0.6):
            ref = antecedent
            ref_phrase = "it" if compact or rng.random() < 0.6 else _reference_phrase(objects, ref, rng)
        else:
            ref = introduced[int(rng.integers(len(introduced)))]
            ref_phrase = _reference_phrase(objects, ref, rng)
        rels = relations_between(objects[subj], objects[ref], eps)
        rel = _relation_phrase(rels, rng, compact)
        noun_phrase = describe_object(objects[subj], rng, compact=compact)
        template = int(rng.choice((0, 2, 3))) if compact else int(rng.integers(5))
        if template == 0:
            sentence = f"there is {noun_phrase} {rel} {ref_phrase}"
        elif template == 1:
            sentence = f"{rel} {ref_phrase} there is {noun_phrase}"
        elif template == 2:
            sentence = f"{rel} {ref_phrase} is {noun_phrase}"
        elif template == 3:
            sentence = f"{noun_phrase} is {rel} {ref_phrase}"
        else:
            sentence = f"i can also see {noun_phrase} {rel} {ref_phrase}"
        sentences.append(sentence)
        mentions.append(RelationMention(subj, rels, ref))
        introduced.append(subj)
        antecedent = subj

    return Caption(text=_join(sentences, rng, first_joinable=2 if counted else 1), order=tuple(order),
                   mentions=tuple(mentions))


def _join(sentences: list[str], rng: np.random.Generator, first_joinable: int = 1) -> str:
    """Join sentences with ". " or, sometimes, ", and " (never right after a counting sentence)."""
    text = sentences[0]
    for k, sentence in enumerate(sentences[1:], start=1):
        text += ", and " + sentence if k >= first_joinable and rng.random() < 0.2 else ". " + sentence
    return text + "."


def attribute_word_owners(caption: str, objects: Sequence[Mapping]) -> list[int | None]:
    """Which object each attribute word of ``caption`` names: per word of :data:`WORD_TO_ATTRIBUTE`, in the order
    spoken, the index into ``objects`` of the one object the word's noun phrase describes, or None where the
    phrase fits several objects (two objects alike in every attribute it names) or none.

    Every noun phrase :func:`make_caption` writes starts with an article ("a", "an", "the": a full description or
    a reference to an earlier object) or is "it", and no other word between two articles names an attribute; so
    the attribute words from one article to the next belong to one phrase, and the phrase names the objects
    whose values agree with all of its words. "to the left of" starts a phrase without attribute words, which is
    harmless. The first words owned by an object are its full description (a reference phrase only names an
    object already described). An edit that changes one object's value falsifies that object's word, while the
    same word of another object holding the value stays true (:meth:`AudioClevrganSplit.edit_word_spans`)."""
    phrases: list[list[tuple[str, str]]] = [[]]
    for word in caption.replace(".", " ").replace(",", " ").lower().split():
        if word in ("a", "an", "the"):
            phrases.append([])
        elif word in WORD_TO_ATTRIBUTE:
            phrases[-1].append(WORD_TO_ATTRIBUTE[word])
    owners: list[int | None] = []
    for named in phrases:
        fits = [k for k, o in enumerate(objects) if all(o[attribute] == value for attribute, value in named)]
        owners.extend([fits[0] if len(fits) == 1 else None] * len(named))
    return owners
