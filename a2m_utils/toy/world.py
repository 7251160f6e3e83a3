"""The toy world: seeded scenes of coloured shapes with exact label maps and captions.

A scene is 1-3 (by default 1-2) shapes (classes of ``classes.TOY``) in distinct (shape, colour) pairs,
drawn in order so that later shapes cover earlier ones; every shape keeps at least
``MIN_VISIBLE`` of its own area. Two background styles: the light ``source`` domain
the toy model is trained on and the dark, striped ``target`` domain it never sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..classes import ClassVocab
from ..prompts import Prompt, with_seeds

TOY = ClassVocab(
    names=("background", "circle", "square", "triangle", "star", "cross"),
    synonyms={
        "circle": ("disc", "ring"),
        "square": ("box",),
        "triangle": ("wedge",),
        "star": ("pentagram",),
        "cross": ("plus",),
    },
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 160, 60),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 25),
    "purple": (135, 50, 175),
    "orange": (245, 125, 15),
}
DOMAINS = ("source", "target")
DOMAIN_TOKEN = "sks"
CAPTION_TEMPLATE = "{objects}"
TEMPLATES = (  # prompt templates beyond the training captions, e.g. the paper's ImageNet-S one
    "a picture of {objects}",
    "a photo of {objects} with a background",
)
TARGET_TEMPLATE = "{objects} in {token} world"  # objects first: their tokens stay as in training
INSTANCE_PROMPT = f"in {DOMAIN_TOKEN} world"  # the DreamBooth-LoRA prompt: TARGET_TEMPLATE without objects
MIN_VISIBLE = 0.5


@dataclass(frozen=True)
class ToyObject:
    shape: str
    colour: str
    cx: float
    cy: float
    radius: float
    angle: float


@dataclass(frozen=True)
class Scene:
    objects: tuple[ToyObject, ...]
    domain: str
    background_seed: int

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names present, in vocabulary order, each once."""
        present = {o.shape for o in self.objects}
        return tuple(n for n in TOY.names[1:] if n in present)


@dataclass(frozen=True)
class ToySample:
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8, TOY label ids
    caption: str
    scene: Scene


def _polygon(obj: ToyObject) -> list[tuple[float, float]]:
    """Vertices of a shape other than the circle, in pixel coordinates."""
    if obj.shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif obj.shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif obj.shape == "star":
        pts = [
            (r * math.cos(a), r * math.sin(a))
            for k in range(10)
            for r, a in [((1.0 if k % 2 == 0 else 0.45), k * math.pi / 5 - math.pi / 2)]
        ]
    elif obj.shape == "cross":
        w = 0.36
        unit = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
                (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]
        pts = [(x * 0.9, y * 0.9) for x, y in unit]
    else:
        raise ValueError(f"unknown toy shape {obj.shape!r}; expected one of {TOY.names[1:]}")
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    return [(obj.cx + obj.radius * (c * x - s * y), obj.cy + obj.radius * (s * x + c * y)) for x, y in pts]


def _draw(obj: ToyObject, draw: ImageDraw.ImageDraw, fill: int) -> None:
    if obj.shape == "circle":
        r = obj.radius * 0.85
        draw.ellipse([obj.cx - r, obj.cy - r, obj.cx + r, obj.cy + r], fill=fill)
    else:
        draw.polygon(_polygon(obj), fill=fill)


def instance_map(objects: tuple[ToyObject, ...], size: int) -> np.ndarray:
    """(H, W) map of 1 + index of the top-most object at each pixel, 0 for background."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for i, obj in enumerate(objects):
        _draw(obj, draw, i + 1)
    return np.asarray(canvas)


def _object_area(obj: ToyObject, size: int) -> int:
    return int((instance_map((obj,), size) > 0).sum())


def background(domain: str, seed: int, size: int) -> np.ndarray:
    """A (H, W, 3) uint8 background: light gradient (source) or dark stripes (target)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys)[..., None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    if domain == "source":
        a, b = rng.uniform(190, 250, 3), rng.uniform(190, 250, 3)
        img = a + (b - a) * ramp + rng.normal(0, 3, (size, size, 1))
    else:
        a, b = rng.uniform(30, 80, 3), rng.uniform(60, 110, 3)
        period = rng.uniform(3, 6)
        stripes = (np.floor((ys * size + rng.uniform(0, period)) / period) % 2)[..., None]
        img = a + (b - a) * ramp + 25 * stripes + rng.normal(0, 6, (size, size, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def _check_objects(shapes: Sequence[str] = (), colours: Sequence[str] = (), n_objects: int | None = None,
                   max_objects: int | None = None) -> None:
    """Renderer inputs, each error naming the valid names or limits."""
    bad = [s for s in shapes if s not in TOY.names[1:]]
    if bad:
        raise ValueError(f"unknown toy shape {bad[0]!r}; expected one of {list(TOY.names[1:])}")
    bad = [c for c in colours if c not in COLOURS]
    if bad:
        raise ValueError(f"unknown toy colour {bad[0]!r}; expected one of {list(COLOURS)}")
    for name, n in (("n_objects", n_objects), ("max_objects", max_objects)):
        if n is not None and not 1 <= n <= len(COLOURS):
            raise ValueError(f"{name} must be 1 to {len(COLOURS)} (a scene's objects have distinct colours, "
                             f"{len(COLOURS)} of them), got {n}")


def sample_scene(
    rng: np.random.Generator,
    size: int,
    n_objects: int | None = None,
    domain: str = "source",
    shapes: tuple[str, ...] | None = None,
    max_objects: int = 2,
) -> Scene:
    """Draw a random scene; ``shapes`` fixes the classes (in drawing order). At most ``len(COLOURS)``
    objects: they have distinct colours."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    _check_objects(shapes or (), n_objects=len(shapes) if shapes is not None else n_objects,
                   max_objects=None if shapes is not None or n_objects is not None else max_objects)
    if shapes is not None:
        n_objects = len(shapes)
    elif n_objects is None:
        n_objects = int(rng.integers(1, max_objects + 1))
    for _ in range(100):
        picked = shapes or tuple(rng.choice(TOY.names[1:], size=n_objects).tolist())
        colours = rng.choice(list(COLOURS), size=n_objects, replace=False).tolist()
        objects = tuple(
            ToyObject(
                shape=s, colour=c,
                radius=(r := float(rng.uniform(0.17, 0.27) * size)),
                cx=float(rng.uniform(r, size - r)), cy=float(rng.uniform(r, size - r)),
                angle=float(rng.uniform(0, 2 * math.pi)),
            )
            for s, c in zip(picked, colours)
        )
        inst = instance_map(objects, size)
        visible = [(inst == i + 1).sum() / max(_object_area(o, size), 1) for i, o in enumerate(objects)]
        if min(visible) >= MIN_VISIBLE:
            return Scene(objects, domain, int(rng.integers(2**31)))
    raise RuntimeError(f"could not place {n_objects} objects at size {size}")


def render(scene: Scene, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, 3) uint8 and exact label map (H, W) uint8 of a scene."""
    _check_objects([o.shape for o in scene.objects], [o.colour for o in scene.objects])
    inst = instance_map(scene.objects, size)
    image = background(scene.domain, scene.background_seed, size)
    label = np.zeros((size, size), dtype=np.uint8)
    for i, obj in enumerate(scene.objects):
        sel = inst == i + 1
        image[sel] = COLOURS[obj.colour]
        label[sel] = TOY.index(obj.shape)
    return image, label


def caption(scene: Scene, rng: np.random.Generator, synonym_p: float = 0.0,
            template: str | None = None, colour_p: float = 1.0) -> str:
    """A caption naming every object with its colour, in random order ("a red circle and a blue
    square"); target scenes get the domain token. ``synonym_p``: chance of a class synonym;
    ``colour_p``: chance that an object's colour is named (below 1, some objects are named by
    their class word alone, as real captions often name objects)."""
    words = []
    for k in rng.permutation(len(scene.objects)):
        obj = scene.objects[k]
        names = TOY.phrases(obj.shape)
        name = names[0] if rng.random() >= synonym_p else str(rng.choice(names[1:]))
        phrase = name if colour_p < 1.0 and rng.random() >= colour_p else f"{obj.colour} {name}"
        words.append(f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}")
    objects = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    if template is None:
        template = TARGET_TEMPLATE if scene.domain == "target" else CAPTION_TEMPLATE
    return template.format(objects=objects, token=DOMAIN_TOKEN)


def make_sample(seed: int, size: int = 32, domain: str = "source", **scene_kwargs) -> ToySample:
    """One rendered sample, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, size, domain=domain, **scene_kwargs)
    image, label = render(scene, size)
    return ToySample(image, label, caption(scene, rng), scene)


def vocabulary() -> list[str]:
    """Every word a toy caption or template prompt can hold (the toy tokenizer's vocabulary)."""
    words = {"a", "an", "and", ",", DOMAIN_TOKEN, *COLOURS}
    for t in (*TEMPLATES, CAPTION_TEMPLATE, TARGET_TEMPLATE):
        words |= set(t.replace("{objects}", "").replace("{token}", "").split())
    for name in TOY.names[1:]:
        for phrase in TOY.phrases(name):
            words |= set(phrase.split())
    return sorted(words)


def toy_prompts(n: int, seed: int = 0, domain: str = "source", **scene_kwargs) -> list[Prompt]:
    """Captions of random toy scenes (their classes; the scene's seed doubles as the sampling seed)."""
    samples = [make_sample(seed * 10**6 + i, domain=domain, **scene_kwargs) for i in range(n)]
    return [Prompt(s.caption, s.scene.classes, seed * 10**6 + i) for i, s in enumerate(samples)]


def toy_template_prompts(per_class: int, seeds_per_prompt: int = 1, seed: int = 0,
                         template: str = CAPTION_TEMPLATE) -> list[Prompt]:
    """Single-object toy prompts, one colour drawn at random ("a red circle"); the toy model's
    counterpart of the ImageNet-S template (it was trained on captions of this form)."""
    rng = np.random.default_rng(seed)
    names = [n for n in TOY.names[1:] for _ in range(per_class)]
    colours = [str(rng.choice(list(COLOURS))) for _ in names]
    texts = [template.format(objects=f"{'an' if c[0] in 'aeiou' else 'a'} {c} {n}") for c, n in zip(colours, names)]
    return with_seeds(texts, [(n,) for n in names], seeds_per_prompt, seed * 10**6)


def rendered(seeds: Sequence[int], domain: str = "source", max_objects: int = 2,
                 size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images and exact labels of ``make_sample`` scenes, rendered at ``size``."""
    samples = [make_sample(s, size, domain, max_objects=max_objects) for s in seeds]
    return np.stack([s.image for s in samples]), np.stack([s.label for s in samples])
