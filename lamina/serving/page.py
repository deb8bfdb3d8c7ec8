"""The web page at GET / of `lamina serve`: a form generated from the model's inputs (number fields,
selects holding the training vocabulary, text boxes, file uploads for images) that posts to
/predict and shows the predictions with their probabilities, and the explanation when the model
has one. One self-contained HTML string: no files, no external scripts or fonts."""
from __future__ import annotations

import json
from html import escape

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
label { display: block; margin: .8rem 0 .2rem; font-weight: 600; }
.kind { font-weight: 400; color: #777; font-size: .85rem; }
input, select, textarea { width: 100%; box-sizing: border-box; padding: .35rem; font: inherit; }
button { margin-top: 1rem; padding: .5rem 1.4rem; font: inherit; }
table { border-collapse: collapse; margin: .4rem 0 1rem; }
td, th { padding: .2rem .8rem .2rem 0; text-align: left; }
meter { width: 10rem; }
.error { color: #b00020; }
pre { background: #f4f4f4; padding: .6rem; overflow-x: auto; }
"""

SCRIPT = """
const metadata = JSON.parse(document.getElementById("metadata").textContent);
const form = document.getElementById("form");
const result = document.getElementById("result");
const status = document.getElementById("status");

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

function show(prediction) {
  result.replaceChildren();
  for (const output of metadata.outputs) {
    const heading = document.createElement("h3");
    heading.dataset.output = output.name;
    const value = prediction[output.name];
    const probability = prediction[output.name + "_probability"];
    if (output.display === "boxes") { result.append(heading); drawBoxes(output, value || [], heading); continue; }
    heading.textContent = output.name + ": " + (value === null ? "(none)" : value) +
      (probability === undefined ? "" : "  (probability " + Number(probability).toFixed(3) + ")");
    result.append(heading);
    const prefix = output.name + "_probability_";
    const classes = Object.keys(prediction).filter((key) => key.startsWith(prefix));
    if (!classes.length) continue;
    const table = document.createElement("table");
    for (const key of classes) {
      const row = document.createElement("tr");
      const meter = document.createElement("meter");
      meter.min = 0; meter.max = 1; meter.value = prediction[key];
      const bar = document.createElement("td"); bar.append(meter);
      row.append(cell(key.slice(prefix.length)), bar, cell(Number(prediction[key]).toFixed(3)));
      table.append(row);
    }
    result.append(table);
  }
}

// an output whose /metadata says display: "boxes" (objects found in its `image` input) is drawn
// over the uploaded picture: each box [x0, y0, x1, y1] in the picture's pixels, with label and score
function drawBoxes(output, found, heading) {
  heading.textContent = output.name + ": " + found.length + (found.length === 1 ? " box" : " boxes");
  const file = form.elements[output.image] && form.elements[output.image].files[0];
  const canvas = document.createElement("canvas");
  canvas.id = output.name + "_boxes";
  result.append(canvas);
  const table = document.createElement("table");
  for (const item of found) {
    const row = document.createElement("tr");
    row.append(cell(item.label), cell(Number(item.score).toFixed(3)), cell(item.box.map((v) => v.toFixed(1)).join(", ")));
    table.append(row);
  }
  result.append(table);
  if (!file) return;
  const picture = new Image();
  picture.onload = () => {
    const scale = Math.min(1, 640 / picture.naturalWidth);
    canvas.width = picture.naturalWidth * scale; canvas.height = picture.naturalHeight * scale;
    const context = canvas.getContext("2d");
    context.drawImage(picture, 0, 0, canvas.width, canvas.height);
    context.lineWidth = 2; context.font = "12px sans-serif";
    for (const item of found) {
      const [x0, y0, x1, y1] = item.box.map((v) => v * scale);
      context.strokeStyle = "#ff8c00"; context.strokeRect(x0, y0, x1 - x0, y1 - y0);
      context.fillStyle = "#ff8c00"; context.fillText(item.label + " " + Number(item.score).toFixed(2), x0, Math.max(10, y0 - 2));
    }
    URL.revokeObjectURL(picture.src);
  };
  picture.src = URL.createObjectURL(file);
}

async function post(path) {
  const response = await fetch(path, {method: "POST", body: new FormData(form)});
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.detail || response.statusText);
  return answer;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  status.className = ""; status.textContent = "predicting...";
  try {
    const answer = await post("predict");
    show(answer.predictions[0]);
    status.textContent = "";
    if (metadata.explain) {
      const explained = await post("explain");
      const block = document.createElement("pre");
      block.id = "explanation";
      block.textContent = JSON.stringify(explained.explanations, null, 2);
      result.append(block);
    }
  } catch (error) {
    status.className = "error"; status.textContent = error.message;
  }
});
"""


def _field(name: str, field) -> str:
    """The form control of one input, from its RequestField's widget."""
    name, widget = escape(name), field.widget
    if widget.control == "select":
        choices = [("", "(missing)")] if field.nullable else []
        choices += [(value, value) for value in widget.choices]
        options = "".join(f'<option value="{escape(str(value))}"{" selected" if value == widget.value else ""}>'
                          f"{escape(str(text))}</option>" for value, text in choices)
        return f'<select id="{name}" name="{name}">{options}</select>'
    if widget.control == "number":
        value = "" if widget.value is None else escape(str(widget.value))
        return f'<input id="{name}" name="{name}" type="number" step="any" value="{value}">'
    if widget.control == "line":
        value, hint = escape(str(widget.value or "")), escape(widget.hint)
        return f'<input id="{name}" name="{name}" type="text" value="{value}" placeholder="{hint}" title="{hint}">'
    if widget.control == "file":
        return f'<input id="{name}" name="{name}" type="file" accept="{escape(widget.accept)}">'
    return f'<textarea id="{name}" name="{name}" rows="3">{escape(str(widget.value or ""))}</textarea>'


# JSON inside <script> ends at the first '</script' and '<!--' changes how the HTML parser reads the
# rest, whatever the JSON means: escaping every <, > and & (and the line separators that older
# JavaScript parsers reject) leaves no markup in it, and JSON.parse reads the same values back.
SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value) -> str:
    """`value` as JSON that is safe inside a <script> element."""
    text = json.dumps(value)
    for character, escaped in SCRIPT_ESCAPES.items():
        text = text.replace(character, escaped)
    return text


def render(metadata: dict, fields: dict) -> str:
    """The page for a model (its /metadata), with a control per input from `fields` ({input name:
    RequestField}), filled with the training means and most frequent values."""
    controls = "\n".join(f'<label for="{escape(feature["name"])}">{escape(feature["name"])} '
                         f'<span class="kind">{escape(feature["type"])}</span></label>'
                         + _field(feature["name"], fields[feature["name"]])
                         for feature in metadata["inputs"])
    outputs = ", ".join(escape(feature["name"]) for feature in metadata["outputs"])
    embedded = script_json({"outputs": metadata["outputs"], "explain": metadata["explain"]})
    title = escape(f"lamina: {metadata['model']}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body><h1>{title}</h1>
<p>Fill in the inputs and predict {outputs}. The same predictions come from <code>POST /predict</code>
(<a href="docs">API documentation</a>, <a href="metadata">metadata</a>).</p>
<form id="form">{controls}
<button id="predict" type="submit">Predict</button></form>
<p id="status" role="status"></p><div id="result"></div>
<script id="metadata" type="application/json">{embedded}</script>
<script>{SCRIPT}</script></body></html>
"""
