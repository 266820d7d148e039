"""The one training loop of the templates: the interactive notebook, the batch job and the
benchmark all call :func:`train`.

AdamW, linear warm-up then a cosine learning-rate schedule, gradient clipping, bf16 autocast
on CUDA (fp32 on the CPU), a callback every ``log_interval`` steps, a stop flag that another
thread may set, and DistributedDataParallel when started by ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``; NCCL on GPUs, Gloo on CPUs). Only rank 0 writes files.

As a command (what the batch job runs under ``srun torchrun``)::

    python -m factoryhub.helpers.lm.train --out DIR --steps 200 [--data PATH] [--size tiny]

writes ``DIR/metrics.jsonl`` (one JSON line per logged step), ``DIR/checkpoint.pt`` and, at
the end, ``DIR/done.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from factoryhub.helpers.lm.checkpoint import load_checkpoint, save_checkpoint, unwrap
from factoryhub.helpers.lm.data import ByteDataset
from factoryhub.helpers.lm.model import SIZES, ByteLM, model_config

METRICS_FILE, CHECKPOINT_FILE, DONE_FILE = "metrics.jsonl", "checkpoint.pt", "done.json"


class StopFlag(Protocol):
    def is_set(self) -> bool:
        """True once training should stop (a :class:`threading.Event` is a stop flag)."""


@dataclass
class TrainConfig:
    """How to train. Intervals count optimizer steps; ``eval_interval = 0`` never evaluates,
    ``checkpoint_interval = 0`` writes a checkpoint only at the end (and when stopped).
    ``device``: ``"auto"`` (a GPU when there is one), ``"cuda"``, ``"cpu"``..."""

    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    log_interval: int = 10
    eval_interval: int = 50
    eval_windows: int = 64
    checkpoint_interval: int = 100
    seed: int = 0
    device: str = "auto"


def lr_at(step: int, config: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then a cosine decay to ``min_lr_ratio * learning_rate`` at the end."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    low = peak * config.min_lr_ratio
    return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: its device and its place in a distributed job."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: the process's GPU (``cuda:LOCAL_RANK``) when CUDA is available, else the
    CPU; ``"cuda"`` likewise but required; anything else as given."""
    if preference in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if preference == "cuda":
            raise RuntimeError("device 'cuda' asked for, but CUDA is not available")
        return torch.device("cpu")
    return torch.device(preference)


def setup(device: str = "auto") -> Runtime:
    """The runtime of this process; under ``torchrun`` with ``WORLD_SIZE`` > 1 also joins the
    process group (once; NCCL on GPUs, Gloo on CPUs) from the environment variables."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    if dist.is_initialized():
        return Runtime(chosen, dist.get_rank(), dist.get_world_size(), local_rank)
    return Runtime(chosen)


def make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> Any:
    """AdamW; weight decay on matrices and embeddings only, not on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"  # one kernel for all parameters
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), fused=fused)


@dataclass
class TrainResult:
    """What a :func:`train` call did. ``tokens_per_s`` counts training time only (no
    evaluations, checkpoints or callbacks), over all processes."""

    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False
    elapsed_s: float = 0.0
    tokens_per_s: float = 0.0
    device: str = "cpu"
    world_size: int = 1
    checkpoint: str | None = None

    def summary(self) -> dict[str, Any]:
        """First and last logged loss, last validation loss, speed, where things are."""
        losses = [m["loss"] for m in self.history]
        vals = [m["val_loss"] for m in self.history if "val_loss" in m]
        return {
            "status": "stopped" if self.stopped else "completed",
            "step": self.step,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "val_loss": vals[-1] if vals else None,
            "tokens_per_s": self.tokens_per_s,
            "elapsed_s": self.elapsed_s,
            "device": self.device,
            "world_size": self.world_size,
            "checkpoint": self.checkpoint,
        }


@torch.no_grad()
def _val_loss(model: ByteLM, dataset: ByteDataset, config: TrainConfig, rt: Runtime) -> float:
    """Mean loss over the first ``eval_windows`` validation windows, split across ranks."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, **_on(rt))  # loss sum, bytes
    autocast = rt.device.type == "cuda" and torch.cuda.is_bf16_supported()
    windows = dataset.windows(
        "val", config.batch_size, model.config.context, config.eval_windows, rt.rank, rt.world_size
    )
    for x, y, _ in windows:
        x, y = x.to(rt.device), y.to(rt.device)
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=autocast):
            _, loss = model(x, y)
        total[0] += loss.double() * y.numel()
        total[1] += y.numel()
    if rt.world_size > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1]).item()


@dataclass
class _Tally:
    """What the loop counts: the loss and steps since the last logged step, the tokens since
    then and in all, and training time (the intervals between logged steps, without the
    evaluations, checkpoints and callbacks done at them)."""

    loss_sum: torch.Tensor
    started: float
    last: float
    train_time: float = 0.0
    tokens_total: int = 0
    tokens_since: int = 0
    steps_since: int = 0


@dataclass
class _Loop:
    """One :func:`train` call: what each step uses and what it reports to."""

    config: TrainConfig
    rt: Runtime
    lm: ByteLM
    net: nn.Module  # lm, or lm wrapped in DistributedDataParallel
    optimizer: Any
    dataset: ByteDataset
    generator: torch.Generator
    autocast: bool  # bf16 on GPUs that have it
    result: TrainResult
    tally: _Tally
    out: Path | None
    extra: dict[str, Any]  # saved with every checkpoint
    callback: Callable[[dict[str, Any]], None] | None
    stop: StopFlag | None

    def step(self, step: int) -> None:
        """One optimizer step (``step`` counts from 1)."""
        rt, config = self.rt, self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step - 1, config)
        context = self.lm.config.context
        x, y = self.dataset.batch("train", config.batch_size, context, self.generator, rt.device)
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            _, loss = self.net(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.lm.parameters(), config.grad_clip)
        self.optimizer.step()
        self.tally.loss_sum += loss.detach()
        self.tally.steps_since += 1
        self.tally.tokens_since += config.batch_size * context * rt.world_size

    def log(self, step: int, final: bool) -> bool:
        """The logged step ``step``: metrics (on every rank: their collectives match up), then
        on rank 0 the history, the metrics file, a checkpoint when due, the callback. True when
        the stop flag was set on any rank."""
        metrics, stopping = self._metrics(step)
        config, tally = self.config, self.tally
        if config.eval_interval > 0 and (final or stopping or step % config.eval_interval == 0):
            metrics["val_loss"] = _val_loss(self.lm, self.dataset, config, self.rt)
        tally.loss_sum.zero_()
        tally.steps_since, tally.tokens_since = 0, 0
        self.result.step = step
        if self.rt.is_main:
            self._record(metrics, step, final or stopping)
        tally.last = time.perf_counter()
        return stopping

    def _metrics(self, step: int) -> tuple[dict[str, Any], bool]:
        tally = self.tally
        flag = float(self.stop is not None and self.stop.is_set())
        shared = torch.tensor([0.0, tally.steps_since, flag], **_on(self.rt))
        shared[0] = tally.loss_sum
        if self.rt.world_size > 1:
            dist.all_reduce(shared)
        loss_total, count, stops = shared.tolist()  # waits for the device: timing is right
        now = time.perf_counter()
        interval = now - tally.last
        tally.train_time += interval
        tally.tokens_total += tally.tokens_since
        metrics: dict[str, Any] = {
            "step": step,
            "loss": loss_total / count,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens_per_s": tally.tokens_since / interval if interval > 0 else 0.0,
            "tokens": tally.tokens_total,
            "epochs": tally.tokens_total / max(1, len(self.dataset.train)),
            "elapsed_s": now - tally.started,
        }
        return metrics, stops > 0

    def _record(self, metrics: dict[str, Any], step: int, last: bool) -> None:
        self.result.history.append(metrics)
        out, every = self.out, self.config.checkpoint_interval
        if out is not None:
            with open(out / METRICS_FILE, "a") as f:
                f.write(json.dumps(metrics) + "\n")
            if last or (every > 0 and step % every == 0):
                path = save_checkpoint(out / CHECKPOINT_FILE, self.lm, step=step,
                                       train_config=self.config, optimizer=self.optimizer,
                                       extra=self.extra)  # fmt: skip
                self.result.checkpoint = str(path)
        if self.callback is not None:
            self.callback(metrics)

    def finish(self) -> TrainResult:
        """The result's totals, and ``done.json`` on rank 0."""
        result, tally, out = self.result, self.tally, self.out
        result.elapsed_s = time.perf_counter() - tally.started
        result.tokens_per_s = tally.tokens_total / tally.train_time if tally.train_time > 0 else 0.0
        if out is not None:
            if result.checkpoint is None and (out / CHECKPOINT_FILE).exists():
                result.checkpoint = str(out / CHECKPOINT_FILE)
            done = {**result.summary(), "steps": self.config.steps, "finished_at": time.time()}
            (out / DONE_FILE).write_text(json.dumps(done, indent=2) + "\n")
        return result


def _run_folder(out_dir: str | Path | None, rt: Runtime, start_step: int) -> Path | None:
    """Rank 0's run folder, made, without a previous ``done.json`` (nor, on a fresh start,
    its metrics); None on other ranks and without ``out_dir``."""
    out = Path(out_dir).expanduser() if out_dir is not None and rt.is_main else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / DONE_FILE).unlink(missing_ok=True)
        if start_step == 0:
            (out / METRICS_FILE).unlink(missing_ok=True)
    return out


def _on_device(model: nn.Module, rt: Runtime) -> tuple[ByteLM, nn.Module]:
    """The model on the runtime's device in training mode, and what the loop calls: the model
    itself, or the model in DistributedDataParallel when there are several processes."""
    lm = unwrap(model).to(rt.device)
    lm.train()
    net: nn.Module = lm
    if rt.world_size > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(lm, device_ids=ids)
    if rt.device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    return lm, net


def train(
    model: nn.Module,
    dataset: ByteDataset,
    config: TrainConfig | None = None,
    *,
    callback: Callable[[dict[str, Any]], None] | None = None,
    stop: StopFlag | None = None,
    out_dir: str | Path | None = None,
    start_step: int = 0,
    optimizer_state: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` (a :class:`ByteLM`) on ``dataset`` for ``config.steps`` steps in all.

    Every ``log_interval`` steps (and at the first and the last step) rank 0 calls
    ``callback`` with ``step, loss`` (the mean training loss since the last call, nats per
    byte), ``lr, tokens_per_s, tokens, epochs, elapsed_s`` and ``val_loss`` when evaluated,
    and appends the same line to ``out_dir/metrics.jsonl``. When ``stop.is_set()`` at a
    logged step, training ends there with a checkpoint. ``start_step`` and
    ``optimizer_state`` resume from a checkpoint."""
    config = config or TrainConfig()
    rt = setup(config.device)
    lm, net = _on_device(model, rt)
    optimizer = make_optimizer(lm, config, rt.device)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + rt.rank + start_step)
    autocast = rt.device.type == "cuda" and torch.cuda.is_bf16_supported()
    extra = {"dataset": dataset.describe()}
    out = _run_folder(out_dir, rt, start_step)
    result = TrainResult(start_step, device=str(rt.device), world_size=rt.world_size)
    now = time.perf_counter()
    tally = _Tally(torch.zeros((), device=rt.device), started=now, last=now)
    loop = _Loop(config, rt, lm, net, optimizer, dataset, generator, autocast, result, tally,
                 out, extra, callback, stop)  # fmt: skip
    for step in range(start_step + 1, config.steps + 1):
        loop.step(step)
        final = step == config.steps
        if not (final or step == start_step + 1 or step % max(1, config.log_interval) == 0):
            continue
        # every rank reaches this point at the same steps: the collectives of log match up
        if loop.log(step, final):
            loop.result.stopped = True
            break
    return loop.finish()


def _on(rt: Runtime) -> dict[str, Any]:
    return {"dtype": torch.float64, "device": rt.device}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m factoryhub.helpers.lm.train``."""
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m factoryhub.helpers.lm.train",
        description="Train the byte-level language model (under torchrun: on every process).",
    )
    p.add_argument("--out", required=True, help="run folder: metrics, checkpoint, done.json")
    p.add_argument("--data", default="", help='corpus ("": data-prep output, else built-in)')
    p.add_argument("--size", default="tiny", choices=sorted(SIZES), help="model preset")
    p.add_argument("--layers", type=int, help="override the preset's transformer blocks")
    p.add_argument("--heads", type=int, help="override the preset's attention heads")
    p.add_argument("--embedding", type=int, help="override the preset's embedding size")
    p.add_argument("--context", type=int, help="override the preset's context (bytes)")
    p.add_argument("--dropout", type=float, help="override the preset's dropout")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--lr", dest="learning_rate", type=float, default=d.learning_rate)
    p.add_argument("--warmup", dest="warmup_steps", type=int, default=d.warmup_steps)
    p.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="0: no clipping")
    p.add_argument("--log-interval", type=int, default=d.log_interval)
    p.add_argument("--eval-interval", type=int, default=d.eval_interval, help="0: never")
    p.add_argument("--eval-windows", type=int, default=d.eval_windows)
    p.add_argument("--checkpoint-interval", type=int, default=d.checkpoint_interval)
    p.add_argument("--val-fraction", type=float, default=0.1, help="documents held out")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cuda or cpu")
    p.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint.pt")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or not 0 < args.learning_rate <= 1:
        p.error("--steps and --batch-size must be >= 1 and --lr in (0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    rt = setup(args.device)
    out = Path(args.out).expanduser()
    stop = threading.Event()
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        # Slurm sends SIGTERM at the walltime or on scancel: stop at the next logged step
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    try:
        dataset = ByteDataset.from_source(args.data, args.val_fraction, args.seed)
        start_step, optimizer_state = 0, None
        if args.resume and (out / CHECKPOINT_FILE).exists():
            model, info = load_checkpoint(out / CHECKPOINT_FILE)
            start_step, optimizer_state = int(info["step"]), info.get("optimizer")
        else:
            torch.manual_seed(args.seed)
            sizes = {k: getattr(args, k) for k in ("layers", "heads", "embedding", "context")}
            model = ByteLM(model_config(args.size, dropout=args.dropout, **sizes))

        def report(m: dict[str, Any]) -> None:
            val = f" val_loss {m['val_loss']:.4f}" if "val_loss" in m else ""
            print(f"step {m['step']:>6}/{config.steps} loss {m['loss']:.4f}{val} "
                  f"lr {m['lr']:.2e} {m['tokens_per_s']:,.0f} tokens/s", flush=True)  # fmt: skip

        header = {"model": model.config.to_dict(), "parameters": model.num_parameters(),
                  "train": asdict(config), "data": dataset.describe(), "device": str(rt.device),
                  "world_size": rt.world_size, "start_step": start_step}  # fmt: skip
        if rt.is_main:
            print(json.dumps(header), flush=True)
        result = train(model, dataset, config, callback=report if rt.is_main else None,
                       stop=stop, out_dir=out, start_step=start_step,
                       optimizer_state=optimizer_state)  # fmt: skip
        if rt.is_main:
            print(json.dumps(result.summary()), flush=True)
        if dist.is_initialized():
            # every rank leaves together: a rank that tears its process group down while
            # rank 0 still saves the checkpoint aborts in gloo ("terminate called without an
            # active exception", seen once in CI), and torchrun then fails the whole job
            dist.barrier()
    except Exception as e:
        if rt.is_main:
            out.mkdir(parents=True, exist_ok=True)
            failed = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            (out / DONE_FILE).write_text(json.dumps(failed, indent=2) + "\n")
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
