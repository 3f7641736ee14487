"""The plan: which images to build, in which order. Pure: no I/O, no clock.

Images are ordered so that a base comes before the images built from it; among images
ready at the same time, the file's order decides (a YAML mapping keeps it). ``--target``
keeps the named images and the bases they need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import Option, UsageError
from .recipe import Built, ImageSpec, LoadedRecipe


@dataclass(frozen=True)
class PlannedImage:
    name: str
    spec: ImageSpec
    base: str | None  # another image of the file, if built from one


@dataclass(frozen=True)
class BuildPlan:
    order: tuple[PlannedImage, ...]


def plan_build(recipe: LoadedRecipe, targets: Sequence[str] = ()) -> BuildPlan:
    images = recipe.images
    for t in targets:
        if t not in images:
            raise UsageError(
                Option("targets"),
                f" {t}: no such image in {recipe.path} (images: {', '.join(images)})",
            )
    base = {
        name: spec.from_.built if isinstance(spec.from_, Built) else None
        for name, spec in images.items()
    }
    wanted = set(images) if not targets else set()
    for t in targets:  # each target and its chain of bases (validation ruled out cycles)
        node: str | None = t
        while node is not None and node not in wanted:
            wanted.add(node)
            node = base[node]
    order: list[PlannedImage] = []
    done: set[str] = set()
    while len(done) < len(wanted):
        for name, spec in images.items():
            if name in wanted and name not in done and (base[name] is None or base[name] in done):
                order.append(PlannedImage(name, spec, base[name]))
                done.add(name)
                break
        else:  # pragma: no cover - load_recipe reports cycles
            raise UsageError("the recipe's bases form a cycle")
    return BuildPlan(tuple(order))
