"""Byte-level training data: documents from text files, from Parquet shards (with a ``text``
column, as the data-prep template writes them, listed in a ``manifest.json``) or from the
multilingual corpus shipped with this package; a deterministic train/validation split by
document; random training windows and fixed validation windows.

    from factoryhub.helpers.lm.data import ByteDataset
    dataset = ByteDataset.from_source("")  # the data-prep output if any, else the built-in one
    x, y = dataset.batch("train", batch_size=16, context=128)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Where the data-prep template (``text-corpus``) writes its shards and ``manifest.json``.
DEFAULT_DATA_DIR = "~/factoryhub-data/text-corpus"
#: The built-in corpus: one ``<lang>.txt`` file per language, documents separated by blank
#: lines. It makes every template work without any data preparation.
BUILTIN_CORPUS = Path(__file__).resolve().parent / "corpus"
#: Put between documents in the byte stream: the model learns it as "end of document".
SEPARATOR = "\n\n"

_PARAGRAPHS = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Document:
    """One document: its text and a label to break results down by (the ``lang`` column of a
    Parquet shard, or the stem of the text file: ``en`` for ``en.txt``)."""

    text: str
    lang: str = ""


def resolve_source(source: str | Path | None = "") -> Path:
    """Where the data comes from: ``source`` itself (``~`` expanded), or for ``""``/``None``
    the data-prep output (:data:`DEFAULT_DATA_DIR`) when it has a ``manifest.json``, else the
    built-in corpus (:data:`BUILTIN_CORPUS`)."""
    if source:
        return Path(source).expanduser()
    prepared = Path(DEFAULT_DATA_DIR).expanduser()
    if (prepared / "manifest.json").is_file():
        return prepared
    return BUILTIN_CORPUS


def manifest_shards(manifest: str | Path) -> list[Path]:
    """The shard files listed by a ``manifest.json`` (``{"shards": [{"path": ...}, ...]}``;
    ``file`` is accepted for ``path``), relative paths taken from the manifest's folder."""
    manifest = Path(manifest).expanduser()
    if manifest.is_dir():
        manifest = manifest / "manifest.json"
    content = json.loads(manifest.read_text())
    shards = []
    for i, entry in enumerate(content.get("shards", [])):
        name = entry.get("path") or entry.get("file") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name:
            raise ValueError(f"{manifest}: shard {i} has no 'path'")
        path = Path(name).expanduser()
        shards.append(path if path.is_absolute() else manifest.parent / path)
    missing = [str(p) for p in shards if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{manifest} lists shards that do not exist: {missing[:3]}")
    return shards


def _read_parquet(path: Path) -> list[Document]:
    import pyarrow.parquet as pq  # imported here: only needed for Parquet data

    names = pq.read_schema(path).names
    if "text" not in names:
        raise ValueError(f"{path} has no 'text' column (columns: {', '.join(names)})")
    table = pq.read_table(path, columns=["text", "lang"] if "lang" in names else ["text"])
    texts = table.column("text").to_pylist()
    langs = table.column("lang").to_pylist() if "lang" in names else [""] * len(texts)
    return [Document(t, lang or "") for t, lang in zip(texts, langs, strict=True) if t]


def _read_text(path: Path) -> list[Document]:
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    parts = (p.strip() for p in _PARAGRAPHS.split(text))
    return [Document(p, path.stem) for p in parts if p]


def load_documents(source: str | Path | None = "") -> list[Document]:
    """The documents of ``source`` (see :func:`resolve_source`): a folder with a
    ``manifest.json``, a manifest file, a Parquet file, a text file (documents separated by
    blank lines) or a folder of ``.txt``/``.parquet`` files (read in name order)."""
    path = resolve_source(source)
    if path.is_dir():
        if (path / "manifest.json").is_file():
            files = manifest_shards(path)
        else:
            files = sorted(
                p for p in path.rglob("*") if p.suffix in (".txt", ".parquet") and p.is_file()
            )
            if not files:
                raise FileNotFoundError(f"{path} has no manifest.json, .txt or .parquet files")
    elif path.is_file():
        files = manifest_shards(path) if path.suffix == ".json" else [path]
    else:
        raise FileNotFoundError(f"no data at {path}")
    documents: list[Document] = []
    for file in files:
        documents += _read_parquet(file) if file.suffix == ".parquet" else _read_text(file)
    if not documents:
        raise ValueError(f"{path} holds no text")
    return documents


def split_documents(
    documents: Sequence[Document], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """Split into training and validation documents, deterministically: a document's place
    depends only on its text and ``seed`` (not on the order or on the machine), so every
    process of a distributed job, and every later evaluation, sees the same split. Equal texts
    land on the same side. The split is made per label (``lang``): each label with two or more
    documents has at least one on each side. A single document is cut in two at
    ``1 - val_fraction`` of its length."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    docs = list(documents)
    if len(docs) == 1:
        text, cut = docs[0].text, int(len(docs[0].text) * (1 - val_fraction))
        return [Document(text[:cut], docs[0].lang)], [Document(text[cut:], docs[0].lang)]

    def key(doc: Document) -> bytes:
        data = f"{seed}\0{doc.text}".encode("utf-8", errors="replace")
        return hashlib.blake2b(data, digest_size=8).digest()

    keys = [key(d) for d in docs]
    val_keys: set[bytes] = set()
    # per label (language), so that every label with two or more documents is in both parts
    for lang in sorted({d.lang for d in docs}):
        ids = [i for i, d in enumerate(docs) if d.lang == lang]
        if len(ids) >= 2:
            n_val = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
            val_keys |= {keys[i] for i in sorted(ids, key=lambda i: (keys[i], i))[:n_val]}
    if not val_keys:  # no label has two documents
        val_keys = {min(keys)}
    # equal texts have equal keys: they stay together (no validation text seen in training)
    train = [d for d, k in zip(docs, keys, strict=True) if k not in val_keys]
    val = [d for d, k in zip(docs, keys, strict=True) if k in val_keys]
    if not train:  # every document has the same text
        return split_documents([Document(SEPARATOR.join(d.text for d in docs))], val_fraction)
    return train, val


class ByteStream:
    """Documents joined into one byte stream (documents separated by :data:`SEPARATOR`),
    with the start offset and label of each document."""

    def __init__(self, documents: Sequence[Document]) -> None:
        encoded = [(d.text + SEPARATOR).encode("utf-8") for d in documents]
        lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.lengths = lengths
        self.langs = [d.lang for d in documents]
        self.data = torch.from_numpy(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy())

    def __len__(self) -> int:
        return int(self.data.numel())

    def document_of(self, positions: np.ndarray) -> np.ndarray:
        """The index of the document each byte position belongs to."""
        return np.searchsorted(self.offsets, positions, side="right") - 1


class ByteDataset:
    """Training and validation byte streams of one corpus."""

    def __init__(
        self,
        documents: Sequence[Document],
        val_fraction: float = 0.1,
        seed: int = 0,
        source: str = "",
    ) -> None:
        train, val = split_documents(documents, val_fraction, seed)
        self.train, self.val = ByteStream(train), ByteStream(val)
        self.source, self.val_fraction, self.seed = source, val_fraction, seed

    @classmethod
    def from_source(
        cls, source: str | Path | None = "", val_fraction: float = 0.1, seed: int = 0
    ) -> ByteDataset:
        """The dataset of :func:`load_documents` ``(source)``."""
        path = resolve_source(source)
        return cls(load_documents(path), val_fraction, seed, source=str(path))

    @classmethod
    def from_texts(
        cls, texts: Sequence[str], val_fraction: float = 0.1, seed: int = 0
    ) -> ByteDataset:
        """A dataset of in-memory texts (one document each)."""
        return cls([Document(t) for t in texts], val_fraction, seed, source="<texts>")

    def stream(self, split: str) -> ByteStream:
        """The ``"train"`` or ``"val"`` stream."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val

    def batch(
        self,
        split: str,
        batch_size: int,
        context: int,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` random windows of the split: inputs ``x`` and targets ``y`` (``x``
        shifted by one byte), both ``(batch_size, context)`` int64 on ``device``."""
        data = self.stream(split).data
        if len(data) < context + 1:
            raise ValueError(
                f"the {split} data has {len(data)} bytes, fewer than context + 1 = {context + 1}"
            )
        starts = torch.randint(len(data) - context, (batch_size,), generator=generator)
        chunk = data[starts[:, None] + torch.arange(context + 1)].long()
        x, y = chunk[:, :-1], chunk[:, 1:]
        if torch.device(device).type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(
                device, non_blocking=True
            )
        return x.to(device), y.to(device)

    def windows(
        self,
        split: str,
        batch_size: int,
        context: int,
        max_windows: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
        """Fixed, non-overlapping windows over the split (every byte predicted once), in
        batches: ``(x, y, target_positions)``; with ``world_size`` > 1 each rank gets every
        ``world_size``-th window. ``max_windows`` limits the windows (from the start)."""
        stream = self.stream(split)
        count = (len(stream) - 1) // context
        if max_windows is not None:
            count = min(count, max_windows)
        if count == 0:
            raise ValueError(f"the {split} data is shorter than one window of {context} bytes")
        mine = np.arange(rank, count, world_size)
        offsets = torch.arange(context + 1)
        for first in range(0, len(mine), batch_size):
            starts = torch.from_numpy(mine[first : first + batch_size] * context)
            chunk = stream.data[starts[:, None] + offsets].long()
            positions = (starts[:, None] + offsets[1:]).numpy()
            yield chunk[:, :-1], chunk[:, 1:], positions

    def describe(self) -> dict[str, Any]:
        """Documents, bytes and labels per split, and how it was split (for notebooks, logs
        and checkpoints: ``ByteDataset.from_source(d["source"], d["val_fraction"], d["seed"])``
        gives the same split again)."""
        return {
            "source": self.source,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "documents": {"train": len(self.train.langs), "val": len(self.val.langs)},
            "bytes": {"train": len(self.train), "val": len(self.val)},
            "languages": dict(sorted(Counter(self.train.langs + self.val.langs).items())),
        }
