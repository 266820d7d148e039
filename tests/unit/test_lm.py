"""The byte-level language model of the training templates (factoryhub.helpers.lm): shapes,
training, checkpoints, evaluation, data split, Parquet shards, the command line. Tiny sizes,
CPU only."""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from factoryhub.helpers import lm
from factoryhub.helpers.lm import train as train_module
from factoryhub.helpers.lm.train import TrainConfig, lr_at, train

# Tiny models: one thread computes them faster than a pool of threads that start up and
# contend with the other tests' processes for the cores (5.6 s -> 3.2 s for this module).
torch.set_num_threads(1)

TINY = lm.ModelConfig(layers=1, heads=2, embedding=16, context=16)
TEXTS = [f"Document {i}: " + "the cat sat on the mat. " * 6 for i in range(12)]


def tiny_model(seed: int = 0, config: lm.ModelConfig = TINY) -> lm.ByteLM:
    torch.manual_seed(seed)
    return lm.ByteLM(config)


def quick(**overrides: object) -> TrainConfig:
    values = dict(
        steps=5, batch_size=4, learning_rate=1e-2, warmup_steps=2, log_interval=1,
        eval_interval=0, checkpoint_interval=0, device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def test_model_shapes_and_generation() -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (3, 10))
    logits, loss = model(x)
    assert logits.shape == (3, 10, 256) and loss is None
    logits, loss = model(x, x)
    assert loss is not None and loss.shape == () and 4.5 < loss.item() < 6.5  # ~ln 256
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, TINY.context + 1, dtype=torch.long))
    out = model.generate(x[:1], max_new_tokens=20)  # beyond the context: a sliding window
    assert out.shape == (1, 30) and torch.equal(out[:, :10], x[:1])
    text = model.generate_text("Hé ", max_new_bytes=8, seed=3)
    assert text.startswith("Hé ") and text == model.generate_text("Hé ", 8, seed=3)
    assert model.training  # generate restores the mode
    assert lm.model_config("tiny").layers == lm.SIZES["tiny"].layers
    assert lm.model_config("small", context=32).context == 32
    with pytest.raises(ValueError, match="multiple of heads"):
        lm.ModelConfig(heads=3, embedding=16)
    with pytest.raises(ValueError, match="size must be one of"):
        lm.model_config("huge")


def test_learning_rate_schedule() -> None:
    config = TrainConfig(steps=100, learning_rate=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(99, config) == pytest.approx(0.1, abs=1e-3)
    lrs = [lr_at(s, config) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_training_lowers_the_loss_and_reports() -> None:
    dataset = lm.ByteDataset.from_texts(TEXTS, val_fraction=0.2)
    seen: list[dict] = []
    result = train(
        tiny_model(), dataset, quick(steps=40, log_interval=10, eval_interval=20),
        callback=seen.append,
    )  # fmt: skip
    assert [m["step"] for m in seen] == [1, 10, 20, 30, 40]
    assert seen == result.history
    assert {"step", "loss", "lr", "tokens_per_s", "tokens", "elapsed_s"} <= set(seen[0])
    assert [m["step"] for m in seen if "val_loss" in m] == [20, 40]
    assert seen[-1]["loss"] < 0.6 * seen[0]["loss"]
    assert seen[-1]["val_loss"] < 0.6 * math.log(256)
    assert seen[-1]["tokens"] == 40 * 4 * TINY.context
    summary = result.summary()
    assert summary["status"] == "completed" and summary["step"] == 40
    assert summary["first_loss"] == seen[0]["loss"] and summary["tokens_per_s"] > 0


def test_stop_flag_from_another_thread(tmp_path: Path) -> None:
    dataset = lm.ByteDataset.from_texts(TEXTS)
    stop = threading.Event()
    seen: list[int] = []

    def callback(metrics: dict) -> None:
        seen.append(metrics["step"])
        if metrics["step"] == 3:
            threading.Thread(target=stop.set).start()

    result = train(tiny_model(), dataset, quick(steps=1000), callback=callback, stop=stop,
                   out_dir=tmp_path)  # fmt: skip
    assert result.stopped and 3 < result.step < 10
    assert json.loads((tmp_path / "done.json").read_text())["status"] == "stopped"
    assert lm.load_checkpoint(tmp_path / "checkpoint.pt")[1]["step"] == result.step


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = tiny_model(seed=1)
    x = torch.randint(0, 256, (2, TINY.context))
    path = lm.save_checkpoint(tmp_path / "sub" / "ckpt.pt", model, step=7,
                              train_config=quick(), extra={"note": "hi"})  # fmt: skip
    loaded, info = lm.load_checkpoint(path)
    model.eval()
    assert torch.equal(model(x)[0], loaded(x)[0])
    assert loaded.config == model.config and not loaded.training
    assert info["step"] == 7 and info["train_config"]["batch_size"] == 4 and info["note"] == "hi"
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a factoryhub"):
        lm.load_checkpoint(tmp_path / "other.pt")


def test_evaluate_numbers_are_consistent() -> None:
    docs = [lm.Document(t, lang) for t, lang in zip(TEXTS, ["en", "de"] * 6, strict=True)]
    dataset = lm.ByteDataset(docs, val_fraction=0.3)
    result = lm.evaluate(tiny_model(), dataset, batch_size=3)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert result.bits_per_byte == pytest.approx(result.loss / math.log(2))
    assert 0.0 <= result.accuracy <= 1.0
    assert result.tokens == (len(dataset.val) - 1) // TINY.context * TINY.context
    assert set(result.by_language) == {"en", "de"}
    assert sum(v["tokens"] for v in result.by_language.values()) == result.tokens
    weighted = sum(v["loss"] * v["tokens"] for v in result.by_language.values())
    assert weighted / result.tokens == pytest.approx(result.loss)
    assert len(result.by_position) == TINY.context
    assert sum(result.by_position) / TINY.context == pytest.approx(result.loss)
    assert int(result.document_bytes.sum()) == result.tokens
    json.dumps(result.to_dict())
    limited = lm.evaluate(tiny_model(), dataset, max_windows=1)
    assert limited.tokens == TINY.context


def test_split_is_deterministic_and_per_language() -> None:
    docs = [lm.Document(f"text number {i} " * 3, ["en", "fr", "it"][i % 3]) for i in range(60)]
    train_a, val_a = lm.split_documents(docs, 0.2, seed=5)
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    train_b, val_b = lm.split_documents(shuffled, 0.2, seed=5)
    assert {d.text for d in val_a} == {d.text for d in val_b}
    assert {d.text for d in train_a} == {d.text for d in train_b}
    assert len(val_a) == 12 and len(train_a) == 48
    assert {d.lang for d in val_a} == {"en", "fr", "it"}
    assert {d.text for d in lm.split_documents(docs, 0.2, seed=6)[1]} != {d.text for d in val_a}
    twins = [lm.Document("same"), lm.Document("same"), lm.Document("other")]
    train_t, val_t = lm.split_documents(twins, 0.3)
    assert {d.text for d in train_t}.isdisjoint({d.text for d in val_t})
    train_1, val_1 = lm.split_documents([lm.Document("abcdefghij")], 0.2)
    assert (train_1[0].text, val_1[0].text) == ("abcdefgh", "ij")


def test_builtin_corpus_and_default_source(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert lm.resolve_source("") == lm.BUILTIN_CORPUS
    dataset = lm.ByteDataset.from_source("")
    info = dataset.describe()
    assert set(info["languages"]) == {"en", "de", "fr", "es", "it"}
    assert 30_000 <= info["bytes"]["train"] + info["bytes"]["val"] <= 70_000
    assert set(dataset.val.langs) == set(info["languages"])
    prepared = tmp_path / "factoryhub-data" / "text-corpus"
    prepared.mkdir(parents=True)
    (prepared / "manifest.json").write_text('{"shards": []}')
    assert lm.resolve_source("") == prepared


def test_parquet_shards_via_manifest(tmp_path: Path) -> None:
    frames = [
        pd.DataFrame({"doc_id": [1, 2], "lang": ["en", "de"], "text": ["Hello there.", "Hallo."]}),
        pd.DataFrame({"doc_id": [3], "lang": ["fr"], "text": ["Bonjour à tous."]}),
    ]
    (tmp_path / "shards").mkdir()
    frames[0].to_parquet(tmp_path / "shards" / "a.parquet")
    frames[1].to_parquet(tmp_path / "b.parquet")
    manifest = {"shards": [{"path": "shards/a.parquet"}, {"file": str(tmp_path / "b.parquet")}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    docs = lm.load_documents(tmp_path)
    assert docs == [lm.Document("Hello there.", "en"), lm.Document("Hallo.", "de"),
                    lm.Document("Bonjour à tous.", "fr")]  # fmt: skip
    assert lm.load_documents(tmp_path / "manifest.json") == docs
    assert lm.load_documents(tmp_path / "b.parquet") == docs[2:]
    dataset = lm.ByteDataset.from_source(tmp_path, val_fraction=0.3)
    assert dataset.describe()["documents"] == {"train": 2, "val": 1}
    manifest["shards"].append({"path": "missing.parquet"})
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        lm.load_documents(tmp_path)
    pd.DataFrame({"body": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'text' column"):
        lm.load_documents(tmp_path / "bad.parquet")


def test_batches_are_shifted_windows() -> None:
    dataset = lm.ByteDataset.from_texts(TEXTS)
    x, y = dataset.batch("train", 5, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="fewer than context"):
        dataset.batch("val", 1, 10_000)


def test_command_line_writes_metrics_checkpoint_and_done(tmp_path: Path) -> None:
    data = tmp_path / "corpus.txt"
    data.write_text("\n\n".join(TEXTS))
    out = tmp_path / "run"
    args = ["--out", str(out), "--data", str(data), "--steps", "3", "--batch-size", "2",
            "--size", "tiny", "--context", "16", "--log-interval", "1", "--eval-interval", "3",
            "--checkpoint-interval", "2", "--device", "cpu", "--val-fraction", "0.2"]  # fmt: skip
    assert train_module.main(args) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3] and "val_loss" in lines[-1]
    model, info = lm.load_checkpoint(out / "checkpoint.pt")
    assert info["step"] == 3 and model.config.context == 16
    assert info["train_config"]["steps"] == 3
    done = json.loads((out / "done.json").read_text())
    assert done["status"] == "completed" and done["step"] == 3 and done["steps"] == 3
    assert done["checkpoint"] == str(out / "checkpoint.pt")
    # resume to step 5: the metrics go on from step 4
    assert train_module.main([*args[:5], "5", *args[6:], "--resume"]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4, 5]
    with pytest.raises(SystemExit):
        train_module.parse_args(["--out", str(out), "--steps", "0"])
