"""A small byte-level language model to train in the templates: the model
(:mod:`.model`), its data (:mod:`.data`), the one training loop of the notebooks and the
batch job (:mod:`.train`, also ``python -m factoryhub.helpers.lm.train``), checkpoints and
evaluation (:mod:`.checkpoint`).

    from factoryhub.helpers import lm
    from factoryhub.helpers.lm.train import TrainConfig, train

    dataset = lm.ByteDataset.from_source("")
    model = lm.ByteLM(lm.model_config("tiny"))
    result = train(model, dataset, TrainConfig(steps=100), out_dir="~/run")
    lm.evaluate(model, dataset).to_dict()

``lm.train`` is the module of the loop (it is also the command line); its main names are
here too: ``lm.TrainConfig``, ``lm.TrainResult``...
"""

import importlib
from typing import Any

from factoryhub.helpers.lm.checkpoint import EvalResult, evaluate, load_checkpoint, save_checkpoint
from factoryhub.helpers.lm.data import (
    BUILTIN_CORPUS,
    DEFAULT_DATA_DIR,
    ByteDataset,
    Document,
    load_documents,
    resolve_source,
    split_documents,
)
from factoryhub.helpers.lm.model import SIZES, ByteLM, ModelConfig, model_config

# .train is imported on first use, so that ``python -m factoryhub.helpers.lm.train`` does not
# find its module imported already (runpy warns about that, and it would run twice).
_TRAIN_NAMES = ("TrainConfig", "TrainResult", "lr_at", "pick_device", "setup")


def __getattr__(name: str) -> Any:
    """``lm.train`` (the module) and the names of ``_TRAIN_NAMES``, imported on first use."""
    if name == "train" or name in _TRAIN_NAMES:
        module = importlib.import_module(f"{__name__}.train")
        return module if name == "train" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN_CORPUS",
    "DEFAULT_DATA_DIR",
    "SIZES",
    "ByteDataset",
    "ByteLM",
    "Document",
    "EvalResult",
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "load_documents",
    "lr_at",
    "model_config",
    "pick_device",
    "resolve_source",
    "save_checkpoint",
    "setup",
    "split_documents",
]
