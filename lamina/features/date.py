"""The `date` data type (input only): a date or a timestamp ('2024-03-01 14:22', ISO 8601 with or
without a zone, '01/03/2024', seconds or milliseconds since 1970, or any strftime `format`) in, as its
calendar parts: time of day, day of week, day of month and month as angles (sin, cos), the year, and
the days since 1970, the last two normalised with training statistics; a small linear layer over them.

A cell becomes one row of PARTS (N, 6) float32 (NaN where missing); the sin/cos, the filling and the
normalisation run in torch inside the encoder. A time with a zone is converted to UTC first.
"""
from __future__ import annotations

import re
import warnings
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pandas.tseries.api import guess_datetime_format
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from lamina.errors import DataError
from lamina.features import attribution, base, classic
from lamina.features.common import as_strings, describe_cell, missing_mask, raise_if_missing, to_float_tensor
from lamina.features.request import RequestField, Widget, as_text

CAN_BE_OUTPUT = False
CAN_BE_INPUT = True
READ_AS = "string"  # '2024-03-01', '20240301' and '1709251200' are read as written; parse() decides
PARTS = ("time of day", "day of week", "day of month", "month", "year", "days since 1970")
CYCLICAL = 4  # the first PARTS are fractions of a cycle in [0, 1); the others are normalised
DAY = 86400.0
MILLISECONDS_FROM = 1e11  # unit auto: a number this large is milliseconds (1e11 s is the year 5138)
LIMIT = 9e12  # seconds: about the year 287,000; beyond it a number is no time pandas can hold
HOW_TO_WRITE = ("write dates as ISO 8601 ('2024-03-01', '2024-03-01 14:22', '2024-03-01T14:22:00+01:00') or "
                "as seconds since 1970, or set format: (strftime, e.g. '%d.%m.%Y %H:%M')")
ISO_LIKE = re.compile(r"^\d{4}[-/]\d{1,2}[-/]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|UTC|[+-]\d{2}:?\d{2})?$")
DAY_MONTH = re.compile(r"^(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})(,?\s+\d{1,2}:\d{2}(:\d{2})?(\s*[AaPp][Mm])?)?$")
DATE_NAME = re.compile(r"(date|time|day|stamp|(^|_)ts$|_at$|_on$|created|updated|when)", re.IGNORECASE)


class Options(BaseModel):
    """Options of a date feature."""

    model_config = ConfigDict(extra="forbid")
    format: str | None = Field(None, description="the cells' strftime format (e.g. '%d.%m.%Y %H:%M', '%Y%m%d'); "
                                                 "default: ISO 8601, common forms such as '01/03/2024 14:22', and "
                                                 "numbers as seconds or milliseconds since 1970")
    dayfirst: bool = Field(False, description="'01/03/2024' is 1 March (true) or 3 January (false); ISO dates are "
                                              "never ambiguous")
    unit: Literal["auto", "s", "ms"] = Field("auto", description="what a number means: seconds or milliseconds since "
                                                                 "1970; auto: milliseconds from 1e11 up")
    embedding_size: int = Field(16, ge=0, description="width of a learned linear+ReLU layer over the parts (0: the "
                                                      "parts go to the hidden layers as they are)")
    missing: Literal["fill", "drop", "error"] = Field(
        "fill", description="fill: a missing date takes the training mean time (and a missing flag); drop removes "
                            "the rows while training; error refuses them")


# --- parsing ------------------------------------------------------------------------------------

def _parse_texts(texts: list[str], format: str | None, dayfirst: bool) -> np.ndarray:
    """Date texts -> seconds since 1970 (UTC), NaN where a text is not a date."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns when it falls back to parsing cell by cell
        if format:
            parsed = pd.to_datetime(pd.Series(texts, dtype=object), format=format, utc=True, errors="coerce")
        else:  # ISO 8601 in one fast pass, then the format the first other text has; what is left cell by cell
            texts = pd.Series(texts, dtype=object)
            parsed = pd.to_datetime(texts, format="ISO8601", utc=True, errors="coerce")
            rest = parsed.isna()
            guessed = guess_datetime_format(texts[rest].iloc[0], dayfirst=dayfirst) if rest.any() else None
            if guessed:
                parsed[rest] = pd.to_datetime(texts[rest], format=guessed, utc=True, errors="coerce")
                rest = parsed.isna()
            if rest.any():
                parsed[rest] = pd.to_datetime(texts[rest], format="mixed", dayfirst=dayfirst, utc=True, errors="coerce")
    stamps = parsed.dt.tz_localize(None).to_numpy().astype("datetime64[us]")  # microseconds: any year pandas reads
    return np.where(np.isnat(stamps), np.nan, stamps.astype(np.int64) / 1e6)


def seconds(column: pd.Series, name: str, format: str | None = None, dayfirst: bool = False,
            unit: str = "auto") -> np.ndarray:
    """The column as seconds since 1970-01-01 UTC (N,) float64, NaN where missing; a present cell that is
    not a date is a DataError naming its row. Numbers are epoch times unless a `format` reads them."""
    gone = missing_mask(column)
    present = np.flatnonzero(~gone)
    result = np.full(len(column), np.nan)
    cells = column.to_numpy(dtype=object)[present]
    numbers = np.full(len(cells), np.nan)
    if not format:  # numbers and numbers written as text; true/false are no times
        numbers = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(np.float64, na_value=np.nan,
                                                                                       copy=True)
        numbers[[isinstance(cell, (bool, np.bool_)) for cell in cells]] = np.nan
    is_number = ~np.isnan(numbers)
    scale = {"s": 1.0, "ms": 1e-3}.get(unit) or np.where(np.abs(numbers[is_number]) >= MILLISECONDS_FROM, 1e-3, 1.0)
    result[present[is_number]] = numbers[is_number] * scale
    texts = as_strings(pd.Series(cells[~is_number], dtype=object)).astype(str).tolist()
    if texts:
        result[present[~is_number]] = _parse_texts(texts, format, dayfirst)
    bad = ~gone & (np.isnan(result) | (np.abs(result) > LIMIT))
    if bad.any():
        position = int(np.argmax(bad))
        how = f"it does not match format '{format}'" if format else "it is not a date lamina can read"
        raise DataError(f"column '{name}' row {column.index[position]}: {describe_cell(column.iloc[position])}: "
                        f"{how}; {HOW_TO_WRITE}, or leave it empty for a missing date")
    return result


def parts(times: np.ndarray) -> np.ndarray:
    """Seconds since 1970 (N,) -> the calendar PARTS (N, 6) float64, a row of NaN where a time is NaN: the
    fraction of the day, of the week (Monday 0), of the month (the 1st 0) and of the year's months, the
    year, and the days since 1970."""
    whole = np.floor(np.where(np.isfinite(times), times, 0)).astype(np.int64).astype("datetime64[s]")
    stamps = pd.Series(whole)  # in seconds: years 1 to 9999 (nanoseconds would end in 2262)
    days = times / DAY
    result = np.column_stack([
        np.mod(times, DAY) / DAY,
        np.mod(np.floor(days) + 3, 7) / 7,  # 1970-01-01 was a Thursday (3)
        (stamps.dt.day.to_numpy(dtype=np.float64, na_value=np.nan) - 1) /
        stamps.dt.days_in_month.to_numpy(dtype=np.float64, na_value=np.nan),
        (stamps.dt.month.to_numpy(dtype=np.float64, na_value=np.nan) - 1) / 12,
        stamps.dt.year.to_numpy(dtype=np.float64, na_value=np.nan),
        days,
    ])
    result[np.isnan(times)] = np.nan
    return result


def classic_parts(column: pd.Series, name: str, format: str | None = None, dayfirst: bool = False,
                  unit: str = "auto") -> np.ndarray:
    """For the classic baseline (module level, so a fitted baseline pickles): the encoder's numbers before
    its layer, (N, 10): sin and cos of the four cycles, the year and the days since 1970."""
    values = parts(seconds(column, name, format, dayfirst, unit))
    angles = 2 * np.pi * values[:, :CYCLICAL]
    return np.column_stack([np.sin(angles), np.cos(angles), values[:, CYCLICAL:]])


def iso(time: float) -> str:
    """Seconds since 1970 as '2024-03-01 14:22:05' (UTC)."""
    return str(np.datetime64(int(np.floor(time)), "s")).replace("T", " ")


# --- the network --------------------------------------------------------------------------------

class Encoder(nn.Module):
    """Input layer of a date: missing rows filled with the training mean time's parts, the cycles as
    (sin, cos), year and days normalised, then a linear+ReLU layer; plus a missing flag when training
    rows had missing dates."""

    def __init__(self, options: Options, stats: dict):
        super().__init__()
        self.register_buffer("fill", torch.tensor(stats["fill"], dtype=torch.float32))  # (6,)
        self.register_buffer("shift", torch.tensor(stats["shift"], dtype=torch.float32))  # (2,)
        self.register_buffer("scale", torch.tensor(stats["scale"], dtype=torch.float32))  # (2,)
        self.flag_missing = bool(stats["has_missing"])
        width = 2 * CYCLICAL + len(PARTS) - CYCLICAL
        self.embed = None
        if options.embedding_size:
            self.embed = nn.Sequential(nn.Linear(width, options.embedding_size), nn.ReLU())
            width = options.embedding_size
        self.output_size = width + int(self.flag_missing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 6) -> (B, output_size)
        filled = torch.where(torch.isnan(x), self.fill, x)  # (B, 6)
        angles = 2 * torch.pi * filled[:, :CYCLICAL]  # (B, 4)
        linear = (filled[:, CYCLICAL:] - self.shift) / self.scale  # (B, 2)
        encoded = torch.cat([torch.sin(angles), torch.cos(angles), linear], dim=1)  # (B, 10)
        if self.embed is not None:
            encoded = self.embed(encoded)  # (B, embedding_size)
        if self.flag_missing:
            encoded = torch.cat([encoded, torch.isnan(x[:, :1]).float()], dim=1)
        return encoded


# --- the feature --------------------------------------------------------------------------------

class Feature(base.Feature):
    def __init__(self, config):
        self.config = config
        self.stats: dict = {}

    def _seconds(self, column: pd.Series) -> np.ndarray:
        options = self.config
        return seconds(column, options.name, options.format, options.dayfirst, options.unit)

    def fit(self, column: pd.Series) -> None:
        times = self._seconds(column)
        present = times[~np.isnan(times)]
        if present.size == 0:
            raise DataError(f"column '{self.config.name}' has no dates in the training split; fill the column or "
                            f"remove the feature")
        values = parts(present)  # (N, 6)
        mean_time = float(present.mean())
        spread = values[:, CYCLICAL:].std(axis=0)
        self.stats = {"fill": parts(np.array([mean_time]))[0].tolist(),
                      "shift": values[:, CYCLICAL:].mean(axis=0).tolist(),
                      "scale": np.where(spread > 1e-9, spread, 1.0).tolist(),
                      "mean": mean_time, "first": iso(present.min()), "last": iso(present.max()),
                      "example": iso(float(np.median(present))), "has_missing": bool(present.size < len(times))}

    def transform(self, column: pd.Series) -> torch.Tensor:
        if self.config.missing == "error":
            raise_if_missing(column, self.config.name)
        return to_float_tensor(parts(self._seconds(column)))  # (N, 6), NaN rows where missing

    def time_values(self, column: pd.Series) -> np.ndarray:
        return self._seconds(column)

    def encoder(self) -> nn.Module:
        return Encoder(self.config, self.stats)

    # ---- init-config ----
    @classmethod
    def sniff(cls, column: base.Column) -> base.Sniff | None:
        """Texts shaped like dates that parse ('2024-03-01 14:22', '01/03/2024': day first when a first
        part is above 12 or the parts are separated by '.'), or whole numbers that are dates: 8 digits
        reading as %Y%m%d, or seconds / milliseconds since 1970 between 1973 and 2100. Numbers are only
        sure dates with a date-like name (date, time, day, stamp, created, *_at ...); without one they
        stay numbers (the date is then the runner-up)."""
        dated_name = bool(DATE_NAME.search(column.name))
        if column.is_time:
            return base.Sniff(0.97, "dates and times (a datetime column)")
        if column.numbers is not None:
            return _sniff_numbers(column.numbers, dated_name)
        if not column.all_text:
            return None
        head = column.strings.iloc[:500]
        iso_share = float(head.str.match(ISO_LIKE).mean())
        day_month = head.str.extract(DAY_MONTH)
        if iso_share < 0.95 and day_month[0].notna().mean() < 0.95:
            return None
        options, note = {}, ""
        if iso_share < 0.95:
            first, second = day_month[0].astype(float), day_month[2].astype(float)
            if (first > 12).any() or (day_month[1] == ".").all():
                options, note = {"dayfirst": True}, ", day first"
            elif not (second > 12).any():
                note = " (month first assumed: set dayfirst: true for day/month/year)"
        try:
            seconds(head.reset_index(drop=True), column.name, dayfirst=options.get("dayfirst", False))
        except DataError:
            return None
        return base.Sniff(0.92, f"dates like {head.iloc[0]!r}{note}", options)

    # ---- classic baseline ----
    def classic_encoder(self, style: str, seed: int) -> classic.Numbers:
        options = self.config
        function = partial(classic_parts, format=options.format, dayfirst=options.dayfirst, unit=options.unit)
        return classic.Numbers(options.name, style, function, "calendar parts (sin/cos of time of day, weekday, "
                                                              "day of month, month), year, days since 1970")

    def stats_mismatch(self, column: pd.Series) -> str | None:
        """Other rows of the same count give another mean time than the one learned."""
        if "mean" not in self.stats:
            return None
        times = self._seconds(column)
        mean = float(np.nanmean(times)) if (~np.isnan(times)).any() else float("nan")
        if np.isclose(mean, self.stats["mean"], rtol=1e-12, atol=1e-3):
            return None
        return f"column '{self.name}' of its training rows has mean time {mean:.0f}, the model learned " \
               f"{self.stats['mean']:.0f}"

    # ---- serving ----
    def request_field(self) -> RequestField:
        example = self.stats["example"]
        return RequestField(
            str, f"a date or time ('{example}', ISO 8601, or seconds since 1970); training dates "
                 f"{self.stats['first']} to {self.stats['last']}", example,
            Widget("line", example, hint="e.g. 2024-03-01 14:22"), nullable=self.config.missing != "error",
            read=self._requested, shown=str | int | float)

    def _requested(self, value: Any) -> Any:
        """A sent value is checked here, so a bad date is refused with the request's error, before any work."""
        value = as_text(value)
        if value is None:
            return None
        options = self.config
        try:
            seconds(pd.Series([value], dtype=object), options.name, options.format, options.dayfirst, options.unit)
        except DataError:
            raise ValueError(f"{describe_cell(value)} is not a date; send e.g. '{self.stats['example']}'"
                             + (f" (format '{options.format}')" if options.format else "")) from None
        return value

    def served_metadata(self) -> dict:
        return {"statistics": {"first": self.stats["first"], "last": self.stats["last"]}}

    # ---- export ----
    def export_entry(self) -> dict:
        raise self._export_refusal()

    def export_examples(self) -> list:
        raise self._export_refusal()

    def _export_refusal(self) -> base.Unsupported:
        return base.Unsupported(f"input '{self.name}' has type '{self.type_name}', which does not export yet (its "
                                f"calendar parts are computed from the text before the graph, and the export's "
                                f"readers know no date format). Serve this model with `lamina serve` instead")

    # ---- explanation ----
    def attribution_point(self, encoder: nn.Module, values: torch.Tensor) -> attribution.Point:
        """At the encoder's output: the parts move together (a sin without its cos is no time)."""
        mean = torch.tensor(self.stats["fill"], dtype=torch.float32).expand(len(values), -1)  # (B, 6)
        return attribution.Point.at_output(self.name, encoder, values, mean)

    def baseline_description(self) -> str:
        return f"the training mean time ({iso(self.stats['mean'])})"


def _sniff_numbers(numbers: np.ndarray, dated_name: bool) -> base.Sniff | None:
    """Whole numbers that read as dates: %Y%m%d, or seconds / milliseconds since 1970 (1973 to 2100)."""
    if not (numbers == np.round(numbers)).all():
        return None
    sure = 0.85 if dated_name else 0.55
    if ((numbers >= 1900_01_01) & (numbers <= 2100_12_31)).all():
        texts = pd.Series(numbers.astype(np.int64).astype(str))
        if pd.to_datetime(texts, format="%Y%m%d", errors="coerce").notna().all():
            return base.Sniff(sure, "whole numbers reading as dates (year, month, day)", {"format": "%Y%m%d"})
    for low, high, unit, words in ((1e8, 4.1e9, "s", "seconds"), (1e11, 4.1e12, "ms", "milliseconds")):
        if ((numbers >= low) & (numbers <= high)).all() and len(np.unique(numbers)) > 1:
            scale = 1e-3 if unit == "ms" else 1.0
            years = f"{iso(numbers.min() * scale)[:4]} to {iso(numbers.max() * scale)[:4]}"
            return base.Sniff(sure if dated_name else 0.4, f"{words} since 1970 (years {years})", {"unit": unit})
    return None
