"""Training on Parquet data larger than memory (lamina/streaming.py): the split by row number, the
statistics fitted on a sample, the shuffled and sharded training batches, a model trained from a
stream, memory bounded by the shuffle buffer, and the refusals."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as arrow
import pyarrow.parquet as parquet
import pytest
import torch

import lamina
from lamina import features, streaming
from lamina.config import load_config
from lamina.data import columns_of, learning_rows
from lamina.errors import ConfigError, DataError
from lamina.features.columns import LazyColumn

from helpers_data import config, people


def streamed(**training) -> dict:
    return config(training={"streaming": True, **training})


@pytest.fixture(scope="module")
def people_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("streaming") / "people.parquet"
    people(3000, seed=1).to_parquet(path, row_group_size=400, index=False)
    return path


def in_memory_features(settings: dict, rows: pd.DataFrame) -> list:
    """The features fitted as Model.fit fits them on these training rows."""
    built = load_config(settings)
    inputs = [features.build(feature) for feature in built.inputs]
    outputs = [features.build(feature) for feature in built.outputs]
    for feature in outputs:
        feature.fit(columns_of(feature, rows))
    learned = learning_rows(rows, outputs)
    for feature in inputs:
        feature.fit(columns_of(feature, learned))
    return inputs + outputs


@pytest.mark.parametrize("ratios", [[0.8, 0.1, 0.1], [1.0, 0.0, 0.0]])
def test_statistics_equal_the_in_memory_ones_when_the_training_rows_fit_in_the_sample(people_file, ratios):
    settings = streamed()
    settings["inputs"].append({"name": "segment", "type": "category"})
    settings["outputs"].append({"name": "spend", "type": "number"})  # quantile bins, mean and std
    settings["split"] = {"ratios": ratios}
    prepared = streaming.prepare(load_config(settings), people_file)
    frame = pd.read_parquet(people_file)
    training = frame[streaming.Splitter(load_config(settings)).parts(frame) == 0]
    assert prepared.statistics_rows == prepared.stream.rows == len(training)
    if ratios[0] == 1.0:
        assert len(training) == len(frame)  # as split_rows gives every row to training
    expected = in_memory_features(settings, training)
    got = prepared.inputs + prepared.outputs
    for mine, theirs in zip(got, expected):
        assert mine.stats == theirs.stats, mine.config.name  # vocabularies, means, bins: identical
    assert got[0].stats["edges"] and got[1].stats["vocabulary"]


def test_a_smaller_sample_is_seeded_and_uniform(people_file, monkeypatch):
    monkeypatch.setattr(streaming, "STATS_ROWS", 500)
    first = streaming.prepare(load_config(streamed()), people_file)
    again = streaming.prepare(load_config(streamed()), people_file)
    assert first.statistics_rows == 500 and first.stream.rows > 2000  # counted exactly, fitted on the sample
    assert first.inputs[0].stats == again.inputs[0].stats
    frame = pd.read_parquet(people_file)
    # a uniform sample of 500 ages (uniform on 18..80, sd 17.9): its mean within 4 standard errors
    assert abs(first.inputs[0].stats["mean"] - frame["age"].mean()) < 4 * 17.9 / 500 ** 0.5
    monkeypatch.setattr(streaming, "STATS_BYTES", 10_000)  # wide rows: fewer of them, by bytes
    narrow = streaming.prepare(load_config(streamed()), people_file)
    assert 100 < narrow.statistics_rows < 500
    assert narrow.inputs[1].stats == streaming.prepare(load_config(streamed()), people_file).inputs[1].stats


def test_buffered_tables_join_padded_sequences_and_lazy_columns():
    lazy = [LazyColumn([f"a{index}" for index in range(rows)], len) for rows in (2, 3)]
    tables = [{"inputs": {"steps": torch.ones(2, 4, 3), "files": lazy[0]}},
              {"inputs": {"steps": torch.ones(3, 6, 3), "files": lazy[1]}}]
    joined = streaming.joined(tables)["inputs"]
    assert joined["steps"].shape == (5, 6, 3) and joined["steps"][:2, 4:].abs().sum() == 0  # zero padding
    assert joined["files"].values == ["a0", "a1", "a0", "a1", "a2"]
    picked = streaming.subset({"inputs": joined}, torch.tensor([4, 0]))["inputs"]
    assert picked["files"].values == ["a2", "a0"] and picked["steps"].shape == (2, 6, 3)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    """5,000 rows whose input is the row's number, in two files of uneven row groups."""
    folder = tmp_path_factory.mktemp("numbered")
    frame = pd.DataFrame({"row": np.arange(5000, dtype=np.float64), "y": np.random.default_rng(0).normal(size=5000)})
    frame.iloc[:3000].to_parquet(folder / "a.parquet", row_group_size=300, index=False)
    frame.iloc[3000:].to_parquet(folder / "b.parquet", row_group_size=700, index=False)
    settings = {"inputs": [{"name": "row", "type": "number", "normalize": "none", "encoding": "plain"}],
                "outputs": [{"name": "y", "type": "number"}], "training": {"streaming": True, "shuffle_buffer": 500}}
    return folder, frame, load_config(settings)


def epoch(stream, seed: int | None, shard=(0, 1), batch_size: int = 64) -> list[np.ndarray]:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return [batch["inputs"]["row"].numpy().astype(np.int64)
            for batch in stream.batches(batch_size, generator, 0, shard)]


def test_the_split_is_the_same_in_every_pass_and_every_shard(numbered, monkeypatch):
    folder, frame, settings = numbered
    monkeypatch.setattr(streaming, "READ_ROWS", 128)  # several record batches per row group
    prepared = streaming.prepare(settings, folder)
    expected = streaming.split_rows(frame, settings)["train"]  # rows numbered across both files
    assert prepared.stream.rows == len(expected) and len(prepared.stream.per_piece) == 10 + 3
    monkeypatch.setattr(streaming, "READ_ROWS", 1000)  # another reading, the same split
    assert streaming.prepare(settings, folder).survey.counts == prepared.survey.counts
    first, second = epoch(prepared.stream, 0), epoch(prepared.stream, 1)
    for batches in (first, second, epoch(prepared.stream, None)):
        rows = np.concatenate(batches)
        assert len(rows) == len(set(rows)) and np.array_equal(np.sort(rows), expected)  # each row once
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))  # the order changes per epoch
    assert np.array_equal(np.concatenate(epoch(prepared.stream, None)), expected)  # no generator: the files' order
    assert all(len(batch) == 64 for batch in first[:-1])

    pieces = prepared.source.pieces
    shares = [epoch(prepared.stream, 0, (rank, 2)) for rank in range(2)]
    each = prepared.stream.rows_per_rank(2)
    untrimmed = [np.concatenate([rows.index.to_numpy() for rows in prepared.stream.reader.training_rows(
        list(range(rank, len(pieces), 2)))]) for rank in range(2)]
    assert np.array_equal(np.sort(np.concatenate(untrimmed)), expected)  # the shards' row groups hold every row
    assert [len(rows) for rows in untrimmed] == [prepared.stream.per_piece[rank::2].sum() for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == -(-each // 64)  # the ranks step together
    mine = [np.concatenate(share) for share in shares]
    assert [len(rows) for rows in mine] == [each, each]
    assert not set(mine[0]) & set(mine[1]) and set(mine[0]) | set(mine[1]) <= set(expected)
    for rank, rows in enumerate(mine):  # row group i is read by rank i % 2
        owners = [index % 2 for index, piece in enumerate(pieces)
                  if np.any((rows >= piece.start) & (rows < piece.start + piece.rows))]
        assert set(owners) == {rank}
    fewer = int(np.argmin([prepared.stream.per_piece[rank::2].sum() for rank in range(2)]))
    assert len(mine[fewer]) == prepared.stream.per_piece[fewer::2].sum()  # the smaller share is read whole


def test_a_streamed_model_learns_like_the_in_memory_one_predicts_saves_and_loads(tmp_path):
    frame = people(4000, seed=1)
    frame.to_parquet(tmp_path / "people.parquet", row_group_size=500, index=False)
    stream_model = lamina.Model(streamed(shuffle_buffer=1000)).fit(tmp_path / "people.parquet", quiet=True,
                                                                    output_dir=tmp_path / "model")
    memory_model = lamina.Model(config()).fit(frame, quiet=True)
    fresh = people(2000, seed=9)
    streamed_accuracy = stream_model.evaluate(fresh)["income"]["accuracy"]
    memory_accuracy = memory_model.evaluate(fresh)["income"]["accuracy"]
    # Both learn one signal from ~3,200 rows, split and shuffled differently: on 2,000 fresh rows the
    # accuracy's standard error is ~0.006, and with seeds 42, 1 and 2 the two differed by at most 0.005;
    # 0.03 leaves room for other CPUs' float sums. The trivial baseline (the commoner class) is ~0.5.
    assert abs(streamed_accuracy - memory_accuracy) < 0.03 and streamed_accuracy > 0.85
    record = stream_model.training_
    assert sum(record["rows"].values()) == 4000 and record["streaming"]["files"] == 1
    assert record["streaming"]["measured_rows"]["train"] == record["rows"]["train"]  # all fit in the sample
    assert set(stream_model.metrics_) == {"train", "validation", "test"} and len(record["history"]) == 2
    loaded = lamina.load(tmp_path / "model")
    assert loaded.predict(fresh.head(50)).equals(stream_model.predict(fresh.head(50)))
    assert loaded.training_["streaming"] == record["streaming"]


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(key))


def test_memory_is_bounded_by_the_shuffle_buffer_not_the_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    columns = {f"x{index}": rng.normal(size=400_000) for index in range(19)} | {"y": rng.normal(size=400_000)}
    table = arrow.table(columns)
    data_bytes = table.nbytes  # 64 MB of numbers (a 77 MB file)
    parquet.write_table(table, tmp_path / "big.parquet", row_group_size=5000)
    parquet.write_table(table.slice(0, 20_000), tmp_path / "small.parquet", row_group_size=5000)
    del table, columns
    settings = load_config({"inputs": [{"name": f"x{index}", "type": "number", "encoding": "plain"}
                                       for index in range(19)],
                            "outputs": [{"name": "y", "type": "number"}],
                            "training": {"streaming": True, "shuffle_buffer": 20_000, "batch_size": 256}})
    monkeypatch.setattr(streaming, "STATS_ROWS", 10_000)  # the samples are bounded too; keep them small here
    monkeypatch.setattr(streaming, "SAMPLE_ROWS", 2_000)

    def run(path) -> tuple[int, int]:
        prepared = streaming.prepare(settings, path)
        rows, arrow_peak = 0, arrow.total_allocated_bytes()
        for batch in prepared.stream.batches(256, torch.Generator().manual_seed(0)):
            rows += len(batch["inputs"]["x0"])
            arrow_peak = max(arrow_peak, arrow.total_allocated_bytes())
        return rows, arrow_peak

    run(tmp_path / "small.parquet")  # the one-time costs (imports, allocator pools) paid first
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM, the peak resident memory, to the current
        resident = _status("VmRSS")
    except OSError:
        resident = None
    tracemalloc.start()
    try:
        rows, arrow_peak = run(tmp_path / "big.parquet")
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows > 300_000
    # measured: Python objects 3 MB, Arrow 5-9 MB, the process's peak +9 to +17 MB (the allocators'
    # whims), for 64 MB of data (in memory it would take that, and its tensors half as much again)
    assert python_peak < data_bytes / 8 and arrow_peak < data_bytes / 4
    if resident is not None:
        assert _status("VmHWM") - resident < data_bytes / 3


def test_refusals_and_when_to_stream(people_file, tmp_path):
    frame = people(300)
    frame.to_csv(tmp_path / "people.csv", index=False)
    with pytest.raises(ConfigError, match=r"streaming: true reads Parquet .*'.*people\.csv', not a Parquet file"):
        lamina.Model(streamed()).fit(tmp_path / "people.csv", quiet=True)
    with pytest.raises(ConfigError, match="the data is a DataFrame, not a Parquet file"):
        lamina.Model(streamed()).fit(frame, quiet=True)
    with pytest.raises(ConfigError, match="split method 'stratified' needs every row in memory.*split method: random"):
        lamina.Model({**streamed(), "split": {"method": "stratified"}}).fit(people_file, quiet=True)
    resampled = streamed()
    resampled["outputs"][0]["sampling"] = "over"
    with pytest.raises(ConfigError, match="output 'income' resamples its training rows"):
        lamina.Model(resampled).fit(people_file, quiet=True)
    missing = streamed()
    missing["inputs"].append({"name": "salary", "type": "number"})
    with pytest.raises(DataError, match="column 'salary' named in the config is not in"):
        lamina.Model(missing).fit(people_file, quiet=True)
    auto, off = load_config(config()).training, load_config(config(training={"streaming": False})).training
    assert not streaming.wanted(people_file, auto)  # a small file is read into memory
    assert streaming.wanted(people_file.parent, auto)  # a folder of Parquet files is always streamed
    assert not streaming.wanted(people_file.parent, off) and not streaming.wanted(frame, auto)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "a.png").write_bytes(b"")
    people(50).to_parquet(tmp_path / "labels.parquet")
    assert not streaming.wanted(tmp_path, auto)  # a folder of images stays an image folder


def test_a_split_column_and_an_anomaly_output_stream(tmp_path):
    frame = people(1200, seed=3)
    frame["part"] = np.where(np.arange(1200) % 10 == 0, "test", np.where(np.arange(1200) % 10 == 1, "valid", "train"))
    frame.to_parquet(tmp_path / "people.parquet", row_group_size=200, index=False)
    by_column = {"method": "column", "column": "part"}
    model = lamina.Model({**streamed(), "split": by_column}).fit(tmp_path / "people.parquet", quiet=True)
    assert model.training_["rows"] == {"train": 960, "validation": 120, "test": 120}
    unlabelled = config(outputs=[{"name": "score", "type": "anomaly"}], training={"streaming": True})
    model = lamina.Model(unlabelled).fit(tmp_path / "people.parquet", quiet=True)  # no label column: all normal
    assert model.training_["learned_rows"] == model.training_["rows"]["train"]
    frame["score"] = np.where(np.arange(1200) % 7 == 0, "attack", "normal")
    frame.to_parquet(tmp_path / "labelled.parquet", row_group_size=200, index=False)
    labelled = config(outputs=[{"name": "score", "type": "anomaly", "normal": "normal"}], training={"streaming": True})
    model = lamina.Model({**labelled, "split": by_column}).fit(tmp_path / "labelled.parquet", quiet=True)
    normal_training = int(((frame["part"] == "train") & (frame["score"] == "normal")).sum())
    assert model.training_["learned_rows"] == normal_training < 960  # labelled anomalies are left out, counted exactly
