"""The ranking output (two-tower recommendations), the split by time per user, recommend(),
`lamina recommend`, ranking metrics and the classic recommenders compare measures it against."""
import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina.cli import main
from lamina.config import load_config
from lamina.data import split_rows
from lamina.features.base import HeadContext, Trunk
from lamina.features.ranking import Feature

ITEMS, GENRES = 40, 4


def interactions(users: int = 120, per_user: int = 16, seed: int = 0) -> pd.DataFrame:
    """Each user mostly picks movies of their favourite genre, which their age gives away."""
    rng = np.random.default_rng(seed)
    genre = np.arange(ITEMS) % GENRES
    rows = []
    for user in range(users):
        taste = user % GENRES
        for step in range(per_user):
            pool = np.flatnonzero(genre == taste) if rng.random() < 0.9 else np.arange(ITEMS)
            item = int(rng.choice(pool))
            rows.append({"user": f"u{user}", "item": f"m{item}", "genre": f"g{genre[item]}",
                         "age": 20 + 10 * taste + rng.normal(), "time": step})
    return pd.DataFrame(rows)


def config(**output) -> dict:
    return {"inputs": [{"name": "user", "type": "id", "min_count": 1, "embedding_size": 8},
                       {"name": "age", "type": "number"}],
            "hidden": {"layers": 1, "size": 32},
            "outputs": [{"name": "item", "type": "ranking", "user": "user", "negatives": 10, "k": 5,
                         "item_inputs": [{"name": "genre", "type": "category"}], **output}],
            "training": {"epochs": 8, "batch_size": 128, "learning_rate": 0.01},
            "split": {"method": "time", "column": "time", "group": "user", "holdout": 2}}


@pytest.fixture(scope="module")
def trained():
    frame = interactions()
    return lamina.Model(config()).fit(frame, quiet=True), frame


def test_split_by_time_per_user_holds_out_each_users_latest_rows():
    frame = interactions(users=5, per_user=6).sample(frac=1.0, random_state=0)  # order must not matter
    parts = split_rows(frame, load_config(config()))
    for part, steps in (("test", {4, 5}), ("validation", {2, 3}), ("train", {0, 1})):
        chosen = frame.iloc[parts[part]]
        assert set(chosen["time"]) == steps and chosen["user"].nunique() == 5


def test_split_by_time_keeps_a_training_row_for_short_histories_and_uses_ratios_without_holdout():
    frame = pd.DataFrame({"user": ["a", "a", "b", "c", "c", "c", "c", "c", "c", "c", "c", "c", "c"],
                          "time": [1, 2, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "item": "x"})
    holdout = load_config({**config(), "split": {"method": "time", "column": "time", "group": "user", "holdout": 2}})
    parts = split_rows(frame, holdout)
    assert sorted(frame.iloc[parts["train"]]["user"]) == ["a", "b"] + ["c"] * 6  # a: 1 train + 1 test, b: 1
    assert list(frame.iloc[parts["test"]]["time"]) == [2, 9, 10]
    ratios = load_config({**config(), "split": {"method": "time", "column": "time", "ratios": [0.6, 0.2, 0.2]}})
    parts = split_rows(frame, ratios)  # over all rows: the latest times are the test
    assert len(parts["test"]) == 3 and frame.iloc[parts["test"]]["time"].min() >= frame.iloc[parts["train"]]["time"].max()


def test_split_by_time_rejects_bad_times_and_bad_keys():
    frame = pd.DataFrame({"user": ["a", "b"], "time": ["2024-01-01", "yesterday"], "item": "x"})
    with pytest.raises(lamina.DataError, match="split column 'time' row 1: 'yesterday' is not a time"):
        split_rows(frame, load_config(config()))
    with pytest.raises(lamina.ConfigError, match="'holdout' needs 'group"):
        load_config({**config(), "split": {"method": "time", "column": "time", "holdout": 1}})
    with pytest.raises(lamina.ConfigError, match="method 'time' needs 'column"):
        load_config({**config(), "split": {"method": "time"}})


def test_ranking_learns_tastes_and_beats_popularity(trained):
    model, frame = trained
    test = model.metrics_["test"]["item"]
    assert set(test) >= {"hit_rate_at_5", "ndcg_at_5", "hit_rate_at_10", "ndcg_at_10", "mrr", "coverage_at_5"}
    # 10 movies per genre, minus the user's own history: random ranking hits 5 of ~30 at best
    assert test["hit_rate_at_10"] > 0.6, test
    result = model.compare(frame, resamples=100)
    names = [candidate["model"] for candidate in result["classic"]["candidates"]]
    assert names[0] == "popularity" and any(name.startswith("PureSVD") for name in names)
    popularity = result["classic"]["candidates"][0]["validation"]
    assert model.metrics_["validation"]["item"]["ndcg_at_10"] > popularity
    assert "ndcg_at_10" in result["verdict"]


def test_recommend_leaves_out_what_users_chose_and_serves_new_users(trained, tmp_path):
    model, frame = trained
    ranking = model.outputs_[0]
    seen = set(frame[frame["user"] == "u1"].iloc[: -4]["item"])  # u1's training rows (the last 4 held out)
    fresh = model.recommend(["u1"], k=8)
    assert fresh.columns.tolist() == ["user", "item", "item_scores"] and len(fresh["item"][0]) == 8
    assert not seen & set(fresh["item"][0])
    again = model.recommend(["u1"], k=8, exclude_seen=False)
    assert seen & set(again["item"][0])  # without the filter, favourites come back
    genres = dict(zip(frame["item"], frame["genre"]))
    assert [genres[item] for item in again["item"][0][:3]] == ["g1"] * 3  # user 1 likes genre 1
    new = model.recommend(["someone-new", "u2"], k=3)  # a new id shares a hash bucket: still ranked
    assert [len(items) for items in new["item"]] == [3, 3]
    rows = model.recommend(pd.DataFrame({"user": ["u3"], "age": [50.0]}))  # rows of inputs work too
    assert len(rows["item"][0]) == ranking.config.k
    model.save(tmp_path / "model")
    restored = lamina.load(tmp_path / "model")
    pd.testing.assert_frame_equal(restored.recommend(["u1", "u5"]), model.recommend(["u1", "u5"]))


def test_recommend_errors_are_clear(trained):
    model, _ = trained
    with pytest.raises(lamina.DataError, match="nothing to recommend"):
        model.recommend([])
    with pytest.raises(lamina.DataError, match="no ranking output named 'price'"):
        model.recommend(["u1"], output="price")


def test_lamina_recommend_writes_one_line_per_user_and_item(trained, tmp_path, capsys):
    model, _ = trained
    model.save(tmp_path / "model")
    assert main(["recommend", "--model", str(tmp_path / "model"), "--users", "u1,u2", "--k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "user,rank,item,score" and len(lines) == 9
    assert main(["recommend", "--model", str(tmp_path / "model"), "--users", "u1", "--output",
                 str(tmp_path / "out.parquet")]) == 0
    written = pd.read_parquet(tmp_path / "out.parquet")
    assert written["rank"].tolist() == [1, 2, 3, 4, 5]
    assert main(["recommend", "--model", str(tmp_path / "model"), "--users", " , "]) == 2


def _feature(history: dict[str, list[str]], items: int = 6) -> Feature:
    rows = [(user, item) for user, chosen in history.items() for item in chosen]
    rows += [("filler", f"i{number}") for number in range(items)]  # every item in the catalogue
    feature = Feature(load_config(config(item_inputs=[])).outputs[0])
    feature.fit(pd.DataFrame(rows, columns=["user", "item"])[["item", "user"]])
    return feature


def test_ranks_leave_out_training_choices_count_ties_half_and_unknown_items_miss():
    feature = _feature({"a": ["i0", "i1"]})
    position = {item: index for index, item in enumerate(feature.stats["items"])}
    scores = torch.zeros(3, 6)
    for item, value in (("i0", 9.0), ("i1", 8.0), ("i2", 5.0), ("i3", 4.0), ("i4", 4.0)):
        scores[:, position[item]] = value
    target = feature.target(pd.DataFrame({"item": ["i3", "i3", "i-never-seen"], "user": ["a", "b", "a"]}))
    ranks = feature.summary(scores, target)[:, 0]
    assert ranks[0] == 2.5  # a chose i0 and i1 in training: only i2 is above, i4 ties
    assert ranks[1] == 4.5  # b has no history: i0, i1, i2 above, one tie
    assert torch.isinf(ranks[2])
    metrics = feature.metrics(target, feature.summary(scores, target))
    assert metrics["unknown_item_rate"] == pytest.approx(1 / 3)
    assert metrics["mrr"] == pytest.approx((1 / 2.5 + 1 / 4.5) / 3)
    assert metrics["ndcg_at_10"] == pytest.approx((1 / np.log2(3.5) + 1 / np.log2(5.5)) / 3)
    top = feature.recommend(scores[:1], pd.Series(["a"]), k=2)["item"][0]
    assert top == ["i2", "i3"] or top == ["i2", "i4"]


def test_sampled_and_full_softmax_both_train():
    frame = interactions(users=40, per_user=8)
    for negatives in (0, 5, "auto"):
        model = lamina.Model({**config(negatives=negatives), "training": {"epochs": 2, "learning_rate": 0.01}})
        model.fit(frame, quiet=True)
        assert np.isfinite(model.metrics_["test"]["loss"])
    assert model.network_.heads[0].negatives == 0  # auto: 40 items are few enough to score them all
    feature = lamina.Model(config(negatives=5)).fit(frame, quiet=True).outputs_[0]
    head = feature.head(Trunk(size=4)).train()
    context = HeadContext(target=feature.target(frame[["item", "user"]].head(6)))
    assert head(torch.randn(6, 4), context).shape == (6, 6)  # the positive, then 5 negatives
    assert head.eval()(torch.randn(6, 4), context).shape == (6, len(feature.stats["items"]))


def test_bad_ranking_configs_and_data_are_explained():
    with pytest.raises(lamina.ConfigError, match=r"item_inputs\[0\]: type 'image' cannot describe items"):
        load_config(config(item_inputs=[{"name": "poster", "type": "image"}]))
    with pytest.raises(lamina.ConfigError, match="unknown key 'separator' for a set feature; expected one of: .*delimiter"):
        load_config(config(item_inputs=[{"name": "genre", "type": "set", "separator": "|"}]))
    with pytest.raises(lamina.ConfigError, match="type 'ranking' can only be an output"):
        load_config({"inputs": [{"name": "item", "type": "ranking", "user": "user"}],
                     "outputs": [{"name": "y", "type": "number"}]})
    with pytest.raises(lamina.ConfigError, match="missing required key 'user'"):
        load_config({"inputs": [{"name": "x", "type": "number"}], "outputs": [{"name": "item", "type": "ranking"}]})
    frame = interactions(users=10, per_user=4)
    with pytest.raises(lamina.DataError, match="column 'genre' named in the config is not in"):
        lamina.Model(config()).fit(frame.drop(columns="genre"), quiet=True)
    one_item = frame.assign(item="m1")
    with pytest.raises(lamina.DataError, match="ranking output 'item' has 1 item"):
        lamina.Model(config()).fit(one_item, quiet=True)


def test_served_predictions_are_recommendations(trained, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lamina.serving.app import create_app

    model, frame = trained
    model.save(tmp_path / "model")
    with TestClient(create_app(lamina.load(tmp_path / "model"), str(tmp_path / "model"))) as client:
        response = client.post("/predict", json={"rows": [{"user": "u1", "age": 30.0}, {"user": "new", "age": 55.0}]})
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert len(first["item"]) == 5 and len(second["item_scores"]) == 5
    assert not set(first["item"]) & set(frame[frame["user"] == "u1"].iloc[:-4]["item"])


def test_evaluate_scores_new_rows_against_the_training_histories(trained):
    model, frame = trained
    later = interactions(users=6, per_user=3, seed=9).assign(user=lambda rows: rows["user"].str.replace("u", "v"))
    result = model.evaluate(pd.concat([frame.tail(40), later]))  # 18 rows of users with no history at all
    assert 0.0 < result["item"]["hit_rate_at_10"] <= 1.0 and np.isfinite(result["loss"])
    with pytest.raises(lamina.DataError, match="column 'user' named in the config is not in"):
        model.evaluate(frame.drop(columns="user"))
