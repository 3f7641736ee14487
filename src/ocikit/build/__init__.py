"""``ocikit build``: images from a declarative recipe, without a daemon, reproducibly.

recipe (YAML) -> load_recipe (validated whole) -> plan_build (pure) -> build (execute)
"""

from .engine import BuildOptions, BuildResult, ImageResult, build, source_date_epoch
from .plan import BuildPlan, plan_build
from .recipe import (
    BuildError,
    LoadedRecipe,
    RecipeError,
    load_recipe,
    parse_substitutions,
    recipe_schema,
)

__all__ = [
    "BuildError",
    "BuildOptions",
    "BuildPlan",
    "BuildResult",
    "ImageResult",
    "LoadedRecipe",
    "RecipeError",
    "build",
    "load_recipe",
    "parse_substitutions",
    "plan_build",
    "recipe_schema",
    "source_date_epoch",
]
