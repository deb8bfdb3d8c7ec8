"""`lamina serve`: predictions over HTTP match Model.predict, concurrent requests are merged into
fewer predict calls, bad requests get a 4xx naming the field and the server keeps serving, the
OpenAPI schema follows the model's inputs, images arrive as base64 or uploads."""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="lamina serve needs the serve extra: pip install 'lamina[serve]'")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import lamina  # noqa: E402
from lamina.serving.app import Settings, create_app  # noqa: E402
from lamina.serving.batcher import Batcher, Job  # noqa: E402

from helpers_data import config, people  # noqa: E402

OUTPUTS = [{"name": "income", "type": "binary"}, {"name": "segment", "type": "category"},
           {"name": "spend", "type": "number"}]
ROW = {"age": 41.5, "city": "rome", "member": "yes", "tags": "a|b"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "model"
    lamina.Model(config(outputs=OUTPUTS)).fit(people(150), output_dir=path, quiet=True)
    return path


@pytest.fixture(scope="module")
def model(folder):
    return lamina.load(folder)


@pytest.fixture(scope="module")
def client(model, folder):
    app = create_app(model, str(folder), Settings(max_request_rows=50, max_body_bytes=64 * 1024, batch_wait_ms=20))
    with TestClient(app) as test_client:
        wait_healthy(test_client)
        yield test_client


def wait_healthy(test_client, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while test_client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "the server never became healthy"
        time.sleep(0.05)


def expected(model, rows: list[dict]) -> list[dict]:
    return json.loads(model.predict(pd.DataFrame(rows)).to_json(orient="records"))


def assert_same(got: list[dict], want: list[dict], model) -> None:
    """Labels exactly; numbers within float32 rounding. A row predicted in a merged batch goes through
    other CPU kernels than the same row alone (they depend on batch size and CPU), so it may differ
    in the last bits: relative to the value, with a floor for values near zero of 1e-5 of the
    output's scale (its training std in data units; 1 for probabilities)."""
    scale = {feature.config.name: feature.stats["std"] for feature in model.outputs_ if "std" in feature.stats}
    assert len(got) == len(want)
    for have, should in zip(got, want):
        assert have.keys() == should.keys()
        for key, value in should.items():
            if isinstance(value, float):
                assert have[key] == pytest.approx(value, rel=1e-4, abs=1e-5 * scale.get(key, 1.0)), key
            else:
                assert have[key] == value, key


def test_predict_json_rows_match_model_predict(client, model):
    rows = [ROW, {**ROW, "age": 70, "city": "oslo", "member": None, "tags": ["c"]}]
    response = client.post("/predict", json={"rows": rows})
    assert response.status_code == 200, response.text
    want = expected(model, [ROW, {**ROW, "age": 70, "city": "oslo", "member": None, "tags": "c"}])
    assert_same(response.json()["predictions"], want, model)
    assert set(want[0]) >= {"income", "income_probability", "segment_probability_young", "spend"}


def test_predict_forms_and_bare_lists(client, model):
    want = expected(model, [ROW])
    for response in (client.post("/predict", json=[ROW]),
                     client.post("/predict", data={key: str(value) for key, value in ROW.items()}),
                     client.post("/predict", files={"tags": (None, "a|b")}, data={"age": "41.5", "city": "rome",
                                                                                  "member": "yes"})):
        assert response.status_code == 200, response.text
        assert_same(response.json()["predictions"], want, model)
    empty = client.post("/predict", data={"age": "", "city": "", "member": "", "tags": ""})
    assert empty.status_code == 200, empty.text  # empty form fields are missing values


@pytest.mark.parametrize("body, status, words", [
    ({"rows": [{"city": "rome", "member": "yes", "tags": "a"}]}, 422, ["rows[0]", "'age'", "missing"]),
    ({"rows": [{**ROW, "age": "old"}]}, 422, ["rows[0].age", "valid number"]),
    ({"rows": [{**ROW, "member": "maybe"}]}, 422, ["rows[0].member", "'maybe'", "'no', 'yes'"]),
    ({"rows": [{**ROW, "tags": {"a": 1}}]}, 422, ["rows[0].tags"]),
    ({"rows": []}, 422, ["rows"]),
    ({"rows": [ROW] * 51}, 413, ["51 rows", "limit of 50", "--max-request-rows"]),
    ("not an object", 422, ["rows"]),
])
def test_bad_requests_name_the_field(client, body, status, words):
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail
    assert "Traceback" not in response.text
    assert client.post("/predict", json={"rows": [ROW]}).status_code == 200  # still serving


def test_bad_bodies(client):
    cases = [(client.post("/predict", content=b"{oops", headers={"content-type": "application/json"}), 400, "JSON"),
             (client.post("/predict", content=b"x" * 70_000), 413, "--max-body-mb"),
             (client.post("/predict", content=b"age=1", headers={"content-type": "text/csv"}), 415, "text/csv")]
    for response, status, word in cases:
        assert response.status_code == status and word in response.json()["detail"], response.text
    assert client.post("/predict", json={"rows": [ROW]}).status_code == 200


def test_concurrent_requests_are_merged_and_answered_in_order(model, folder):
    # inline_rows 0: every request goes through the batcher's queue, however the requests happen to overlap
    app = create_app(model, str(folder), Settings(batch_wait_ms=20, inline_rows=0))
    rows = [{**ROW, "age": 20 + 3 * position} for position in range(16)]
    start = threading.Barrier(len(rows))
    with TestClient(app) as client:
        wait_healthy(client)
        batcher = client.app.state.batcher
        before = batcher.calls

        def send(row):
            start.wait()
            return client.post("/predict", json={"rows": [row]})

        with ThreadPoolExecutor(len(rows)) as pool:
            responses = list(pool.map(send, rows))
    assert all(response.status_code == 200 for response in responses)
    calls = batcher.calls - before
    assert calls < len(rows), f"{len(rows)} concurrent requests took {calls} predict calls"
    for response, row in zip(responses, rows):  # each client gets the prediction of its own row
        assert_same(response.json()["predictions"], expected(model, [row]), model)


def test_batcher_merges_queued_jobs_within_the_row_limit():
    sizes = []

    def predict(rows):
        sizes.append(len(rows))
        if "bad" in rows:
            raise ValueError("bad row")
        return [row * 2 for row in rows]

    batcher = Batcher(predict, max_rows=5, wait_seconds=0.0)
    futures = [batcher.submit([position, position + 100]) for position in range(6)]
    futures.append(batcher.submit(["bad"]))
    batcher.start()
    try:
        assert [future.result(10) for future in futures[:6]] == [[2 * p, 2 * p + 200] for p in range(6)]
        with pytest.raises(ValueError, match="bad row"):
            futures[6].result(10)
    finally:
        batcher.stop()
    assert max(sizes) <= 5 and len(sizes) < 7  # merged, never over 5 rows
    alone = Batcher(predict, max_rows=1).start()  # max_rows 1: no merging
    try:
        assert [future.result(10) for future in [alone.submit([1]), alone.submit([2])]] == [[2], [4]]
    finally:
        alone.stop()


def test_a_lone_small_request_is_predicted_by_its_own_thread_when_the_model_is_fast():
    threads = []

    def predict(rows):
        threads.append(threading.current_thread().name)
        if "bad" in rows:
            raise ValueError("bad row")
        return [row * 2 for row in rows]

    batcher = Batcher(predict, inline_rows=2)
    assert batcher.run_now([1]) is None  # no predict has been timed yet: it might be a slow model
    batcher.start()
    try:  # the worker predicts the first job, and times it
        assert batcher.submit([1]).result(10) == [2] and threads == ["lamina-batcher"]
    finally:
        batcher.stop()
    assert batcher.small_seconds < 1.0
    assert batcher.run_now([3]) == [6] and threads[-1] == threading.current_thread().name
    assert batcher.run_now([1, 2, 3]) is None  # over inline_rows: queued, to be batched
    with pytest.raises(ValueError, match="bad row"):
        batcher.run_now(["bad"])  # the caller gets the error
    calls = batcher.calls
    batcher.jobs.put_nowait(Job([5]))  # another request waits: this one queues behind it
    assert batcher.run_now([4]) is None and batcher.calls == calls
    batcher.jobs.get_nowait()
    batcher.small_seconds = 1.0  # a slow model: every request goes to the worker
    assert batcher.run_now([4]) is None
    assert Batcher(predict, inline_rows=0).run_now([1]) is None  # 0: never


def test_health_waits_for_the_warm_up(model, folder):
    release = threading.Event()
    slow = types.SimpleNamespace(inputs_=model.inputs_, outputs_=model.outputs_, metrics_=model.metrics_,
                                 training_=model.training_,
                                 predict=lambda frame: (release.wait(10), model.predict(frame))[1],
                                 predict_rows=lambda rows: (release.wait(10), model.predict_rows(rows))[1])
    with TestClient(create_app(slow, str(folder))) as test_client:
        assert test_client.get("/health").json() == {"status": "warming up"}
        release.set()
        wait_healthy(test_client)
        assert test_client.get("/health").json() == {"status": "ok"}


def test_unexpected_errors_are_500_without_traceback(model, folder):
    def broken(frame):
        raise RuntimeError("secret internal detail")

    failing = types.SimpleNamespace(inputs_=model.inputs_, outputs_=model.outputs_, metrics_=model.metrics_,
                                    training_=model.training_, predict=broken, predict_rows=broken)
    with TestClient(create_app(failing, str(folder)), raise_server_exceptions=False) as test_client:
        response = test_client.post("/predict", json={"rows": [ROW]})
        assert response.status_code == 500
        assert "secret" not in response.text and "Traceback" not in response.text
        assert test_client.get("/health").status_code == 503  # the warm-up failed too


def test_metadata_and_openapi_follow_the_inputs(client):
    metadata = client.get("/metadata").json()
    assert metadata["lamina_version"] == lamina.__version__ and metadata["explain"] is True
    inputs = {item["name"]: item for item in metadata["inputs"]}
    assert {name: item["type"] for name, item in inputs.items()} == {
        "age": "number", "city": "category", "member": "binary", "tags": "set"}
    assert sorted(inputs["city"]["values"]) == ["oslo", "paris", "rome"]
    assert "roc_auc" in metadata["metrics"]["test"]["income"]
    schema = client.get("/openapi.json").json()
    row = schema["components"]["schemas"]["Row"]
    assert row["required"] == ["age", "city", "member", "tags"]
    assert {"type": "number"} in row["properties"]["age"]["anyOf"]
    assert "rome" in row["properties"]["city"]["description"]
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    assert "multipart/form-data" in body


def test_page_has_a_control_per_input(client):
    page = client.get("/").text
    assert '<input id="age" name="age" type="number"' in page
    assert '<select id="city" name="city">' in page and '<option value="rome"' in page
    assert '<select id="member" name="member">' in page and 'id="tags"' in page


def test_explain_gives_attributions_per_input(client):
    pytest.importorskip("captum")
    response = client.post("/explain", json={"rows": [ROW, ROW]})
    assert response.status_code == 200, response.text
    rows = response.json()["explanations"]["rows"]
    assert len(rows) == 2 and set(rows[0]["scores"]) == set(ROW)
    assert client.get("/metadata").json()["explain"] is True


def test_explain_of_a_bad_row_names_the_field(client):
    response = client.post("/explain", json={"rows": [{**ROW, "member": "maybe"}]})
    assert response.status_code in (400, 422) and "member" in response.json()["detail"]


# --- images -------------------------------------------------------------------------------------

def png(colour: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10), (colour, colour, colour)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_client(tmp_path_factory):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, 80)
    frame = pd.DataFrame({"photo": [np.full((10, 10, 3), level, dtype=np.uint8) for level in levels],
                          "label": np.where(levels > 127, "bright", "dark")})
    settings = {"inputs": [{"name": "photo", "type": "image", "size": 8, "width": 4, "stages": 1,
                            "embedding_size": 4}], "outputs": [{"name": "label", "type": "category"}]}
    model = lamina.Model(config(**settings)).fit(frame, quiet=True)
    with TestClient(create_app(model, "images")) as test_client:
        wait_healthy(test_client)
        yield test_client, model


def test_images_as_base64_or_uploads(image_client):
    test_client, model = image_client
    want = expected(model, [{"photo": np.full((10, 10, 3), 250, dtype=np.uint8)}])
    encoded = base64.b64encode(png(250)).decode()
    for response in (test_client.post("/predict", json={"rows": [{"photo": encoded}]}),
                     test_client.post("/predict", json={"rows": [{"photo": "data:image/png;base64," + encoded}]}),
                     test_client.post("/predict", files={"photo": ("white.png", png(250), "image/png")})):
        assert response.status_code == 200, response.text
        assert_same(response.json()["predictions"], want, model)


@pytest.mark.parametrize("value, words", [
    ("not base64!", ["rows[0].photo", "base64"]),
    (base64.b64encode(b"GIF89a but not really").decode(), ["rows[0].photo", "cannot read the image"]),
    (base64.b64encode(png(9)[:40]).decode(), ["rows[0].photo", "cannot read the image"]),
    ("/etc/passwd", ["rows[0].photo", "base64"]),  # a string is never opened as a server path
])
def test_unreadable_images_name_the_field(image_client, value, words):
    test_client, _ = image_client
    response = test_client.post("/predict", json={"rows": [{"photo": value}]})
    assert response.status_code == 422, response.text
    assert all(word in response.json()["detail"] for word in words), response.text
    upload = test_client.post("/predict", files={"photo": ("x.png", b"\x89PNG broken", "image/png")})
    assert upload.status_code == 422 and "photo" in upload.json()["detail"]


# --- the command ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_serves_until_stopped(folder):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lamina.cli", "serve", str(folder), "--port", str(port),
                                "--max-batch-rows", "8", "--batch-wait-ms", "1", "--log-level", "warning"],
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 120, None
        while status != 200:
            assert time.monotonic() < deadline and process.poll() is None, "lamina serve did not start"
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                status = response.status
            except OSError:
                time.sleep(0.2)
        connection.request("POST", "/predict", json.dumps({"rows": [ROW]}), {"Content-Type": "application/json"})
        answer = json.loads(connection.getresponse().read())
        assert answer["predictions"][0]["income"] in ("high", "low")
        connection.request("GET", "/metadata")
        assert json.loads(connection.getresponse().read())["serving"]["max_batch_rows"] == 8
    finally:
        process.terminate()
        process.wait(30)


# --- sound, sensor series and ids ---------------------------------------------------------------

def wav(frequency: float, rate: int = 8000) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    time = np.arange(int(0.25 * rate)) / rate
    soundfile.write(buffer, (0.5 * np.sin(2 * np.pi * frequency * time)).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def test_sound_series_and_id_inputs_are_served(tmp_path):
    pytest.importorskip("soundfile")
    rng = np.random.default_rng(0)
    rows = 60
    high = rng.random(rows) < 0.5
    frame = pd.DataFrame({
        "sound": [np.sin(2 * np.pi * (1200 if h else 300) * np.arange(2000) / 8000).astype(np.float32) for h in high],
        "series": [[[float(v)] for v in rng.normal(size=5)] for _ in range(rows)],
        "user": rng.choice(["ann", "bob", "cid"], rows),
        "pitch": np.where(high, "high", "low")})
    config = {"inputs": [{"name": "sound", "type": "audio", "sample_rate": 8000, "duration": 0.25, "mels": 16,
                          "width": 4, "stages": 2, "embedding_size": 8},
                         {"name": "series", "type": "timeseries", "width": 8, "layers": 1, "embedding_size": 8},
                         {"name": "user", "type": "id"}],
              "outputs": [{"name": "pitch", "type": "category"}], "hidden": {"layers": 1, "size": 8},
              "training": {"epochs": 1}}
    model = lamina.Model(config).fit(frame, quiet=True)
    model.save(tmp_path / "model")
    with TestClient(create_app(lamina.load(tmp_path / "model"), str(tmp_path / "model"))) as client:
        row = {"sound": base64.b64encode(wav(1200, rate=16000)).decode(), "series": "0.1;0.2;0.3",
               "user": "someone-new"}
        response = client.post("/predict", json={"rows": [row]})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["pitch"] in ("high", "low")
        bad = client.post("/predict", json={"rows": [{**row, "sound": base64.b64encode(b"not a sound").decode()}]})
        assert bad.status_code in (400, 422) and "sound" in bad.json()["detail"]
        schema = client.get("/openapi.json").json()
        assert "sound" in json.dumps(schema) and "series" in json.dumps(schema)
        # the web page's form holds the series as inline numbers, the one string form a series takes
        assert '<textarea id="series" name="series" rows="3">0;0;0;0</textarea>' in client.get("/").text
        form = client.post("/predict", data={"series": "0;0;0;0", "user": "ann"},
                           files={"sound": ("a.wav", wav(300, rate=8000), "audio/wav")})
        assert form.status_code == 200, form.text


def test_an_input_type_that_cannot_be_served_is_refused_when_the_app_is_made():
    from lamina.features import base
    from lamina.serving.schema import RequestProblem

    unserved = base.Feature(types.SimpleNamespace(name="scan", type="novel"))  # a type without request_field
    stand_in = types.SimpleNamespace(inputs_=[unserved], outputs_=[])
    with pytest.raises(RequestProblem, match="input 'scan' of type 'novel' cannot be served yet"):
        create_app(stand_in, "novel")
