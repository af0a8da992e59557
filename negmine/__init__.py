"""negmine: train dual encoders with a triplet loss where the negatives come from plugins.

The public API is imported lazily so that ``import negmine`` (and ``negmine --help``) stays fast and does not import
torch until a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from negmine.hookspecs import hookimpl

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "NegmineError": "negmine.errors",
    "ConfigError": "negmine.errors",
    "UnknownNameError": "negmine.errors",
    "PluginError": "negmine.errors",
    "MissingCapabilityError": "negmine.errors",
    "NonFiniteLossError": "negmine.errors",
    "DataError": "negmine.errors",
    "CheckpointError": "negmine.errors",
    "NegativeGenerator": "negmine.generator",
    "Negatives": "negmine.generator",
    "MiningContext": "negmine.generator",
    "NegativeKind": "negmine.generator",
    "option": "negmine.generator",
    "Embedding": "negmine.model",
    "Batch": "negmine.model",
    "DualEncoder": "negmine.model",
    "PairedDataset": "negmine.model",
    "TensorPairs": "negmine.model",
    "Task": "negmine.model",
    "TaskSpec": "negmine.model",
    "Capability": "negmine.model",
    "running_stats_kept": "negmine.model",
    "DotScore": "negmine.scoring",
    "CosineScore": "negmine.scoring",
    "MatchmapScore": "negmine.scoring",
    "triplet_loss": "negmine.loss",
    "recall_at_k": "negmine.metrics",
    "Trainer": "negmine.trainer",
    "TrainConfig": "negmine.config",
    "StageConfig": "negmine.config",
    "read_config_file": "negmine.config",
    "build_task": "negmine.config",
    "build_task_config": "negmine.config",
    "parse_key_values": "negmine.config",
    "PluginManager": "negmine.plugins",
    "get_plugin_manager": "negmine.plugins",
}

__all__ = ["hookimpl", "__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from negmine.config import (  # noqa: F401
        StageConfig,
        TrainConfig,
        build_task,
        build_task_config,
        parse_key_values,
        read_config_file,
    )
    from negmine.errors import *  # noqa: F401,F403
    from negmine.generator import MiningContext, NegativeGenerator, NegativeKind, Negatives, option  # noqa: F401
    from negmine.loss import triplet_loss  # noqa: F401
    from negmine.metrics import recall_at_k  # noqa: F401
    from negmine.model import (  # noqa: F401
        Batch,
        Capability,
        DualEncoder,
        Embedding,
        PairedDataset,
        Task,
        TaskSpec,
        TensorPairs,
        running_stats_kept,
    )
    from negmine.plugins import PluginManager, get_plugin_manager  # noqa: F401
    from negmine.scoring import CosineScore, DotScore, MatchmapScore  # noqa: F401
    from negmine.trainer import Trainer  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'negmine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
