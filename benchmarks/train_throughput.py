"""Training throughput of the templates' loop against a plain PyTorch loop. Prints JSON.

Both train the same byte-level model (same preset, same seed, same batches from
``ByteDataset.batch``, same AdamW, bf16 autocast on CUDA in both) for ``--warmup`` steps that
are not timed, then ``--steps`` timed steps:

- ``template``: ``factoryhub.helpers.lm.train.train`` as the notebooks and the batch job run
  it: learning-rate schedule, gradient clipping, a logged step (loss averaged on the device,
  one host sync, a metrics dict handed to a callback) every ``--log-interval`` steps; no
  evaluation, no checkpoint. Timed from the callback of step ``warmup`` to the callback of
  the last step.
- ``plain``: ``zero_grad / forward / backward / step`` and nothing else; one sync at the end.

The two alternate (template first in odd repeats, plain first in even ones) so that drift of
the machine hits both alike; ``--repeats`` of each. Tokens are bytes: ``batch * context``
per step.

    /opt/factoryhub/venv/bin/python -m benchmarks.train_throughput [--size small] [--steps 50]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from benchmarks import cli
from factoryhub.helpers import lm
from factoryhub.helpers.lm.train import TrainConfig, make_optimizer, pick_device, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_template(
    config: lm.ModelConfig, dataset: lm.ByteDataset, args: argparse.Namespace, seed: int
) -> float:
    """Tokens per second of the templates' loop over the timed steps."""
    torch.manual_seed(seed)
    model = lm.ByteLM(config)
    stamps: dict[int, float] = {}
    train_config = TrainConfig(
        steps=args.warmup + args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        log_interval=args.log_interval,
        eval_interval=0,
        checkpoint_interval=0,
        seed=seed,
        device=args.device,
    )

    def stamp(metrics: dict[str, Any]) -> None:
        stamps[metrics["step"]] = time.perf_counter()

    train(model, dataset, train_config, callback=stamp)
    seconds = stamps[args.warmup + args.steps] - stamps[args.warmup]
    return args.steps * args.batch_size * config.context / seconds


def run_plain(
    config: lm.ModelConfig,
    dataset: lm.ByteDataset,
    args: argparse.Namespace,
    seed: int,
    device: torch.device,
) -> float:
    """Tokens per second of a bare loop over the timed steps."""
    torch.manual_seed(seed)
    model = lm.ByteLM(config).to(device)
    model.train()
    optimizer = make_optimizer(model, TrainConfig(learning_rate=args.lr), device)
    generator = torch.Generator().manual_seed(seed)
    autocast = device.type == "cuda" and torch.cuda.is_bf16_supported()
    begun = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync(device)
            begun = time.perf_counter()
        x, y = dataset.batch("train", args.batch_size, config.context, generator, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss.item()  # waits for the device
    seconds = time.perf_counter() - begun
    return args.steps * args.batch_size * config.context / seconds


def stats(samples: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(samples),
        "best": max(samples),
        "worst": min(samples),
        "samples": samples,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = cli.parser(__doc__, prog="python -m benchmarks.train_throughput")
    p.add_argument("--size", default="small", choices=sorted(lm.SIZES), help="model preset")
    p.add_argument("--context", type=int, help="override the preset's context")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=50, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--log-interval", type=int, default=10, help="the template's logging")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--data", default="", help="corpus (default: as the templates)")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        p.error("--warmup, --steps and --repeats must be >= 1")
    if args.warmup % args.log_interval or args.steps % args.log_interval:
        p.error("--warmup and --steps must be multiples of --log-interval (timing points)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    config = lm.model_config(args.size, context=args.context, dropout=0.0)
    dataset = lm.ByteDataset.from_source(args.data)
    template: list[float] = []
    plain: list[float] = []
    begun = time.perf_counter()
    for repeat in range(args.repeats):
        order = ("template", "plain") if repeat % 2 == 0 else ("plain", "template")
        for which in order:
            if which == "template":
                template.append(run_template(config, dataset, args, seed=repeat))
            else:
                plain.append(run_plain(config, dataset, args, seed=repeat, device=device))
            print(f"repeat {repeat + 1}/{args.repeats} {which}: "
                  f"{(template if which == 'template' else plain)[-1]:,.0f} tokens/s",
                  file=sys.stderr, flush=True)  # fmt: skip
    ratio = statistics.median(template) / statistics.median(plain)
    result = {
        "benchmark": "train_throughput",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": "bf16 autocast"
        if device.type == "cuda" and torch.cuda.is_bf16_supported()
        else "fp32",
        "threads": torch.get_num_threads(),
        "model": config.to_dict(),
        "parameters": lm.ByteLM(config).num_parameters(),
        "batch_size": args.batch_size,
        "tokens_per_step": args.batch_size * config.context,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "repeats": args.repeats,
        "template_log_interval": args.log_interval,
        "template_tokens_per_s": stats(template),
        "plain_tokens_per_s": stats(plain),
        "template_over_plain_median": ratio,
        "template_overhead_pct": (1 - ratio) * 100,
        "seconds": time.perf_counter() - begun,
        "metadata": cli.metadata(python=platform.python_version(), torch=torch.__version__),
    }
    return cli.finish(result, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
