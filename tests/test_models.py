"""The model zoo and the course references on the demo catalog: every kind prices from text alone,
pickles, keeps test rows out of the stack's blend, and the strong model learns the hidden pricing rule."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from pricer.core.errors import ConfigError
from pricer.data.demo import generate_catalog
from pricer.models.classic import MeanPrice, MeanSpec, TfidfLRSpec
from pricer.models.features import EngineeredFeatures, parse_weight_pounds, row_keys, unit_features
from pricer.models.base import sample_rows
from pricer.models.neighbours import KnnSpec, NearestPrices
from pricer.models.reference import course_weight_pounds
from pricer.models.specs import SPEC_CLASSES, SPECS, model_spec
from pricer.models.stack import Stack, StackSpec

ALL_KINDS = sorted(SPEC_CLASSES)


def build_model(kind: str, **settings: object):
    return model_spec({"kind": kind, **settings}).build()

# Fewer trees where a kind's default size only buys accuracy: these tests check behaviour.
SMALL = {"xgboost": {"n_estimators": 100}, "embed_rf": {"n_estimators": 20},
         "course_w2v_rf": {"n_estimators": 20}}


def _catalog(n: int, seed: int) -> pd.DataFrame:
    """Text (title + details + a few bullets, short so MiniLM is quick) and price of well-formed items."""
    rows = []
    for record in generate_catalog(n, seed=seed, malformed_fraction=0.0):
        details = "; ".join(f"{k}: {v}" for k, v in record["details"].items() if isinstance(v, str))
        text = "\n".join([record["title"], details, *record["features"][:2]])
        rows.append({"text": text, "price": float(record["price"])})
    return pd.DataFrame(rows).drop_duplicates("text", ignore_index=True)


@pytest.fixture(scope="module")
def splits() -> dict[str, pd.DataFrame]:
    frame = _catalog(900, seed=7)
    return {"train": frame.iloc[:600], "val": frame.iloc[600:750], "test": frame.iloc[750:]}


@pytest.fixture(scope="module")
def fitted(splits: dict[str, pd.DataFrame]) -> dict[str, object]:
    """Every kind fitted once on the text-only train split (val given, as the baselines stage does)."""
    train, val = splits["train"], splits["val"]
    return {kind: build_model(kind, **SMALL.get(kind, {})).fit(train, val) for kind in ALL_KINDS}


def _mae(model: object, frame: pd.DataFrame) -> float:
    return float(np.mean(np.abs(model.predict(frame) - frame["price"].to_numpy())))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_prices_text_only_items_and_survives_pickling(
    kind: str, fitted: dict[str, object], splits: dict[str, pd.DataFrame]
) -> None:
    items = splits["test"][["text"]]
    prices = fitted[kind].predict(items)
    assert prices.shape == (len(items),) and np.isfinite(prices).all() and (prices >= 0).all()
    restored = pickle.loads(pickle.dumps(fitted[kind]))
    # Forests sum their trees in threads: equal up to float rounding, not bit for bit.
    np.testing.assert_allclose(restored.predict(items), prices, rtol=1e-9)


def test_models_read_category_and_details_when_present_and_do_without(
    splits: dict[str, pd.DataFrame],
) -> None:
    items = pd.DataFrame({
        "text": ["Cordless Drill\nsee details", "Guitar Picks"],
        "category": ["Tools_and_Home_Improvement", None],
        "details": ['{"Item Weight": "12 ounces", "Best Sellers Rank": {"Tools": 120, "Drills": 30}}', None],
    })
    features = EngineeredFeatures(min_category_count=1).fit(items)
    row = dict(zip(features.feature_names_, features.transform(items)[0], strict=True))
    assert row["log_weight_lb"] == pytest.approx(np.log1p(0.75))
    assert row["log_rank_min"] == pytest.approx(np.log1p(30))
    assert row["category=Tools_and_Home_Improvement"] == 1.0
    text_only = features.transform(items[["text"]])
    assert np.isnan(text_only[:, features.feature_names_.index("log_weight_lb")]).all()
    assert build_model("features_lr").fit(splits["train"]).predict(items).shape == (2,)


def test_units_and_weights_are_parsed_from_text() -> None:
    units = unit_features("Samsung 55-Inch 4K TV, 1500W, Pack of 12, 2TB\nmore")
    assert np.expm1(units["inches"]) == pytest.approx(55)
    assert np.expm1(units["watts"]) == pytest.approx(1500)
    assert np.expm1(units["pack_count"]) == pytest.approx(12)
    assert np.expm1(units["storage_gb"]) == pytest.approx(2000)
    assert np.isnan(units["volts"])
    assert parse_weight_pounds("1.5 kg") == pytest.approx(3.30693)
    assert course_weight_pounds("8 ounces") == 0.5 and course_weight_pounds("heavy") is None


def test_stack_blends_on_the_val_rows_it_is_given_and_never_on_others(
    fitted: dict[str, object], splits: dict[str, pd.DataFrame]
) -> None:
    stack = fitted["stack"]
    assert sorted(stack.blend_keys_) == sorted(row_keys(splits["val"]))
    assert not set(stack.blend_keys_) & set(row_keys(splits["test"]))
    assert (stack.weights_ >= 0).all() and stack.weights_.sum() > 0
    with pytest.raises(ValueError, match="val"):
        StackSpec().build().fit(splits["train"])


class _Recorder(MeanPrice):
    """A member that notes the fingerprint of every row it is shown."""

    def __init__(self, spec: MeanSpec) -> None:
        super().__init__(spec)
        self.shown: set[str] = set()

    def fit(self, train: pd.DataFrame, val: pd.DataFrame | None = None) -> _Recorder:
        self.shown |= set(row_keys(train))
        return super().fit(train)

    def predict(self, items: pd.DataFrame) -> np.ndarray:
        self.shown |= set(row_keys(items))
        return super().predict(items)


def test_stack_members_see_train_and_val_rows_only(splits: dict[str, pd.DataFrame]) -> None:
    recorder = _Recorder(MeanSpec()).fit(splits["train"])
    StackSpec(members=["mean", "knn"]).build().reusing([recorder]).fit(splits["train"], splits["val"])
    assert recorder.shown == set(row_keys(splits["train"])) | set(row_keys(splits["val"]))


def test_stack_keeps_prefitted_members_as_they_are(splits: dict[str, pd.DataFrame]) -> None:
    member = MeanSpec().build().fit(splits["test"].assign(price=123.0))
    stack = StackSpec(members=["mean", "knn"]).build().reusing([member]).fit(splits["train"], splits["val"])
    assert stack.models_[0] is member and member.mean_ == 123.0


def test_stack_reuses_a_fitted_member_only_when_its_settings_match(splits: dict[str, pd.DataFrame]) -> None:
    mean = MeanSpec(name="the-mean").build().fit(splits["train"])  # a name is a label, not a setting
    other_tfidf = TfidfLRSpec(alpha=9.0).build().fit(splits["train"])
    unfitted_knn = KnnSpec().build()
    spec = StackSpec(members=[{"kind": "mean"}, {"kind": "tfidf_lr"}, "knn"])
    stack = Stack(spec).reusing([mean, other_tfidf, unfitted_knn]).fit(splits["train"], splits["val"])
    assert stack.models_[0] is mean
    assert stack.models_[1] is not other_tfidf and stack.models_[1].spec.alpha == 1.0
    assert stack.models_[2] is not unfitted_knn and stack.models_[2].is_fitted


def test_strong_models_learn_the_pricing_rule(
    fitted: dict[str, object], splits: dict[str, pd.DataFrame]
) -> None:
    test = splits["test"]
    floor = _mae(fitted["mean"], test)
    assert _mae(fitted["boost"], test) < 0.7 * floor  # ~140 test items: room for noise
    assert _mae(fitted["stack"], test) < 0.7 * floor
    assert _mae(fitted["random"], test) > floor


def test_models_read_full_text_where_an_item_has_it_and_the_course_references_do_not(
    fitted: dict[str, object], splits: dict[str, pd.DataFrame]
) -> None:
    items = splits["test"].head(20)[["text"]]
    # The same products with the head swapped for another product's: only a reader of full_text changes.
    swapped = items.assign(full_text=items["text"].to_numpy(), text=items["text"].to_numpy()[::-1])
    for kind in ("tfidf_lr", "boost"):
        np.testing.assert_allclose(fitted[kind].predict(swapped), fitted[kind].predict(items), rtol=1e-9)
    reference = fitted["course_bow_lr"]
    np.testing.assert_allclose(reference.predict(swapped), reference.predict(items)[::-1], rtol=1e-9)


def test_a_head_boost_reads_only_the_first_characters(splits: dict[str, pd.DataFrame]) -> None:
    head = build_model("boost", max_chars=40, n_words=0, n_estimators=50, n_bags=1).fit(splits["train"])
    items = splits["test"].head(20)[["text"]]
    padded = items.assign(text=[text[:40] + " plus a tail the head model never reads" for text in items["text"]])
    np.testing.assert_allclose(head.predict(padded), head.predict(items), rtol=1e-9)
    whole = build_model("boost", n_estimators=50, n_bags=1).fit(splits["train"])
    assert not np.allclose(whole.predict(padded), whole.predict(items))


def test_a_boost_without_embeddings_never_embeds(
    splits: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_embedding(items: pd.DataFrame, embedding: object = None) -> np.ndarray:
        raise AssertionError("embedded")

    monkeypatch.setattr("pricer.models.boost.embed", no_embedding)
    boost = build_model("boost", embeddings=False, n_estimators=50, n_bags=1).fit(splits["train"])
    assert _mae(boost, splits["test"]) < 0.7 * _mae(MeanSpec().build().fit(splits["train"]), splits["test"])
    with pytest.raises(AssertionError, match="embedded"):
        build_model("boost", n_estimators=50, n_bags=1).fit(splits["train"])


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="course_bow_lr"):
        build_model("nope")


@pytest.mark.parametrize(("spec", "field"), [
    ({"kind": "boost", "kk": 30}, r"boost\.kk"),
    ({"kind": "boost", "k": "thirty"}, r"boost\.k"),
    ({"kind": "boost", "k": 0}, r"boost\.k"),
    ({"kind": "stack", "members": [{"kind": "boost", "n_word": 5}]}, r"stack\.members\.0\.boost\.n_word"),
    ({"kind": "stack", "members": ["stack"]}, r"stack\.members\.0"),  # a stack is no member of a stack
])
def test_a_misspelt_or_mistyped_setting_fails_at_load_and_names_the_field(spec: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        model_spec(spec)


def test_every_setting_of_every_kind_is_typed_and_described() -> None:
    for spec in SPECS:
        assert spec.__doc__, spec.__name__
        for name, info in spec.model_fields.items():
            if name != "kind":
                assert info.description, f"{spec.__name__}.{name} has no description"


@pytest.mark.parametrize("kind", ["boost", "xgboost", "embed_rf", "course_w2v_svr"])
def test_the_same_seed_gives_the_same_prices_twice(
    kind: str, fitted: dict[str, object], splits: dict[str, pd.DataFrame]
) -> None:
    again = build_model(kind, **SMALL.get(kind, {})).fit(splits["train"], splits["val"])
    items = splits["test"]
    np.testing.assert_allclose(again.predict(items), fitted[kind].predict(items), rtol=1e-9)


def test_a_sample_of_rows_is_seeded_sorted_distinct_and_whole_when_small() -> None:
    sample = sample_rows(1000, 100, seed=3)
    assert len(sample) == len(set(sample)) == 100 and (np.diff(sample) > 0).all() and sample.max() < 1000
    np.testing.assert_array_equal(sample, sample_rows(1000, 100, seed=3))
    assert not np.array_equal(sample, sample_rows(1000, 100, seed=4))
    np.testing.assert_array_equal(sample_rows(50, 100, seed=3), np.arange(50))
    np.testing.assert_array_equal(sample_rows(50, None, seed=3), np.arange(50))


def test_an_svr_with_a_training_cap_fits_on_that_many_items_only(splits: dict[str, pd.DataFrame]) -> None:
    static = {"embedding": {"kind": "static"}}
    capped = build_model("embed_svr", max_train_items=150, **static).fit(splits["train"])
    assert capped.pipeline_[-1].shape_fit_[0] == 150
    whole = build_model("embed_svr", **static).fit(splits["train"])
    assert whole.pipeline_[-1].shape_fit_[0] == len(splits["train"])
    assert _mae(capped, splits["test"]) < _mae(MeanSpec().build().fit(splits["train"]), splits["test"])


def test_a_neighbour_pool_caps_the_rows_each_knn_search_reads(splits: dict[str, pd.DataFrame]) -> None:
    vectors = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)
    prices = np.arange(500, dtype=float)
    pooled = NearestPrices(k=5, max_reference=120, seed=1).fit(vectors, prices)
    assert pooled.vectors_.shape == (120, 8) and set(pooled.y_) <= set(prices)
    assert NearestPrices(k=5).fit(vectors, prices).vectors_ is vectors  # no pool: no copy
    boost = build_model("boost", neighbour_pool=200, n_words=0, n_estimators=50, n_bags=1,
                        embedding={"kind": "static"}).fit(splits["train"])
    assert boost.learners_.word_neighbours.vectors_.shape[0] == 200
    assert boost.learners_.embedding_neighbours.vectors_.shape[0] == 200
    knn = build_model("knn", neighbour_pool=100, embedding={"kind": "static"}).fit(splits["train"])
    assert knn.neighbours_.vectors_.shape[0] == 100


def test_a_boost_with_no_char_features_reads_words_alone(splits: dict[str, pd.DataFrame]) -> None:
    words_only = build_model("boost", char_features=0, n_words=0, n_estimators=50, n_bags=1,
                             embeddings=False).fit(splits["train"])
    vocabulary = len(words_only.vectorizers_.word_.vocabulary_)
    assert words_only.vectorizers_.char_ is None and words_only.learners_.ridge.coef_.shape == (vocabulary,)
    assert _mae(words_only, splits["test"]) < 0.7 * _mae(MeanSpec().build().fit(splits["train"]), splits["test"])
    ridge = build_model("text_ridge", char_features=0).fit(splits["train"])
    assert ridge.char_ is None and ridge.ridge_.coef_.shape == (len(ridge.word_.vocabulary_),)
    from pricer.models.boost import _Inputs

    word = words_only.vectorizers_.vectorize(splits["test"])[0]
    taken = _Inputs(None, word, word).take(np.arange(5))  # each fold's rows: words alone are copied once
    assert taken.both is taken.word and taken.word.shape[0] == 5


@pytest.mark.parametrize("sparse_input", [False, True])
def test_the_neighbour_search_returns_the_k_most_similar_best_first(sparse_input: bool) -> None:
    from scipy import sparse

    from pricer.models.neighbours import top_k

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(700, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(700, 300, replace=False)] + rng.normal(scale=0.3, size=(300, 16)).astype(np.float32)
    exact = queries @ vectors.T
    if sparse_input:
        queries, vectors = sparse.csr_matrix(queries), sparse.csr_matrix(vectors)
    found = list(top_k(queries, vectors, 7, block=128))
    assert [start for start, _, _ in found] == [0, 128, 256]
    indices = np.vstack([top for _, top, _ in found])
    sims = np.vstack([top_sims for _, _, top_sims in found])
    np.testing.assert_array_equal(indices, np.argsort(-exact, axis=1, kind="stable")[:, :7])
    np.testing.assert_allclose(sims, np.take_along_axis(exact, indices, 1), rtol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()
    assert next(top_k(queries[:3], vectors[:4], 7))[1].shape == (3, 4)  # fewer rows than k: all of them


def test_the_stage_keeps_a_fitted_model_for_later_only_where_a_stack_reuses_it() -> None:
    from pricer.stages.baselines import stack_may_reuse

    specs = [model_spec("random"), model_spec({"kind": "tfidf_lr", "alpha": 2.0}),
             model_spec({"kind": "stack", "members": [{"kind": "tfidf_lr", "alpha": 2.0}, "mean"]})]
    assert [stack_may_reuse(spec.build(), specs) for spec in specs] == [False, True, False]
    assert not stack_may_reuse(model_spec("tfidf_lr").build(), specs)  # other settings: trained again
    assert not stack_may_reuse(model_spec("mean").build(), specs[:2])  # no stack: nothing is kept
