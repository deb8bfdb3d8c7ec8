"""What the report draws its plots from, kept with the saved model: each output's true values and
predictions on (a sample of) the test rows, so `lamina report --model` needs no data. Each output
type says what it keeps (`evaluation_data`) and draws it (`report_plots`)."""
from __future__ import annotations

import pandas as pd

ROWS = 5000  # test rows kept for the plots
GENERATED_ROWS = 20  # test rows whose text outputs are generated as examples (slow)


def collect(model, test_rows: pd.DataFrame) -> dict:
    """{output name: {'type': ..., plot data}} on at most ROWS test rows (JSON-able); outputs with
    nothing to plot are left out."""
    generating = any(feature.generates for feature in model.outputs_)
    rows = test_rows.head(GENERATED_ROWS if generating else ROWS)
    if rows.empty:
        return {}
    predicted = model.predict(rows)
    result = {}
    for feature in model.outputs_:
        data = feature.evaluation_data(rows, predicted, model.inputs_)
        if data is not None:
            result[feature.config.name] = data
    return result
