"""Checkpoints of a :class:`~factoryhub.helpers.lm.model.ByteLM` and its evaluation on
held-out text.

A checkpoint is one ``torch.save`` file: ``model_config``, ``model`` (the weights), ``step``,
``train_config`` and, for resuming, ``optimizer``. It is written to a temporary file and
renamed, so a reader never sees half a checkpoint.

    from factoryhub.helpers.lm.checkpoint import evaluate, load_checkpoint
    model, info = load_checkpoint("~/factoryhub-runs/interactive/checkpoint.pt")
    evaluate(model, dataset).to_dict()
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from factoryhub.helpers.lm.data import ByteDataset
from factoryhub.helpers.lm.model import ByteLM, ModelConfig

FORMAT = "factoryhub-bytelm/1"


def unwrap(model: nn.Module) -> ByteLM:
    """The :class:`ByteLM` inside a ``DistributedDataParallel`` (or compiled) wrapper."""
    while not isinstance(model, ByteLM):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"not a ByteLM: {type(model).__name__}")
        model = inner
    return model


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    step: int = 0,
    train_config: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (unwrapped, weights on the CPU) to ``path``, atomically.
    ``train_config`` may be a dataclass or a dict; ``extra`` adds keys."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    lm = unwrap(model)
    if is_dataclass(train_config) and not isinstance(train_config, type):
        train_config = asdict(train_config)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "model_config": lm.config.to_dict(),
        "model": {k: v.detach().cpu() for k, v in lm.state_dict().items()},
        "step": int(step),
        "train_config": dict(train_config or {}),
        **(extra or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ByteLM, dict[str, Any]]:
    """The model of a checkpoint (on ``device``, in eval mode) and the checkpoint's other
    contents (``step``, ``train_config``, ``model_config``, ``optimizer`` when saved...)."""
    path = Path(path).expanduser()
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a factoryhub byte-level LM checkpoint")
    model = ByteLM(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload.pop("model"))
    return model.to(device).eval(), payload


@dataclass
class EvalResult:
    """Held-out results. ``loss`` is the mean cross-entropy in nats per byte;
    ``perplexity = exp(loss)``; ``bits_per_byte = loss / ln 2``; ``accuracy`` is the share of
    bytes whose most likely prediction was right. ``by_language`` has the same numbers per
    document label; ``by_position`` the mean loss at each position of the context window
    (it falls as the model sees more context); ``document_loss``/``document_bytes`` the
    mean loss and the bytes scored of every document of the split (NaN: not scored)."""

    loss: float
    perplexity: float
    bits_per_byte: float
    accuracy: float
    tokens: int
    by_language: dict[str, dict[str, float]] = field(default_factory=dict)
    by_position: list[float] = field(default_factory=list)
    document_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    document_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-friendly part: the totals and ``by_language``."""
        keys = ("loss", "perplexity", "bits_per_byte", "accuracy", "tokens", "by_language")
        return {k: getattr(self, k) for k in keys}


def _metrics(loss_sum: float, correct: float, count: float) -> dict[str, float]:
    loss_sum, correct, count = float(loss_sum), float(correct), float(count)
    loss = loss_sum / count if count else float("nan")
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if count else float("nan"),
        "bits_per_byte": loss / math.log(2),
        "accuracy": correct / count if count else float("nan"),
        "tokens": int(count),
    }


def _by_language(
    langs: Sequence[str], loss: np.ndarray, correct: np.ndarray, count: np.ndarray
) -> dict[str, dict[str, float]]:
    """The metrics of each label's documents (``"(none)"``: documents without one), from the
    per-document sums; labels with no byte scored are left out."""
    by_language: dict[str, dict[str, float]] = {}
    labels = np.array(langs, dtype=object)
    for lang in sorted(set(langs)):
        mask = labels == lang
        if count[mask].sum():
            by_language[lang or "(none)"] = _metrics(
                loss[mask].sum(), correct[mask].sum(), count[mask].sum()
            )
    return by_language


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: ByteDataset,
    split: str = "val",
    batch_size: int = 16,
    max_windows: int | None = None,
    device: str | torch.device | None = None,
) -> EvalResult:
    """Score ``model`` on the ``split`` of ``dataset``: every byte of non-overlapping windows
    of the model's context (at most ``max_windows`` windows) is predicted once."""
    lm = unwrap(model)
    device = torch.device(device) if device is not None else next(lm.parameters()).device
    context = lm.config.context
    stream = dataset.stream(split)
    n_docs = len(stream.langs)
    doc_loss = np.zeros(n_docs)
    doc_correct = np.zeros(n_docs)
    doc_count = np.zeros(n_docs, dtype=np.int64)
    pos_loss = torch.zeros(context, dtype=torch.float64)
    pos_count = 0
    was_training = lm.training
    lm.eval()
    autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
    try:
        for x, y, positions in dataset.windows(split, batch_size, context, max_windows):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits, _ = lm(x)
            logits = logits.float()
            losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").double()
            correct = (logits.argmax(dim=-1) == y).double()
            docs = stream.document_of(positions.reshape(-1))
            doc_loss += np.bincount(docs, losses.reshape(-1).cpu().numpy(), minlength=n_docs)
            doc_correct += np.bincount(docs, correct.reshape(-1).cpu().numpy(), minlength=n_docs)
            doc_count += np.bincount(docs, minlength=n_docs)
            pos_loss += losses.sum(dim=0).cpu()
            pos_count += x.shape[0]
    finally:
        lm.train(was_training)
    total = _metrics(doc_loss.sum(), doc_correct.sum(), doc_count.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        document_loss = np.where(doc_count > 0, doc_loss / doc_count, np.nan)
    return EvalResult(
        loss=total["loss"],
        perplexity=total["perplexity"],
        bits_per_byte=total["bits_per_byte"],
        accuracy=total["accuracy"],
        tokens=int(total["tokens"]),
        by_language=_by_language(stream.langs, doc_loss, doc_correct, doc_count),
        by_position=(pos_loss / max(pos_count, 1)).tolist(),
        document_loss=document_loss,
        document_bytes=doc_count,
    )
