"""Hostile requests to `lamina serve`: strings naming the server's files, decompression bombs
(images and sounds small on the wire, huge once decoded), deep JSON, huge and malformed bodies,
crafted labels in the web page. Each is refused with a 4xx that names the limit and reveals
nothing of the server, never a 500, while the server keeps answering good requests correctly."""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="lamina serve needs the serve extra: pip install 'lamina[serve]'")
pytest.importorskip("uvicorn", reason="lamina serve needs the serve extra: pip install 'lamina[serve]'")
soundfile = pytest.importorskip("soundfile")
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import lamina  # noqa: E402
from lamina.serving import page  # noqa: E402
from lamina.serving.app import Settings, create_app  # noqa: E402
from lamina.serving.batcher import Allowance, Busy  # noqa: E402

from helpers_data import config, people  # noqa: E402

RATE = 8000  # the sound input's rate: files sent at it are not resampled, so predictions match exactly
LIMITS = dict(max_body_bytes=2 * 2 ** 20, max_request_pixels=20_000_000, max_request_samples=2_000_000)
REVEALING = ["no such file", "exists", "not found", "No such", "Errno"]


def png(size: tuple[int, int], mode: str = "RGB", colour=0) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def sound(samples: np.ndarray, rate: int = RATE, format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=format, subtype="FLOAT" if format == "WAV" else "PCM_16")
    return buffer.getvalue()


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


BOMB = png((6300, 6300), mode="1")  # about 5 KB on the wire, 39.7 million pixels once decoded
GOOD = {"photo": encoded(png((8, 8), colour=(200, 200, 200))), "sound": encoded(sound(np.zeros(800, np.float32))),
        "series": "0.1;0.2;0.3"}


@pytest.fixture(scope="module")
def files_model(tmp_path_factory):
    """A tiny model over an image, a sound and a sensor series whose config names server folders
    (root:, augment.noise_files), as a training config may."""
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "root").mkdir()
    noise = folder / "root" / "noise.wav"
    noise.write_bytes(sound(np.zeros(800, np.float32)))
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, 40)
    frame = pd.DataFrame({
        "photo": [np.full((8, 8, 3), level, dtype=np.uint8) for level in levels],
        "sound": [(level / 255 * np.sin(np.arange(800) / 3)).astype(np.float32) for level in levels],
        "series": [[float(level) / 255, 0.5, 0.25] for level in levels],
        "label": np.where(levels > 127, "bright", "dark")})
    root = str(folder / "root")
    inputs = [{"name": "photo", "type": "image", "size": 8, "width": 4, "stages": 1, "embedding_size": 4, "root": root},
              {"name": "sound", "type": "audio", "sample_rate": RATE, "duration": 0.1, "mels": 8, "width": 4,
               "stages": 1, "embedding_size": 4, "root": root, "augment": {"noise_files": [str(noise)]}},
              {"name": "series", "type": "timeseries", "width": 8, "layers": 1, "embedding_size": 4, "root": root}]
    model = lamina.Model(config(inputs=inputs, outputs=[{"name": "label", "type": "category"}],
                                hidden={"layers": 1, "size": 8}, training={"epochs": 1})).fit(frame, quiet=True)
    return model, folder


@pytest.fixture(scope="module")
def files_client(files_model):
    model, _ = files_model
    with TestClient(create_app(model, "files", Settings(**LIMITS)), raise_server_exceptions=False) as client:
        wait_healthy(lambda: client.get("/health").status_code)
        yield client


def wait_healthy(status, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while status() != 200:
        assert time.monotonic() < deadline, "the server never became healthy"
        time.sleep(0.05)


def assert_same(got: list[dict], want: list[dict]) -> None:
    """Labels exactly; probabilities within float32 rounding (merged batches differ in the last bits)."""
    assert len(got) == len(want)
    for have, should in zip(got, want):
        assert have.keys() == should.keys()
        for key, value in should.items():
            if isinstance(value, float):
                assert have[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
            else:
                assert have[key] == value, key


def assert_reveals_nothing(text: str, *paths: str) -> None:
    for secret in [*paths, os.path.expanduser("~"), *REVEALING]:
        assert secret not in text, f"the answer reveals {secret!r}: {text}"


# --- request strings are data, never server paths ------------------------------------------------

def path_forms(target: Path, root: Path) -> list[str]:
    """The ways a client could name `target`: absolute, relative to root: (or the working folder)
    with ../, and from the home folder with ~."""
    return [str(target), os.path.relpath(target, root), os.path.relpath(target, Path.cwd()),
            "~/" + os.path.relpath(target, Path.home())]


def form_request(client, encoding: str, row: dict):
    if encoding == "json":
        return client.post("/predict", json={"rows": [row]})
    if encoding == "multipart":
        return client.post("/predict", files={name: (None, value) for name, value in row.items()})
    return client.post("/predict", data=row)


@pytest.mark.parametrize("encoding", ["json", "multipart", "urlencoded"])
@pytest.mark.parametrize("field, own", [("photo", "photo.png"), ("sound", "sound.wav"), ("series", "series.npy")])
def test_request_strings_are_never_read_as_server_paths(files_client, files_model, field, own, encoding):
    _, folder = files_model
    data = folder / "data"
    data.mkdir(exist_ok=True)
    (data / "photo.png").write_bytes(png((8, 8)))
    (data / "sound.wav").write_bytes(sound(np.zeros(800, np.float32)))
    (data / "series.csv").write_text("1,2\n3,4\n")
    np.save(data / "series.npy", np.ones((4, 1)))
    for name in (own, "series.csv"):
        for text in path_forms(data / name, folder / "root"):
            response = form_request(files_client, encoding, {**GOOD, field: text})
            assert response.status_code == 422, (text, response.text)
            assert f"rows[0].{field}" in response.json()["detail"], response.text
            assert_reveals_nothing(response.text, str(data), str(folder), text)
    assert form_request(files_client, encoding, GOOD).status_code == 200  # and the same row with data is served


def test_metadata_page_and_schema_show_no_server_paths(files_client, files_model):
    _, folder = files_model
    metadata = files_client.get("/metadata").json()
    for item in metadata["inputs"]:
        assert not {"root", "weights", "noise_files", "pretrained"} & set(item["options"]), item["options"]
        assert "noise_files" not in (item["options"].get("augment") or {})
    for path in ("/metadata", "/", "/openapi.json"):
        text = files_client.get(path).text
        assert str(folder) not in text and "noise.wav" not in text, path


# --- nesting, bodies, forms ----------------------------------------------------------------------

@pytest.mark.parametrize("route", ["/predict", "/explain"])
def test_deep_json_is_refused_with_the_limit_named(files_client, route):
    headers = {"content-type": "application/json"}
    for body in ("[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"rows": [' + "[" * 70 + "]" * 70 + "]}",
                 json.dumps({"rows": [{**GOOD, "series": json.loads("[" * 70 + "]" * 70)}]})):
        response = files_client.post(route, content=body.encode(), headers=headers)
        assert response.status_code == 400, response.text
        assert "64 levels" in response.json()["detail"], response.text
    # brackets inside strings are text, not nesting: an ignored key full of them is fine
    fine = files_client.post(route, json={"rows": [{**GOOD, "comment": "[" * 100_000}]})
    assert fine.status_code in (200, 501), fine.text
    for encoding in ("multipart", "urlencoded"):  # a form field is one flat string, read as inline numbers
        response = form_request(files_client, encoding, {**GOOD, "series": "[" * 100_000})
        assert response.status_code == 422 and "rows[0].series" in response.json()["detail"], response.text


def multipart(fields: dict[str, bytes | str], boundary: str = "lamina-boundary") -> tuple[bytes, dict]:
    parts = []
    for name, value in fields.items():
        data = value.encode() if isinstance(value, str) else value
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data + b"\r\n")
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), headers


def test_malformed_and_oversized_bodies(files_client):
    many = multipart({f"field{number}": "1" for number in range(5000)})
    cases = [
        (b"\xff\xfe{}", {"content-type": "application/json"}, 400),  # not UTF-8
        (b"[" * 3 * 2 ** 20, {"content-type": "application/json"}, 413),  # over --max-body-mb
        (many[0], many[1], 400),  # more form fields than any model has inputs
        ("&".join(f"f{number}=1" for number in range(5000)).encode(),
         {"content-type": "application/x-www-form-urlencoded"}, 400),
        (b"age=1", {"content-type": "text/csv"}, 415),
    ]
    for body, headers, status in cases:
        response = files_client.post("/predict", content=body, headers=headers)
        assert response.status_code == status, response.text
        assert "Traceback" not in response.text and response.json()["detail"]
    assert files_client.post("/predict", json={"rows": [GOOD]}).status_code == 200


# --- decoding budgets --------------------------------------------------------------------------

def test_images_and_sounds_are_charged_to_the_request_before_decoding(files_client):
    over_image = files_client.post("/predict", json={"rows": [{**GOOD, "photo": encoded(BOMB)}]})
    assert over_image.status_code == 413, over_image.text
    assert all(word in over_image.json()["detail"] for word in ["rows[0].photo", "6300x6300", "--max-image-pixels"])
    nine_million = encoded(png((3000, 3000), mode="1"))
    within = files_client.post("/predict", json={"rows": [{**GOOD, "photo": nine_million}] * 2})
    assert within.status_code == 200, within.text
    over_request = files_client.post("/predict", json={"rows": [{**GOOD, "photo": nine_million}] * 3})
    assert over_request.status_code == 413, over_request.text
    words = ["rows[2].photo", "20,000,000", "--max-request-pixels"]
    assert all(word in over_request.json()["detail"] for word in words), over_request.text
    long_sound = encoded(sound(np.zeros(3_000_000, np.float32), format="FLAC"))  # silence: a few KB of FLAC
    over_sound = files_client.post("/predict", json={"rows": [{**GOOD, "sound": long_sound}]})
    assert over_sound.status_code == 413, over_sound.text
    assert all(word in over_sound.json()["detail"] for word in ["rows[0].sound", "--max-request-samples"])
    odd_rate = encoded(sound(np.zeros(800, np.float32), rate=44101))  # prime-ish rates make huge resampling filters
    refused = files_client.post("/predict", json={"rows": [{**GOOD, "sound": odd_rate}]})
    assert refused.status_code == 422 and "44101 Hz" in refused.json()["detail"], refused.text


def test_decoded_files_of_concurrent_requests_share_one_allowance(files_model):
    model, _ = files_model
    settings = Settings(**{**LIMITS, "max_decoded_pixels": 20_000_000})  # one request's worth at a time
    body = {"rows": [{**GOOD, "photo": encoded(png((3000, 3000), mode="1"))}] * 2}  # 18 million pixels
    with TestClient(create_app(model, "files", settings)) as client, ThreadPoolExecutor(4) as pool:
        wait_healthy(lambda: client.get("/health").status_code)
        answers = list(pool.map(lambda _: client.post("/predict", json=body), range(4)))
        assert [answer.status_code for answer in answers] == [200] * 4, answers[0].text
        allowance = client.app.state.allowance
        assert allowance.free == list(allowance.capacity)  # every share given back
    waiting = Allowance(10, 10, wait_seconds=0.05)
    held = waiting.take(8, 0)
    with pytest.raises(Busy, match="retry shortly"):
        waiting.take(5, 0)
    waiting.give(held)
    assert waiting.take(100, 100) == (10, 10)  # a share is at most the whole allowance


# --- the web page --------------------------------------------------------------------------------

CRAFTED = ["<!--<script>x", "</script><script>alert(1)</script>", "a & b > c \u2028\u2029"]


def embedded_json(html: str) -> tuple[str, dict]:
    text = re.search(r'<script id="metadata" type="application/json">(.*?)</script>', html, re.S).group(1)
    return text, json.loads(text)


def test_page_escapes_every_embedded_json():
    metadata = {"model": "m", "explain": False, "inputs": [],
                "outputs": [{"name": "label", "type": "category", "options": {}, "values": CRAFTED}]}
    html = page.render(metadata, {})
    text, parsed = embedded_json(html)
    assert not set("<>&\u2028\u2029") & set(text), text
    assert parsed == {"outputs": metadata["outputs"], "explain": False}  # still the same JSON
    assert html.count("<script") == 2 and "alert(1)</script>" not in html


def test_page_of_a_model_with_crafted_labels(tmp_path):
    frame = people(60)
    frame["city"] = frame["city"].map(dict(zip(["paris", "rome", "oslo"], CRAFTED)))
    frame["segment"] = frame["segment"].map(dict(zip(["young", "middle", "senior"], CRAFTED)))
    model = lamina.Model(config(inputs=[{"name": "age", "type": "number"}, {"name": "city", "type": "category"}],
                                outputs=[{"name": "segment", "type": "category"}], training={"epochs": 1})).fit(
        frame, quiet=True)
    with TestClient(create_app(model, "crafted")) as client:
        html = client.get("/").text
        text, parsed = embedded_json(html)
        assert not set("<>&") & set(text), text
        assert sorted(parsed["outputs"][0]["values"]) == sorted(label.strip() for label in CRAFTED)  # read trimmed
        assert parsed["outputs"] == client.get("/metadata").json()["outputs"]
        assert html.count("<script") == 2 and "<!--" not in html and "alert(1)</script>" not in html
        assert '<option value="&lt;!--&lt;script&gt;x"' in html  # the input's vocabulary, escaped as HTML


# --- a real server under hostile and good requests at once --------------------------------------

@contextmanager
def served(model, settings: Settings):
    """`model` served by uvicorn on a free loopback port, in a background thread; yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model, "hostile", settings), log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        wait_healthy(lambda: call(port, "GET", "/health")[0] if server.started else None)
        yield port
        assert thread.is_alive(), "the server stopped"
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60.0) -> tuple[int | None, bytes, float]:
    """(status, body, seconds) of one request; status None when the server closed the connection
    while an oversized body was still being sent (after refusing it)."""
    start = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read(), time.monotonic() - start
    except (BrokenPipeError, ConnectionResetError):
        return None, b"", time.monotonic() - start
    finally:
        connection.close()


def json_body(value) -> tuple[bytes, dict]:
    return json.dumps(value).encode(), {"content-type": "application/json"}


def test_bombs_are_refused_quickly_and_health_keeps_answering(files_model):
    """The attack as reported: 60 rows of a 5 KB PNG of 6300x6300 pixels (a 393 KB body) used to
    be decoded on the event loop, holding every other request for seconds."""
    model, _ = files_model
    body, headers = json_body({"rows": [{**GOOD, "photo": encoded(BOMB)}] * 60})
    with served(model, Settings()) as port, ThreadPoolExecutor(4) as pool:
        bombs = [pool.submit(call, port, "POST", "/predict", body, headers) for _ in range(3)]
        waits = []
        while not all(bomb.done() for bomb in bombs):
            status, _, seconds = call(port, "GET", "/health")
            assert status == 200
            waits.append(seconds)
        answers = [bomb.result() for bomb in bombs]
    assert all(status == 413 and b"--max-image-pixels" in text for status, text, _ in answers), answers
    assert max(seconds for _, _, seconds in answers) < 20, answers  # refused from the headers, not decoded
    assert max(waits, default=0.0) < 5, waits  # generous: the machine is shared; blocked, it was 8+ s


def hostile_requests(folder: Path) -> list[tuple[str, bytes, dict]]:
    deep = "[" * 100_000
    many = multipart({f"field{number}": "1" for number in range(5000)})
    return [
        ("/predict", deep.encode(), {"content-type": "application/json"}),
        ("/explain", deep.encode(), {"content-type": "application/json"}),
        ("/predict", *json_body({"rows": [{**GOOD, "series": json.loads("[" * 70 + "]" * 70)}]})),
        ("/predict", b"x" * (3 * 2 ** 20), {"content-type": "application/json"}),  # over --max-body-mb
        ("/predict", b"{oops", {"content-type": "application/json"}),
        ("/predict", b"\xff\xfe\x00", {"content-type": "application/json"}),
        ("/predict", b"a=1", {"content-type": "text/csv"}),
        ("/predict", *many),
        ("/predict", *json_body({"rows": [{**GOOD, "photo": encoded(BOMB)}] * 10})),
        ("/predict", *json_body({"rows": [{**GOOD, "photo": encoded(png((3000, 3000), mode="1"))}] * 3})),
        ("/predict", *json_body({"rows": [{**GOOD, "photo": encoded(png((9, 9))[:40])}]})),  # truncated
        ("/predict", *json_body({"rows": [{**GOOD, "sound": encoded(sound(np.zeros(3_000_000, np.float32),
                                                                            format="FLAC"))}]})),
        ("/predict", *json_body({"rows": [{**GOOD, "sound": encoded(sound(np.zeros(80, np.float32), rate=44101))}]})),
        ("/predict", *json_body({"rows": [{**GOOD, "series": str(folder / "root" / "noise.wav")}]})),
        ("/predict", *json_body({"rows": [{**GOOD, "series": "~/.bashrc.csv"}]})),
        ("/predict", *json_body({"rows": [{**GOOD, "photo": "/etc/passwd"}]})),
        ("/explain", *json_body({"rows": [{**GOOD, "series": "../../etc/hosts.txt"}]})),
        ("/predict", *json_body({"rows": [GOOD] * 5000})),  # over --max-request-rows
    ]


def test_real_server_keeps_serving_good_requests_among_hostile_ones(files_model):
    model, folder = files_model
    rng = np.random.default_rng(1)
    good = []
    for level in rng.integers(0, 256, 12):
        samples = (level / 255 * np.sin(np.arange(800) / 3)).astype(np.float32)
        row = {"photo": np.full((8, 8, 3), level, dtype=np.uint8), "sound": samples, "series": [[level / 255], [0.5]]}
        sent = {"photo": encoded(png((8, 8), colour=(int(level),) * 3)), "sound": encoded(sound(samples)),
                "series": [[level / 255], [0.5]]}
        want = json.loads(model.predict(pd.DataFrame([row])).to_json(orient="records", double_precision=15))
        good.append((sent, want))
    hostile = hostile_requests(folder)
    with served(model, Settings(**LIMITS, max_request_rows=100)) as port, ThreadPoolExecutor(6) as pool:
        answers = [pool.submit(call, port, "POST", path, body, headers) for path, body, headers in hostile]
        goods = [pool.submit(call, port, "POST", "/predict", *json_body({"rows": [sent]})) for sent, _ in good]
        for (path, body, _), answer in zip(hostile, answers):
            status, text, _ = answer.result()
            assert status is None or 400 <= status < 500, (path, body[:80], status, text)
            assert b"Traceback" not in text and b"internal error" not in text
            assert_reveals_nothing(text.decode("utf-8", "replace"), str(folder))
        for (_, want), answer in zip(good, goods):
            status, text, _ = answer.result()
            assert status == 200, text
            assert_same(json.loads(text)["predictions"], want)
        assert call(port, "GET", "/health")[0] == 200
