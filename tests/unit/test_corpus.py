"""The text-corpus helpers: the generator's ground truth, and the pipeline removing what it
injected (and nothing else), in pandas, whole and partition by partition."""

from __future__ import annotations

import hashlib
import itertools
import json
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factoryhub.helpers import corpus

N_DOCS = 800
SEED = 11


def split(df: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    edges = np.linspace(0, len(df), n + 1).astype(int)
    return [df.iloc[a:b] for a, b in itertools.pairwise(edges)]


@pytest.fixture(scope="module")
def sentences() -> dict[str, list[str]]:
    return corpus.load_seeds()


@pytest.fixture(scope="module")
def generated(sentences: dict[str, list[str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return corpus.generate_corpus(N_DOCS, seed=SEED, sentences=sentences)


@pytest.fixture(scope="module")
def result(generated: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    docs, _ = generated
    return corpus.run_pipeline(docs)


def test_seeds_are_shipped_for_every_language(sentences: dict[str, list[str]]) -> None:
    assert set(sentences) == set(corpus.LANGUAGES)
    for lang, lines in sentences.items():
        assert 60 <= len(lines) <= 100, lang
        assert len(set(lines)) == len(lines), lang
        assert all(unicodedata.is_normalized("NFKC", s) for s in lines), lang


def test_the_generator_is_deterministic(
    sentences: dict[str, list[str]], generated: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    docs, truth = generated
    again_docs, again_truth = corpus.generate_corpus(N_DOCS, seed=SEED, sentences=sentences)
    pd.testing.assert_frame_equal(docs, again_docs)
    pd.testing.assert_frame_equal(truth, again_truth)
    other, _ = corpus.generate_corpus(N_DOCS, seed=SEED + 1, sentences=sentences)
    assert (other["text"] != docs["text"]).mean() > 0.9
    # A partition generated on its own is the same as the matching rows of the whole.
    part = corpus.generate_documents(truth.iloc[300:420], sentences, seed=SEED)
    pd.testing.assert_frame_equal(part, docs.iloc[300:420].reset_index(drop=True))


def test_the_ground_truth_has_the_injected_amounts(
    generated: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    docs, truth = generated
    assert list(docs["doc_id"]) == list(range(N_DOCS)) == list(truth["doc_id"])
    counts = truth["kind"].value_counts()
    for kind, share in corpus.SHARES.items():
        assert counts[kind] == round(share * N_DOCS), kind
    assert counts["clean"] == N_DOCS - sum(round(s * N_DOCS) for s in corpus.SHARES.values())
    assert (truth["expected_reason"] == truth["kind"].map(corpus.KINDS)).all()
    dups = truth[truth["source_id"] >= 0]
    assert set(dups["kind"]) == {"exact_duplicate", "near_duplicate"}
    sources = truth.set_index("doc_id").loc[dups["source_id"]]
    assert (sources["kind"] == "clean").all()
    assert (dups["source_id"] < dups["doc_id"]).all()
    assert (sources["lang"].to_numpy() == dups["lang"].to_numpy()).all()
    near = dups[dups["kind"] == "near_duplicate"]
    assert near["source_id"].is_unique
    assert set(truth.loc[truth["kind"] == "foreign", "lang"]) == {"pl"}
    text = docs.set_index("doc_id")["text"]
    exact = dups[dups["kind"] == "exact_duplicate"]
    assert (text[exact["doc_id"]].to_numpy() == text[exact["source_id"]].to_numpy()).all()
    assert (text[near["doc_id"]].to_numpy() != text[near["source_id"]].to_numpy()).all()


def test_the_pipeline_removes_exactly_what_was_injected(
    generated: tuple[pd.DataFrame, pd.DataFrame], result: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, truth = generated
    kept, removed = result
    assert removed["doc_id"].is_unique
    actual = truth.merge(removed, on="doc_id", how="left").fillna({"reason": ""})
    wrong = actual[actual["reason"] != actual["expected_reason"]]
    assert wrong.empty, wrong[["doc_id", "kind", "expected_reason", "reason"]]
    assert set(kept["doc_id"]) == set(truth.loc[truth["expected_reason"] == "", "doc_id"])
    assert (kept["tokens"] == kept["text"].str.encode("utf-8").str.len()).all()


def test_duplicates_point_at_their_source(
    generated: tuple[pd.DataFrame, pd.DataFrame], result: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, truth = generated
    _, removed = result
    for kind in ("exact_duplicate", "near_duplicate"):
        expected = truth.loc[truth["kind"] == kind, ["doc_id", "source_id"]]
        found = removed.loc[removed["reason"] == kind, ["doc_id", "duplicate_of"]]
        assert len(found) == len(expected) > 0, kind
        pairs = expected.merge(found, on="doc_id")
        assert (pairs["source_id"] == pairs["duplicate_of"]).all(), kind


def test_near_duplicate_similarity_is_far_from_the_threshold(
    generated: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """MinHash is an estimate: the generated near duplicates sit well above the threshold and
    unrelated documents well below, so the result does not hinge on a few hash values."""
    docs, truth = generated
    flagged = corpus.flag(corpus.normalise(docs))
    kept = flagged[flagged["reason"] == ""]
    kept = corpus.drop_ids(kept, corpus.exact_duplicates(corpus.text_hashes(kept))["doc_id"])
    every_candidate = corpus.near_duplicates(corpus.minhash_signatures(kept), threshold=0.0)
    is_near = every_candidate["doc_id"].isin(truth.loc[truth["kind"] == "near_duplicate", "doc_id"])
    assert every_candidate.loc[is_near, "similarity"].min() >= 0.85
    assert every_candidate.loc[~is_near, "similarity"].max() <= 0.6


def test_the_steps_give_the_same_answer_partition_by_partition(
    generated: tuple[pd.DataFrame, pd.DataFrame], result: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """What Dask does: per-partition steps, small tables combined, duplicates dropped."""
    docs, _ = generated
    kept_whole, removed_whole = result
    parts = [corpus.flag(corpus.normalise(p)) for p in split(docs, 3)]
    parts = [p[p["reason"] == ""] for p in parts]
    exact = corpus.exact_duplicates(pd.concat([corpus.text_hashes(p) for p in parts]))
    parts = [corpus.drop_ids(p, exact["doc_id"]) for p in parts]
    sigs = pd.concat([corpus.minhash_signatures(p) for p in parts])
    near = corpus.near_duplicates(sigs)
    parts = [corpus.tokenize(corpus.drop_ids(p, near["doc_id"])) for p in parts]
    pd.testing.assert_frame_equal(pd.concat(parts), kept_whole)
    whole = removed_whole.set_index("doc_id")
    assert set(exact["doc_id"]) == set(whole.index[whole["reason"] == "exact_duplicate"])
    assert set(near["doc_id"]) == set(whole.index[whole["reason"] == "near_duplicate"])


def test_normalise_undoes_markup_and_odd_unicode(
    sentences: dict[str, list[str]], generated: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    docs, truth = generated
    noisy = truth[truth["kind"].isin(["markup", "unicode"])]
    plain = corpus.generate_documents(noisy.assign(kind="clean"), sentences, seed=SEED)
    normalised = corpus.normalise(docs.set_index("doc_id").loc[noisy["doc_id"]].reset_index())
    assert (normalised["text"].to_numpy() == plain["text"].to_numpy()).all()
    assert corpus.normalise(plain).equals(plain)  # clean documents are left as they are
    text = (
        "\ufeff<html><head><style>p {}</style><script>x = 1;</script></head><body>"
        "<p>Caf\u0065\u0301&nbsp;&amp; \uff54\uff48é\u200b\x07 \ufb01ne<!-- c --></p>"
        "\r\n\r\n<p> a\t\u3000b </p>"
    )
    assert corpus.normalise_text(text) == "Café & thé fine\na b"


@pytest.mark.parametrize("lang", corpus.LANGUAGES)
def test_language_identification_over_the_shipped_languages(
    sentences: dict[str, list[str]], lang: str
) -> None:
    for start in range(0, 60, 5):
        found, score = corpus.identify_language(" ".join(sentences[lang][start : start + 5]))
        assert found == lang and score >= 0.15, (lang, start, found, score)
    assert corpus.identify_language("") == ("", 0.0)
    assert corpus.identify_language("xyzzy qwrtp")[1] == 0.0


def test_quality_reasons() -> None:
    good = "The river was calm and the boats waited in the harbour for the wind to turn. " * 3
    texts = {
        "": good,
        "too_short": "The boats are in the harbour.",
        "symbol_ratio": good + " ".join(["### $$$ %%% ***"] * 10),
        "digit_ratio": good + " ".join(["2024 31337 4096 65536"] * 10),
        "repeated_lines": "\n".join(["Click here to win a prize today and every day"] * 5),
        "word_length": " ".join(["supercalifragilisticexpialidocious"] * 25),
        "uncertain_language": " ".join(["xyzzy qwrtp blorf"] * 10),
        "other_language": "Dzieci zbudowały z drewnianych klocków wieżę, która jest już "
        "wyższa niż stół, i teraz są bardzo dumne, że to się udało bez pomocy.",
    }
    df = pd.DataFrame({"doc_id": range(len(texts)), "text": list(texts.values())})
    flagged = corpus.flag(df)
    assert list(flagged["reason"]) == list(texts)
    assert flagged.loc[0, "lang"] == "en" and flagged.loc[7, "lang"] == "pl"
    keep_polish = corpus.flag(df.iloc[[7]], languages=["pl"])
    assert keep_polish["reason"].iloc[0] == ""
    lenient = corpus.flag(df.iloc[[1]], min_words=3)
    assert lenient["reason"].iloc[0] == ""
    assert corpus.flag(df.iloc[:0]).columns.tolist() == flagged.columns.tolist()


def test_byte_tokens_round_trip() -> None:
    text = "Grüße, ½ ĳ 東京 🙂\nend"
    ids = corpus.encode(text)
    assert ids.dtype == np.uint8 and len(ids) == len(text.encode("utf-8"))
    assert int(ids.max()) < corpus.VOCAB_SIZE == 256
    assert corpus.decode(ids) == text
    assert corpus.decode(list(ids)) == text
    counted = corpus.tokenize(pd.DataFrame({"doc_id": [1], "text": [text]}))
    assert counted["tokens"].tolist() == [len(ids)]


def test_shards_and_manifest(result: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    kept, removed = result
    (tmp_path / "shard-00009.parquet").write_bytes(b"left by an earlier run")
    parts = split(kept, 3)
    shards = [corpus.write_shard(part, tmp_path, i) for i, part in enumerate(parts)]
    counts = removed["reason"].value_counts().to_dict()
    manifest = corpus.write_manifest(tmp_path, reversed(shards), counts, {"seed": SEED})
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "shard-00000.parquet",
        "shard-00001.parquet",
        "shard-00002.parquet",
    ]
    assert manifest["tokenizer"] == {"kind": "bytes", "encoding": "utf-8", "vocab_size": 256}
    assert [s["file"] for s in manifest["shards"]] == [f"shard-{i:05d}.parquet" for i in range(3)]
    for shard, part in zip(manifest["shards"], parts, strict=True):
        content = (tmp_path / shard["file"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(content).hexdigest()
        assert shard["bytes"] == len(content)
        back = pd.read_parquet(tmp_path / shard["file"])
        assert list(back.columns) == ["doc_id", "lang", "text", "tokens"]
        assert back["doc_id"].tolist() == part["doc_id"].tolist()
        assert back["text"].tolist() == part["text"].tolist()
        assert shard["rows"] == len(part) and shard["tokens"] == int(part["tokens"].sum())
        assert shard["languages"] == part["lang"].value_counts().sort_index().to_dict()
    totals = manifest["totals"]
    assert totals["rows"] == len(kept) and totals["tokens"] == int(kept["tokens"].sum())
    assert totals["shards"] == 3
    assert totals["bytes"] == sum(s["bytes"] for s in manifest["shards"])
    assert totals["languages"] == kept["lang"].value_counts().sort_index().to_dict()
    assert manifest["documents_in"] == N_DOCS
    assert list(manifest["removed"]) == list(corpus.REASONS)
    assert sum(manifest["removed"].values()) == len(removed)
    assert manifest["parameters"] == {"seed": SEED}


def test_removal_report() -> None:
    report = corpus.removal_report({"near_duplicate": 5, "too_short": 15, "digit_ratio": 0}, 100)
    assert report.to_dict("list") == {
        "reason": ["too_short", "near_duplicate"],
        "documents": [15, 5],
        "share": [0.15, 0.05],
    }


def test_steps_accept_empty_partitions_and_missing_text() -> None:
    empty = pd.DataFrame({"doc_id": pd.Series(dtype="int64"), "text": pd.Series(dtype="str")})
    assert corpus.minhash_signatures(empty).shape == (0, 129)
    assert corpus.near_duplicates(corpus.minhash_signatures(empty)).empty
    assert corpus.exact_duplicates(corpus.text_hashes(empty)).empty
    missing = pd.DataFrame({"doc_id": [1, 2], "text": pd.Series([None, "a b"], dtype="str")})
    assert corpus.flag(corpus.normalise(missing))["reason"].tolist() == ["too_short"] * 2
    assert corpus.tokenize(missing)["tokens"].tolist() == [0, 3]
