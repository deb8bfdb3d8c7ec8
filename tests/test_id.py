"""The id data type: frequent ids get their own embedding row, rare and never-seen ids share
stable hash buckets, missing ids a row of their own; and an id signal is learned."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lamina
from lamina import DataError, features
from lamina.config import INPUT_MODELS


def id_feature(**options):
    return features.build(INPUT_MODELS["id"](name="user", type="id", **options))


def test_frequent_rare_unseen_and_missing_ids_get_the_right_rows():
    feature = id_feature(min_count=2, hash_buckets=8)
    feature.fit(pd.Series(["ann", "ann", "bob", "bob", "bob", "cid", None]))
    assert feature.stats["ids"] == ["bob", "ann"]  # most frequent first; 'cid' seen once is rare
    rows = feature.transform(pd.Series(["bob", "ann", "cid", "zed", None, "zed"])).tolist()
    assert rows[:2] == [1, 2] and rows[4] == 0
    assert all(3 <= row < 3 + 8 for row in (rows[2], rows[3])), "rare and unseen ids share the hash buckets"
    assert rows[3] == rows[5], "the same unseen id always lands in the same bucket"
    assert feature.encoder().embedding.num_embeddings == 1 + 2 + 8


def test_hash_buckets_are_stable_across_processes():
    import subprocess
    import sys

    code = ("import pandas as pd; from lamina import features; from lamina.config import INPUT_MODELS; "
            "f = features.build(INPUT_MODELS['id'](name='u', type='id', hash_buckets=1000)); "
            "f.fit(pd.Series(['a', 'a'])); print(f.transform(pd.Series(['x1', 'x2', 'x3'])).tolist())")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(runs) == 1


def test_empty_and_missing_id_errors_name_the_column():
    with pytest.raises(DataError, match="column 'user' has no ids"):
        id_feature().fit(pd.Series([None, ""]))
    with pytest.raises(DataError, match="row 1: missing value"):
        id_feature(missing="error").fit(pd.Series(["a", None]))


def test_a_per_user_signal_is_learned_and_new_users_still_predict():
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(60)]
    likes = {user: rng.random() < 0.5 for user in users}
    chosen = rng.choice(users, 3000)
    frame = pd.DataFrame({"user": chosen, "noise": rng.normal(size=3000),
                          "clicked": [("yes" if likes[u] else "no") if rng.random() < 0.9 else
                                      ("no" if likes[u] else "yes") for u in chosen]})
    config = {"inputs": [{"name": "user", "type": "id", "embedding_size": 8}, {"name": "noise", "type": "number"}],
              "outputs": [{"name": "clicked", "type": "binary"}], "hidden": {"layers": 1, "size": 16},
              "training": {"epochs": 8, "learning_rate": 0.01}}
    model = lamina.Model(config).fit(frame, quiet=True)
    # 0.9 is the ceiling (a tenth of the labels are flipped), a coin flip 0.5; 300 test rows: seeds 0-5
    # reach 0.85 to 0.92
    assert model.metrics_["test"]["clicked"]["accuracy"] >= 0.75
    fresh = model.predict(pd.DataFrame({"user": ["brand-new", None], "noise": [0.0, 0.0]}))
    assert len(fresh) == 2 and fresh["clicked_probability"].between(0, 1).all()


def test_compare_gives_ids_classic_codes():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"user": rng.choice([f"u{i}" for i in range(30)], 600), "x": rng.normal(size=600)})
    frame["y"] = np.where(frame["x"] > 0, "yes", "no")
    config = {"inputs": [{"name": "user", "type": "id"}, {"name": "x", "type": "number"}],
              "outputs": [{"name": "y", "type": "binary"}], "hidden": {"layers": 1, "size": 8},
              "training": {"epochs": 2}}
    model = lamina.Model(config).fit(frame, quiet=True)
    result = model.compare(frame, resamples=50)
    assert "most frequent ids" in result["classic"]["features"]["user"]


def test_ids_are_explained_and_attributions_add_up():
    pytest.importorskip("captum")
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"user": rng.choice([f"u{i}" for i in range(20)], 400), "x": rng.normal(size=400)})
    frame["y"] = np.where(frame["user"].isin([f"u{i}" for i in range(10)]), "yes", "no")
    config = {"inputs": [{"name": "user", "type": "id", "embedding_size": 4}, {"name": "x", "type": "number"}],
              "outputs": [{"name": "y", "type": "binary"}], "hidden": {"layers": 1, "size": 8},
              "training": {"epochs": 3, "learning_rate": 0.01}}
    model = lamina.Model(config).fit(frame, quiet=True)
    explanation = model.explain(frame.head(5), steps=200)
    for row in explanation["rows"]:  # the gradient jumps where a ReLU switches: n steps close to about 1/n
        assert abs(row["delta"]) <= 0.03 * max(1.0, abs(row["output_value"] - row["baseline_value"]))
        assert set(row["scores"]) == {"user", "x"}
