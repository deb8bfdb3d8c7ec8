"""What a type's `sniff` sees and answers (see base.py's contract): a bounded sample of one column with
the facts most types ask of it, each computed once, and the answer init-config compares across types."""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

import numpy as np
import pandas as pd

from lamina.features.common import as_strings


@dataclass
class Sniff:
    """A type's answer to `sniff`: how sure it is that a column holds its kind of data, the options it
    would set, and why. The scale, shared by every type so that init-config can compare them: about 0.95
    unmistakable (two values, pixel arrays, '.wav' paths that exist), 0.85 the type's usual shape, 0.7 a
    plausible fallback (plain numbers), 0.5 or less possible but another type is likelier."""
    confidence: float  # in [0, 1]
    reason: str  # a few words for init-config's line: "timestamps like '2024-03-01 14:22'"
    options: dict[str, Any] = field(default_factory=dict)  # the feature's options to set ({"layout": "channels"})


@dataclass
class Column:
    """What init-config shows each type's `sniff`: a bounded sample of one column (at most the first
    rows of a file) and the facts most types ask of it, each computed once."""
    name: str
    values: pd.Series  # the sample's present cells (missing ones left out), in the file's order
    rows: int  # rows in the sample, missing cells included
    is_target: bool = False  # the column is to be predicted (an output)

    @cached_property
    def strings(self) -> pd.Series:
        """The cells as stripped text (1.0 as '1'); lists and arrays as Python prints them."""
        return as_strings(self.values).astype(str)

    @cached_property
    def distinct(self) -> int:
        """Distinct values, compared as text."""
        return int(self.strings.nunique())

    @cached_property
    def all_text(self) -> bool:
        """Every cell is a string (not a number, a list or an array)."""
        return bool(self.values.map(lambda value: isinstance(value, str)).all())

    @cached_property
    def numbers(self) -> np.ndarray | None:
        """The cells as floats when every one is a number or a number written as text (true/false are
        not numbers), else None."""
        if pd.api.types.is_bool_dtype(self.values) or self.is_time or self.values.map(
                lambda value: isinstance(value, (bool, np.bool_, list, tuple, np.ndarray, dict))).any():
            return None
        numbers = pd.to_numeric(self.values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return numbers if len(numbers) and np.isfinite(numbers).all() else None

    @cached_property
    def is_time(self) -> bool:
        """The cells are dates or times already (a datetime column of a Parquet file or a DataFrame)."""
        return bool(pd.api.types.is_datetime64_any_dtype(self.values) or self.values.map(
            lambda value: isinstance(value, (datetime.date, np.datetime64))).all())

    @property
    def named_like_id(self) -> bool:
        """The name says identifier: 'id', 'user_id', 'user id', 'userId', 'UserID'."""
        lowered = self.name.lower()
        return lowered == "id" or lowered.endswith(("_id", " id", "-id", ".id")) or \
            (len(self.name) > 2 and self.name[-3].isalnum() and not self.name[-3].isupper()
             and self.name[-2:] in ("Id", "ID"))

    @cached_property
    def grouped_numbers(self) -> bool:
        """Most cells are numbers written with ',' between thousands ('1,250', '3,400,000'): no list."""
        grouped = self.strings.iloc[:2000].str.match(r"-?\d{1,3}(,\d{3})+(\.\d+)?$")
        return self.all_text and float(grouped.mean()) > 0.5

    def share(self, test: Callable[[Any], bool], cells: int = 2000) -> float:
        """The share of the first `cells` cells (a costly test looks at a few) for which test(cell) holds."""
        head = self.values.iloc[:cells]
        return float(np.mean([bool(test(value)) for value in head])) if len(head) else 0.0
