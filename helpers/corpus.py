"""A text corpus for language-model training: a synthetic raw corpus with known defects, and the
steps that clean, deduplicate, tokenize and write it as Parquet shards. Each step is a pure
function of a pandas DataFrame (a partition): ``step(df)`` in pandas, ``ddf.map_partitions(step)``
in Dask. Deduplication needs all documents: a per-partition step computes a small table (hashes,
MinHash signatures) and a second step finds the duplicates on that table."""

from __future__ import annotations

import hashlib
import html
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pl")
VOCAB_SIZE = 256  # byte-level tokens: a document's tokens are its UTF-8 bytes
# Removal reasons in the order the checks run: a document gets the first that applies.
REASONS = ("too_short", "symbol_ratio", "digit_ratio", "repeated_lines", "word_length",
           "uncertain_language", "other_language", "exact_duplicate", "near_duplicate")  # fmt: skip
QUALITY = {"min_words": 20, "max_symbol_ratio": 0.1, "max_digit_ratio": 0.15,
           "max_repeated_line_ratio": 0.3, "max_mean_word_length": 12.0,
           "min_language_score": 0.1}  # fmt: skip
# What the generator injects, and the reason the pipeline should give it ("": kept).
KINDS = {"clean": "", "markup": "", "unicode": "", "exact_duplicate": "exact_duplicate",
         "near_duplicate": "near_duplicate", "too_short": "too_short", "symbols": "symbol_ratio",
         "digits": "digit_ratio", "spam": "repeated_lines", "long_words": "word_length",
         "foreign": "other_language"}  # fmt: skip
SHARES = {"exact_duplicate": 0.08, "near_duplicate": 0.08, "too_short": 0.05, "symbols": 0.02,
          "digits": 0.02, "spam": 0.03, "long_words": 0.02, "markup": 0.06, "unicode": 0.06,
          "foreign": 0.03}  # fmt: skip
_JUNK = ("symbols", "digits", "spam", "long_words")
_STOPWORDS = {lang: frozenset(words.split()) for lang, words in {
    "en": "the and of to is in it that was for with on are this be at by have from not they we",
    "de": "der die das und ist nicht ein eine zu den mit sich auf dem des es von im für auch wir",
    "fr": "le la les et est un une des du que qui dans pour pas sur ce il elle nous au aux avec",
    "es": "el la los las y es un una de del que en por para con no se su al lo como más pero",
    "it": "il lo la i gli le e è un una di del della che in per con non si sono ma come più",
    "nl": "de het een en van is dat die niet op te in met voor zijn er aan ook maar om dan als",
    "pl": "i w z na się nie jest to że do o a od po dla jak ale są był była tak już przez przy",
}.items()}  # fmt: skip
_LETTERS = {"de": "äöüß", "fr": "çœêâîûëô", "es": "ñ¿¡áíú", "it": "ìòù", "pl": "ąęłśźżćń"}
_SPAM = ("Click here to claim your free prize now", "Limited offer, buy now and save big",
         "Subscribe today for exclusive member deals", "Click here to unsubscribe",
         "Best prices online, order today")  # fmt: skip
_HEAD = "<!DOCTYPE html>\n<html><head><style>p { margin: 0 }</style>\n<script>seen = 1;</script>\n"
_GAPS = {"markup": ["&nbsp;"] + [" "] * 4,
         "unicode": ["\t", "\xa0", "\u2003", "\u3000"] + [" "] * 4}  # fmt: skip
_WORD, _SPACE, _DIGIT = re.compile(r"\w+"), re.compile(r"[^\S\n]+"), re.compile(r"\d")
_SYMBOL = re.compile(r"[^\w\s]|_")
_TAGS = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>|<[!/]?[A-Za-z][^>]*>", re.S | re.I)
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u200b-\u200f\u202a-\u202e\ufeff]")


def load_seeds(directory: str | Path = "", languages: Iterable[str] = LANGUAGES) -> dict[str, list]:
    """Seed sentences by language, from ``<lang>.txt`` (one a line) in ``directory``; by default
    ``data/seeds`` or ``notebooks/data-prep/data/seeds`` of the working directory or checkout."""
    checkout = Path(__file__).resolve().parent.parent / "notebooks/data-prep/data/seeds"
    options = (Path("data/seeds"), Path("notebooks/data-prep/data/seeds"), checkout)
    found = [d for d in options if (d / "en.txt").is_file()] or [options[0]]
    folder = Path(directory).expanduser() if directory else found[0]
    lines = {lang: (folder / f"{lang}.txt").read_text("utf-8").splitlines() for lang in languages}
    return {k: [unicodedata.normalize("NFKC", s).strip() for s in v if s.strip()]
            for k, v in lines.items()}  # fmt: skip


def plan_corpus(n_docs: int, *, seed: int = 0, languages: Sequence[str] = LANGUAGES[:6],
                foreign: Sequence[str] = ("pl",), shares: Mapping[str, float] | None = None
                ) -> pd.DataFrame:  # fmt: skip
    """The ground truth: ``doc_id, kind, lang, source_id, expected_reason``. Each injected kind
    gets ``round(share * n_docs)`` documents (default :data:`SHARES`); ``foreign`` ones are in a
    language not kept. A duplicate's source is a clean document with a smaller id; no two near
    duplicates share one (so they never equal each other)."""
    rng = np.random.default_rng([seed, 0])
    kinds, order, pos = np.full(n_docs, "clean", dtype=object), rng.permutation(n_docs), 0
    for kind, share in {**SHARES, **(shares or {})}.items():
        count = min(round(share * n_docs), n_docs - pos)
        kinds[order[pos : pos + count]], pos = kind, pos + count
    lang = rng.choice(np.asarray(languages, dtype=object), n_docs)
    lang[kinds == "foreign"] = rng.choice(list(foreign), (kinds == "foreign").sum())
    lang[np.isin(kinds, _JUNK)] = ""
    source, near = np.full(n_docs, -1), np.flatnonzero(kinds == "near_duplicate")
    pick = rng.choice(np.flatnonzero(kinds == "clean"), len(near), replace=False)
    low, high = np.minimum(near, pick), np.maximum(near, pick)  # the source comes first
    kinds[low], kinds[high], source[high] = "clean", "near_duplicate", low
    clean, exact = np.flatnonzero(kinds == "clean"), np.flatnonzero(kinds == "exact_duplicate")
    before = np.searchsorted(clean, exact)  # how many clean documents come first
    kinds[exact[before == 0]] = "clean"
    source[exact[before > 0]] = clean[(rng.random(len(exact)) * before).astype(int)][before > 0]
    lang[source >= 0] = lang[source[source >= 0]]
    return pd.DataFrame({"doc_id": np.arange(n_docs), "kind": kinds.astype(str),
                         "lang": lang.astype(str), "source_id": source,
                         "expected_reason": [KINDS[k] for k in kinds]})  # fmt: skip


def _original(sentences: Sequence[str], seed: int, doc_id: int) -> str:
    """A clean document: 5 to 12 distinct sentences, in paragraphs (lines) of 1 to 4."""
    rng = np.random.default_rng([seed, doc_id])
    picked = [sentences[i] for i in rng.choice(len(sentences), rng.integers(5, 13), replace=False)]
    ends = [*(int(c) for c in np.cumsum(rng.integers(1, 5, len(picked))) if c < len(picked)), None]
    return "\n".join(" ".join(picked[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True))


def _near(text: str, rng: np.random.Generator, vocab: Sequence[str]) -> str:
    """One small edit (another word, a comma, upper case), sometimes with trailing spaces."""
    li = int(rng.integers(len(lines := text.split("\n"))))
    words = lines[li].split(" ")
    j = int(rng.choice([j for j, w in enumerate(words[:-1]) if w.isalpha() and len(w) > 2]))
    edit, old = rng.choice(["word", "comma", "case"]), words[j]
    new = str(rng.choice([w for w in vocab if w != old.lower()]))
    new = (new.capitalize() if old[0].isupper() else new) if edit == "word" else old.upper()
    words[j] = old + "," if edit == "comma" else new
    lines[li] = " ".join(words) + ("  " if rng.random() < 0.5 else "")
    return "\n".join(lines)


def _noisy(text: str, kind: str, rng: np.random.Generator) -> str:
    """The document as an HTML page (tags, entities, script, style, comment) or with odd
    Unicode (full-width forms, ligatures, decomposed accents, control and invisible characters,
    odd whitespace, Windows line ends): :func:`normalise_text` gives the document back."""
    if kind == "markup":
        text = html.escape(text, quote=False).replace("'", "&#39;")
    out, text = [], text.replace("fi", "\ufb01") if kind == "unicode" else text
    for line in text.split("\n"):
        words, r = line.split(" "), rng.random(len(line.split(" ")))
        for j, w in enumerate(words):
            if kind == "markup" and r[j] < 0.1:
                words[j] = f"<b>{w}</b>"
            elif kind == "unicode" and r[j] < 0.1:
                words[j] = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in w)
            elif kind == "unicode" and r[j] < 0.2:
                words[j] = unicodedata.normalize("NFD", w)
            elif kind == "unicode" and r[j] < 0.3 and len(w) > 3:
                words[j] = w[:2] + str(rng.choice(["\u200b", "\x07", "\u00ad", "\x1b"])) + w[2:]
        gaps = rng.choice(_GAPS[kind], len(words))
        out.append("".join(w + g for w, g in zip(words, gaps, strict=True)))
    if kind == "markup":
        return _HEAD + "<body>" + "".join(f"<p>{s}</p>\n" for s in out) + "<!-- end --></body>"
    return "\ufeff" + "\r\n".join(out) + "\x0c"


def _junk(kind: str, rng: np.random.Generator, vocab: Sequence[str]) -> str:
    """Boilerplate or junk: symbol runs, numbers, repeated spam lines or letter salad."""
    if kind == "spam":
        return "\n".join(rng.permutation(list(rng.choice(_SPAM, 3, replace=False)) * 4))
    tokens, letters = [], list("abcdefghijklmnopqrstuvwxyz")
    for r in rng.random(int(rng.integers(30, 60))):
        if kind == "symbols" and r < 0.6:
            tokens.append("".join(rng.choice(list("#$%*+=~^|@"), rng.integers(2, 6))))
        elif kind == "digits" and r < 0.7:
            tokens.append(str(rng.integers(10, 10 ** int(rng.integers(2, 9)))))
        elif kind == "long_words":
            tokens.append("".join(rng.choice(letters, rng.integers(13, 30))))
        else:
            tokens.append(str(rng.choice(vocab)))
    return "\n".join(" ".join(tokens[i : i + 8]) for i in range(0, len(tokens), 8))


def generate_documents(plan: pd.DataFrame, sentences: Mapping[str, Sequence[str]],
                       *, seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """The raw documents (``doc_id, text``) of rows of :func:`plan_corpus`. A document depends
    only on the seed and its row: partitions can be generated anywhere, in any order."""
    words = {k: {w.lower() for s in v for w in _WORD.findall(s)} for k, v in sentences.items()}
    vocab = {k: sorted(w for w in v if w.isalpha() and len(w) > 2) for k, v in words.items()}
    everything, texts = sorted({w for ws in vocab.values() for w in ws}), []
    for doc_id, kind, lang, source in plan[["doc_id", "kind", "lang", "source_id"]].to_numpy():
        rng = np.random.default_rng([seed, doc_id, 1])
        if kind == "too_short":
            text = " ".join(str(rng.choice(sentences[lang])).split()[: rng.integers(3, 13)])
        elif kind in _JUNK:
            text = _junk(kind, rng, everything)
        else:
            text = _original(sentences[lang], seed, source if source >= 0 else doc_id)
            text = _near(text, rng, vocab[lang]) if kind == "near_duplicate" else text
            text = _noisy(text, kind, rng) if kind in ("markup", "unicode") else text
        texts.append(text)
    return pd.DataFrame({"doc_id": plan["doc_id"].to_numpy(np.int64), "text": texts})


def generate_corpus(
    n_docs: int, *, seed: int = 0, sentences: Mapping[str, Sequence[str]] | None = None, **plan: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(documents, ground_truth)`` in one go, in pandas (``plan``: see :func:`plan_corpus`)."""
    truth = plan_corpus(n_docs, seed=seed, **plan)
    return generate_documents(truth, sentences or load_seeds(), seed=seed), truth


def normalise_text(text: str) -> str:
    """Markup out (entities decoded), NFKC, control/invisible characters out, spaces collapsed."""
    text = unicodedata.normalize("NFKC", html.unescape(_TAGS.sub(" ", text)))
    text = _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = (_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """The partition with its ``text`` normalised (:func:`normalise_text`)."""
    texts = [normalise_text(t) for t in df["text"].fillna("")]
    return df.assign(text=pd.Series(texts, index=df.index, dtype=df["text"].dtype))


def identify_language(text: str, languages: Iterable[str] = LANGUAGES) -> tuple[str, float]:
    """The likeliest language and its score: the share of words that are its stopwords, plus half
    a point for each of its own letters (ä, ñ, ł, ...), at most 1."""
    words = _WORD.findall(lower := text.lower())
    letters = {lang: sum(map(lower.count, _LETTERS.get(lang, ""))) for lang in languages}
    hits = {lang: sum(w in _STOPWORDS[lang] for w in words) + letters[lang] / 2 for lang in letters}
    best = max(hits, key=hits.__getitem__)
    return (best, min(1.0, hits[best] / len(words))) if words else ("", 0.0)


def quality_signals(text: str) -> dict[str, float]:
    """Words; shares of symbols, digits (of non-space characters), repeated lines; word length."""
    words, lines = text.split(), [line for line in text.split("\n") if line.strip()]
    chars = max(1, sum(map(len, words)))
    return {"n_words": len(words), "symbol_ratio": len(_SYMBOL.findall(text)) / chars,
            "digit_ratio": len(_DIGIT.findall(text)) / chars,
            "repeated_line_ratio": 1 - len(set(lines)) / len(lines) if lines else 0.0,
            "mean_word_length": chars / len(words) if words else 0.0}  # fmt: skip


def flag(df: pd.DataFrame, *, languages: Iterable[str] = LANGUAGES[:6], **limits: float
         ) -> pd.DataFrame:  # fmt: skip
    """The partition with its quality signals, ``lang``, ``lang_score`` and ``reason``: the first
    check failed, in :data:`REASONS` order, or "" (kept). ``limits``: see :data:`QUALITY`."""
    q, columns, texts = {**QUALITY, **limits}, list(quality_signals("")), df["text"].fillna("")
    signals = pd.DataFrame([quality_signals(t) for t in texts], df.index, columns)
    found = pd.DataFrame([identify_language(t) for t in texts], df.index, ["lang", "score"])
    out = df.assign(**signals.astype("float64").astype({"n_words": "int64"}))
    out = out.assign(lang=found["lang"].astype("str"), lang_score=found["score"].astype(float))
    checks = [out["n_words"] < q["min_words"], out["symbol_ratio"] > q["max_symbol_ratio"],
              out["digit_ratio"] > q["max_digit_ratio"],
              out["repeated_line_ratio"] > q["max_repeated_line_ratio"],
              out["mean_word_length"] > q["max_mean_word_length"],
              out["lang_score"] < q["min_language_score"],
              ~out["lang"].isin(list(languages))]  # fmt: skip
    reason = np.select([c.to_numpy(bool) for c in checks], list(REASONS[:7]), default="")
    return out.assign(reason=pd.Series(reason, index=df.index, dtype="str"))


def text_hashes(df: pd.DataFrame) -> pd.DataFrame:
    """``doc_id, hash``: a 64-bit BLAKE2b hash of each text."""
    texts = df["text"].fillna("")
    digests = b"".join(hashlib.blake2b(t.encode(), digest_size=8).digest() for t in texts)
    hashes = np.frombuffer(digests, dtype=np.uint64)
    return pd.DataFrame({"doc_id": df["doc_id"].to_numpy(np.int64), "hash": hashes})


def exact_duplicates(hashes: pd.DataFrame) -> pd.DataFrame:
    """``doc_id, duplicate_of``: each document whose hash a smaller ``doc_id`` has too."""
    first = hashes.groupby("hash")["doc_id"].transform("min")
    out = hashes[["doc_id"]].assign(duplicate_of=first)[hashes["doc_id"] != first]
    return out.astype("int64").sort_values("doc_id", ignore_index=True)


def minhash_signatures(df: pd.DataFrame, *, num_perm: int = 128, shingle_size: int = 3,
                       seed: int = 1) -> pd.DataFrame:  # fmt: skip
    """``doc_id, m000 ... m{num_perm-1}``: the MinHash signature of each document's shingles
    (``shingle_size`` consecutive lowercase words, punctuation ignored; fewer words: one
    shingle). Hash function k is ``(a_k * x + b_k) >> 32`` of a shingle's 64-bit hash x;
    signature entry k is its minimum over the document's shingles (all ones: no words)."""
    rng, k = np.random.default_rng(seed), shingle_size
    a = rng.integers(0, 2**64, num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
    b = rng.integers(0, 2**64, num_perm, dtype=np.uint64, endpoint=False)
    words = [_WORD.findall(t.lower()) for t in df["text"].fillna("")]
    shingles = [[" ".join(w[i : i + k]) for i in range(max(1, len(w) - k + 1))] if w else []
                for w in words]  # fmt: skip
    counts = np.array([len(s) for s in shingles], dtype=np.int64)
    hashes = pd.util.hash_array(np.array([s for ss in shingles for s in ss] + [""], dtype=object))
    sig = np.full((len(df), num_perm), 0xFFFFFFFF, dtype=np.uint32)
    docs = np.flatnonzero(counts)
    offsets, i = np.concatenate([[0], np.cumsum(counts[docs])]), 0
    while i < len(docs):  # about 2**15 shingles at a time: a (num_perm x 2**15) matrix
        j = min(len(docs), max(i + 1, int(np.searchsorted(offsets, offsets[i] + 2**15)) - 1))
        h = (a[:, None] * hashes[None, offsets[i] : offsets[j]] + b[:, None]) >> np.uint64(32)
        sig[docs[i:j]] = np.minimum.reduceat(h.astype(np.uint32), offsets[i:j] - offsets[i], 1).T
        i = j
    out = pd.DataFrame(sig, columns=[f"m{k:03d}" for k in range(num_perm)], index=df.index)
    return out.assign(doc_id=df["doc_id"].to_numpy(np.int64))[["doc_id", *out.columns]]


def near_duplicates(signatures: pd.DataFrame, *, bands: int = 32, threshold: float = 0.75
                    ) -> pd.DataFrame:  # fmt: skip
    """``doc_id, duplicate_of, similarity`` from :func:`minhash_signatures`. LSH: documents equal
    on one of ``bands`` bands of ``r = num_perm / bands`` values are candidates (chance ``1 - (1 -
    J**r)**bands`` at Jaccard similarity J), kept when the share of equal values is at least
    ``threshold``. All but the smallest ``doc_id`` of each connected cluster are duplicates."""
    table = signatures.sort_values("doc_id", ignore_index=True)
    sig = table.drop(columns="doc_id").to_numpy(np.uint32)
    n, r = len(sig), sig.shape[1] // bands
    valid, pairs = np.flatnonzero((sig != 0xFFFFFFFF).any(axis=1)), [np.zeros((0, 2), np.int64)]
    for band in range(bands if len(valid) else 0):
        _, group = np.unique(sig[valid, band * r : (band + 1) * r], axis=0, return_inverse=True)
        first = np.full(group.max() + 1, n, dtype=np.int64)
        np.minimum.at(first, group.ravel(), valid)
        lead = first[group.ravel()]
        pairs.append(np.stack([lead, valid], axis=1)[lead != valid])
    u, v = np.unique(np.concatenate(pairs), axis=0).T
    similarity = (sig[u] == sig[v]).mean(axis=1)
    u, v, similarity = (x[similarity >= threshold] for x in (u, v, similarity))
    labels = np.arange(n)
    while True:  # min-label propagation with pointer jumping: labels become cluster minima
        new, low = labels.copy(), np.minimum(labels[u], labels[v])
        np.minimum.at(new, np.concatenate([u, v]), np.concatenate([low, low]))
        if np.array_equal(new := new[new], labels):
            break
        labels = new
    dup, ids = np.flatnonzero(labels != np.arange(n)), table["doc_id"].to_numpy(np.int64)
    best = pd.Series(similarity, index=v).groupby(level=0).max().reindex(dup).to_numpy(float)
    return pd.DataFrame({"doc_id": ids[dup], "duplicate_of": ids[labels[dup]], "similarity": best})


def drop_ids(df: pd.DataFrame, ids: Iterable[int]) -> pd.DataFrame:
    """The partition without the documents whose ``doc_id`` is in ``ids``."""
    return df[~df["doc_id"].isin(np.fromiter(ids, dtype=np.int64))]


def encode(text: str) -> np.ndarray:
    """Byte-level tokens: the UTF-8 bytes of the text (a vocabulary of :data:`VOCAB_SIZE`)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def decode(tokens: Sequence[int] | np.ndarray) -> str:
    """The text of byte-level tokens (the inverse of :func:`encode`)."""
    return np.asarray(tokens, dtype=np.uint8).tobytes().decode("utf-8")


def tokenize(df: pd.DataFrame) -> pd.DataFrame:
    """The partition with ``tokens``: how many byte-level tokens each text has."""
    counts = [len(t.encode("utf-8")) for t in df["text"].fillna("")]
    return df.assign(tokens=pd.Series(counts, index=df.index, dtype="int64"))


def write_shard(df: pd.DataFrame, directory: str | Path, index: int) -> dict[str, Any]:
    """Write ``shard-{index:05d}.parquet`` (``doc_id, lang, text, tokens``) and describe it:
    ``file, rows, tokens, bytes`` (of the file), ``sha256`` (of the file), ``languages``."""
    path = Path(directory).expanduser() / f"shard-{index:05d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = df[["doc_id", "lang", "text", "tokens"]].reset_index(drop=True)
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False), path, compression="zstd")
    content, langs = path.read_bytes(), data["lang"].value_counts().sort_index()
    return {"file": path.name, "rows": len(data), "tokens": int(data["tokens"].sum()),
            "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
            "languages": {str(k): int(v) for k, v in langs.items()}}  # fmt: skip


def write_manifest(
    directory: str | Path, shards: Iterable[dict], removed: Mapping[str, int], parameters: dict
) -> dict[str, Any]:
    """Write ``manifest.json`` next to the shards and return it: the tokenizer, the shards (see
    :func:`write_shard`), totals, documents in, removals by reason, the run's parameters."""
    folder, shards = Path(directory).expanduser(), sorted(shards, key=lambda s: s["file"])
    langs = dict(sorted(sum((Counter(s["languages"]) for s in shards), Counter()).items()))
    totals = {key: sum(s[key] for s in shards) for key in ("rows", "tokens", "bytes")}
    manifest = {"format": "factoryhub-text-corpus/1", "shards": shards,
                "tokenizer": {"kind": "bytes", "encoding": "utf-8", "vocab_size": VOCAB_SIZE},
                "totals": {"shards": len(shards), **totals, "languages": langs},
                "documents_in": totals["rows"] + sum(removed.values()),
                "removed": {r: int(removed.get(r, 0)) for r in REASONS},
                "parameters": dict(parameters)}  # fmt: skip
    for stale in set(folder.glob("shard-*.parquet")) - {folder / s["file"] for s in shards}:
        stale.unlink()  # left by an earlier run with more shards
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def removal_report(removed: Mapping[str, int], documents_in: int) -> pd.DataFrame:
    """``reason, documents, share`` (of the documents in), in :data:`REASONS` order."""
    rows = [(r, int(removed[r])) for r in REASONS if removed.get(r, 0)]
    report = pd.DataFrame(rows, columns=["reason", "documents"])
    return report.assign(share=report["documents"] / max(1, documents_in))


def run_pipeline(docs: pd.DataFrame, **options: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pipeline in pandas, the steps the notebook runs on Dask: ``(kept, removed)``, removed
    being ``doc_id, reason, duplicate_of`` (-1: not a duplicate). ``options``: of :func:`flag`,
    :func:`minhash_signatures` (``num_perm, shingle_size``) and :func:`near_duplicates`."""

    hashing = {k: options.pop(k) for k in ["num_perm", "shingle_size"] if k in options}
    banding = {k: options.pop(k) for k in ["bands", "threshold"] if k in options}
    flagged = flag(normalise(docs), **options)
    kept = flagged[flagged["reason"] == ""]
    exact = exact_duplicates(text_hashes(kept)).assign(reason="exact_duplicate")
    kept = drop_ids(kept, exact["doc_id"])
    sigs = minhash_signatures(kept, **hashing)
    near = near_duplicates(sigs, **banding).assign(reason="near_duplicate")
    rest = flagged.loc[flagged["reason"] != "", ["doc_id", "reason"]].assign(duplicate_of=-1)
    removed = pd.concat([rest, exact, near.drop(columns="similarity")], ignore_index=True)
    kept, removed = tokenize(drop_ids(kept, near["doc_id"])), removed.sort_values("doc_id")
    return kept, removed.reset_index(drop=True)
