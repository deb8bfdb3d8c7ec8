"""The request schema of a served model, derived from its input features (one pydantic model per
saved model), and the turning of validated rows into the DataFrame that Model.predict takes.

Each input says how a request sends it (its type's `request_field`). Image and sound cells arrive as
base64 strings (JSON) or uploaded bytes (multipart) and are decoded in memory: nothing a client sends
is ever written to disk, and no string of a request is ever read as a path (a client must not make the
server open its own files; time series strings are inline numbers only). Every file is charged to the
request's Budget from its header; nothing is decoded until all the files of the request fit it.
"""
from __future__ import annotations

import re
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model

from lamina.features.base import Unsupported
from lamina.features.request import RequestField, Undecoded

MAX_NESTING = 64  # levels of [ and { in a JSON body; a real request nests 5: {rows: [{series: [[step]]}]}


class RequestProblem(ValueError):
    """A request the server refuses; `status` is the HTTP status and the message names the field."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def decode(rows: list[BaseModel], names: list[str]) -> None:
    """Decodes, in place, the files of validated rows; a file unreadable past its header is a
    RequestProblem naming its row and field."""
    for index, row in enumerate(rows):
        for position, name in enumerate(names):
            value = getattr(row, f"field_{position}")
            if isinstance(value, Undecoded):
                try:
                    setattr(row, f"field_{position}", value.decode())
                except ValueError as error:
                    raise RequestProblem(f"rows[{index}].{name}: {error}") from None


# --- the schema ------------------------------------------------------------------------------------

def request_fields(model) -> list[RequestField]:
    """How a request sends each input of `model`, in order; an input whose type cannot be served is
    refused when the app is made."""
    try:
        return [feature.request_field() for feature in model.inputs_]
    except Unsupported as error:
        raise RequestProblem(str(error), status=500) from None


def _field(name: str, field: RequestField) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one input in the request schema."""
    nullable, accepted = field.nullable, field.accepted
    annotation = accepted | None if nullable and accepted is not Any else accepted
    if field.read is not None:
        shown = field.shown or accepted  # what the OpenAPI document shows as accepted
        shown = shown | None if nullable and shown is not Any else shown
        annotation = Annotated[annotation, BeforeValidator(field.read, json_schema_input_type=shown)]
    if field.file:
        annotation = Annotated[annotation, WithJsonSchema(
            {"anyOf": [{"type": "string", "contentEncoding": "base64"}] + ([{"type": "null"}] if nullable else [])})]
    missing = " (null: missing)" if nullable else " (required: the model was trained with missing: error)"
    return annotation, Field(..., alias=name, description=field.about + missing)


def row_model(model, fields: list[RequestField]) -> type[BaseModel]:
    """The pydantic model of one row: one field per input feature, named by its column. Keys that
    name no input (for example the output column of a labelled row) are ignored."""
    columns = {f"field_{position}": _field(feature.config.name, field)
               for position, (feature, field) in enumerate(zip(model.inputs_, fields))}
    return create_model("Row", __config__=ConfigDict(extra="ignore", populate_by_name=False), **columns)


def request_model(row: type[BaseModel], example: dict) -> type[BaseModel]:
    return create_model(
        "PredictRequest", __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"rows": [example]}]}),
        rows=(list[row], Field(..., min_length=1, description="the rows to predict, one object per row")))


def example_row(model, fields: list[RequestField]) -> dict:
    """A plausible JSON row (training means and most frequent values): the OpenAPI example, the
    web page's defaults and the warm-up prediction."""
    return {feature.config.name: field.example for feature, field in zip(model.inputs_, fields)}


def where(location: tuple) -> str:
    """('rows', 0, 'age') -> 'rows[0].age'."""
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def explain(problems: list[dict], names: list[str]) -> str:
    """One message naming the bad fields (missing ones grouped per row) and how to fix the request,
    from the problems of a pydantic ValidationError (`errors()`)."""
    missing: dict[str, list[str]] = {}
    messages = []
    for problem in problems:
        if problem["type"] == "missing" and len(problem["loc"]) > 1:
            missing.setdefault(where(problem["loc"][:-1]), []).append(str(problem["loc"][-1]))
        else:
            messages.append(f"{where(problem['loc']) or 'the body'}: {problem['msg'].removeprefix('Value error, ')}")
    for place, fields in missing.items():
        messages.append(f"{place}: missing {', '.join(repr(field) for field in fields)}; send every input "
                        f"({', '.join(names)}), with null for an unknown value")
    more = len(messages) - 3
    return "; ".join(messages[:3]) + (f"; and {more} more problems" if more > 0 else "")


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def nesting(text: str) -> int:
    """The deepest nesting of [ and { in a JSON text that has parsed (so its strings are well formed:
    the pattern that drops them runs in linear time), counted in C by numpy, not by recursion."""
    codes = np.frombuffer(_STRING.sub("", text).encode("utf-8"), dtype=np.uint8)
    steps = ((codes == ord("[")).astype(np.int64) + (codes == ord("{"))
             - (codes == ord("]")) - (codes == ord("}")))
    return int(steps.cumsum().max(initial=0))


def cells(rows: list[BaseModel], model) -> list[dict]:
    """Validated rows -> the row dicts Model.predict_rows reads ({input name: cell}, None where missing)."""
    names = [(f"field_{position}", feature.config.name) for position, feature in enumerate(model.inputs_)]
    return [{name: getattr(row, field) for field, name in names} for row in rows]


def frame(rows: list[BaseModel], model, fields: list[RequestField]) -> pd.DataFrame:
    """Validated rows -> the DataFrame Model.predict reads, with the dtypes the features expect
    (numbers as float64, None -> NaN; lists, PIL images and strings stay Python objects)."""
    columns = {}
    for position, (feature, field) in enumerate(zip(model.inputs_, fields)):
        values = [getattr(row, f"field_{position}") for row in rows]
        columns[feature.config.name] = pd.Series(values, dtype=field.dtype)
    return pd.DataFrame(columns)
