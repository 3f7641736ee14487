"""Kept for ``bench/common.py`` (``from engine import DockerEngine``): the private Docker engine
lives in ``support/dockerd.py``."""

from support.dockerd import DockerEngine, EngineError, can_run

__all__ = ["DockerEngine", "EngineError", "can_run"]
