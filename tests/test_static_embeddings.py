"""``kind: static``: model2vec distillation from a local folder, kept once, chosen per consumer by config.

A tiny BERT (hidden size 32, one layer, a 25-token vocabulary) built in code stands in for MiniLM:
distilling it takes about a second, offline, where MiniLM's 30k-token vocabulary takes minutes here.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("model2vec", reason="model2vec is not installed")

from pricer.core.config import validate
from pricer.core.embedding import MiniLMEmbedding, StaticEmbedding
from pricer.core.errors import ConfigError
from pricer.models.embeddings import Embedder, EmbeddingFeatures, embedder_for
from pricer.models.static_embeddings import MANIFEST, StaticEmbedder

WORDS = ["kettle", "steel", "electric", "cable", "usb", "braided", "lamp", "desk", "led", "guitar", "strings",
         "drill", "battery", "water", "filter", "blocks", "wooden", "kids", "charge", "fast"]
TEXTS = ["electric kettle steel", "usb cable braided fast charge", "desk lamp led", "wooden blocks kids",
         "water filter", "drill battery"]
PRICES = [40.0, 12.0, 25.0, 30.0, 18.0, 90.0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT folder (weights + fast tokenizer) that model2vec can distil: built, never downloaded."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64))
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _static(tiny_model: Path, root: Path, **settings) -> StaticEmbedder:
    return StaticEmbedder(cache_dir=root / "vectors", model_path=tiny_model, artifact_dir=root / "static",
                          pca_dims=settings.pop("pca_dims", 8), **settings)


def test_distils_offline_once_and_the_second_build_loads_it(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    first = _static(tiny_model, tmp_path)
    assert first.dim == 8 and not first.model_loaded
    vectors = first.embed(TEXTS)
    assert first.distilled and (first.artifact_path / MANIFEST).is_file()
    assert first.artifact_path.parent == tmp_path / "static" and tiny_model.name in first.artifact_path.name
    assert vectors.shape == (len(TEXTS), 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # A second embedder (a new process, in effect) must load the kept model, never distil again.
    import model2vec.distill

    def no_distil(*args, **kwargs):
        raise AssertionError("distilled a second time")

    monkeypatch.setattr(model2vec.distill, "distill", no_distil)
    second = StaticEmbedder(cache_dir=None, model_path=tiny_model, artifact_dir=tmp_path / "static", pca_dims=8)
    started = time.perf_counter()
    again = second.compute(TEXTS)
    assert time.perf_counter() - started < 2.0
    assert not second.distilled and second.model_id == first.model_id
    np.testing.assert_allclose(again, vectors, atol=1e-6)

    # Other distill settings are another artifact (and other cache keys).
    other = _static(tiny_model, tmp_path, pca_dims=4)
    assert other.artifact_path != first.artifact_path and other.keys(TEXTS[:1]) != first.keys(TEXTS[:1])


def test_the_vector_cache_holds_static_vectors(tiny_model: Path, tmp_path: Path) -> None:
    embedder = _static(tiny_model, tmp_path)
    first = embedder.embed(TEXTS)
    fresh = _static(tiny_model, tmp_path)
    np.testing.assert_array_equal(fresh.embed(TEXTS), first)
    assert fresh.last_misses == 0 and not fresh.model_loaded  # served by the cache: no model loaded


def test_a_spec_chooses_static_by_kind_and_bad_settings_name_the_field(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pricer.models.specs import model_spec

    monkeypatch.chdir(tmp_path)  # a spec's embedder keeps its files under the default, relative, cache dir

    embedding = {"kind": "static", "pca_dims": 8, "model_path": str(tiny_model)}
    spec = model_spec({"kind": "embed_lr", "embedding": embedding})
    assert isinstance(spec.embedding, StaticEmbedding) and spec.embedding.model_path == tiny_model
    assert isinstance(model_spec("knn").embedding, MiniLMEmbedding)  # the default stays MiniLM

    features = EmbeddingFeatures(cache_dir=str(tmp_path), embedding=spec.embedding.model_dump(mode="json"))
    assert isinstance(features.embedder, StaticEmbedder) and features.embedder.artifact_dir == tmp_path / "static"
    model = spec.build().fit(pd.DataFrame({"text": TEXTS, "price": PRICES}))
    assert np.all(model.predict(pd.DataFrame({"text": TEXTS[:2]})) > 0)

    with pytest.raises(ConfigError, match=r"embedding"):
        model_spec({"kind": "embed_lr", "embedding": {"kind": "statc"}})
    with pytest.raises(ConfigError, match=r"embedding\.static\.pca_dims"):
        model_spec({"kind": "boost", "embedding": {"kind": "static", "pca_dims": 1}})
    with pytest.raises(ConfigError, match=r"embedding\.static\.batch_size"):
        model_spec({"kind": "knn", "embedding": {"kind": "static", "batch_size": 32}})  # a MiniLM-only setting


def test_embedder_for_builds_each_kind_without_loading_a_model(tiny_model: Path, tmp_path: Path) -> None:
    static = embedder_for(StaticEmbedding(pca_dims=8, model_path=tiny_model), tmp_path)
    assert isinstance(static, StaticEmbedder) and static is embedder_for(
        StaticEmbedding(pca_dims=8, model_path=tiny_model), tmp_path)
    minilm = embedder_for(MiniLMEmbedding(max_tokens=128), None)
    assert isinstance(minilm, Embedder) and minilm.max_tokens == 128 and not minilm.model_loaded

    # A pipeline pickled before kinds existed has no ``embedding``: it still means MiniLM.
    old = EmbeddingFeatures(cache_dir=None)
    del old.embedding
    assert isinstance(old.embedder, Embedder)


def test_the_vector_store_and_the_frontier_choose_their_embedding(tiny_model: Path, tmp_path: Path) -> None:
    from pricer.agents.config import VectorStoreConfig
    from pricer.agents.vectorstore import configured_store
    from pricer.frontier.config import FrontierConfig

    embedding = {"kind": "static", "pca_dims": 8, "model_path": str(tiny_model)}
    settings = validate(VectorStoreConfig, {"path": "store", "embedding": embedding}, "agents.yaml", "vectorstore")
    assert VectorStoreConfig().embedding.kind == "minilm"
    store = configured_store(settings, tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(store.embedder, StaticEmbedder) and store.path == tmp_path / "store"
    items = pd.DataFrame({"id": [f"p{i}" for i in range(len(TEXTS))], "text": TEXTS, "price": PRICES})
    assert store.sync(items).added == len(TEXTS)
    found = store.neighbours(["usb cable fast charge"], 2)
    assert len(found[0]) == 2 and all(price in PRICES for _, price in found[0])

    # Another embedding is another space: the store starts again rather than mixing vectors.
    narrower = validate(VectorStoreConfig, {"path": "store", "embedding": {**embedding, "pca_dims": 4}})
    rebuilt = configured_store(narrower, tmp_path, cache_dir=tmp_path / "cache")
    assert rebuilt.sync(items).added == len(TEXTS) and rebuilt.count() == len(TEXTS)

    with pytest.raises(ConfigError, match=r"vectorstore\.embedding\.static\.sif_coefficient"):
        validate(VectorStoreConfig, {"embedding": {"kind": "static", "sif_coefficient": 2}}, "agents.yaml",
                 "vectorstore")
    frontier = FrontierConfig.model_fields["embedding"]
    assert frontier.description and FrontierConfig.model_fields["embedding"].default_factory() == MiniLMEmbedding()
