"""The web page of `lamina serve`, end to end in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): fill the form, upload an image, submit, and see the
prediction with its probabilities, with no error in the browser console."""
from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

import lamina

from helpers_data import config, people

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("the browser test needs Debian's chromium and chromium-driver (apt-get install chromium "
                "chromium-driver; `make setup` installs them when run as root)", allow_module_level=True)
pytest.importorskip("selenium", reason="the browser test needs selenium: pip install 'lamina[dev]'")
pytest.importorskip("uvicorn", reason="lamina serve needs the serve extra: pip install 'lamina[serve]'")

import uvicorn  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from lamina.serving.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A model with every input control (number, category, binary, set, image) served by uvicorn
    on a free loopback port, in a background thread."""
    frame = people(120)
    frame["photo"] = [np.full((8, 8, 3), int(age * 3), dtype=np.uint8) for age in frame["age"]]
    inputs = [{"name": "age", "type": "number"}, {"name": "city", "type": "category"},
              {"name": "member", "type": "binary"}, {"name": "tags", "type": "set", "delimiter": "|"},
              {"name": "photo", "type": "image", "size": 8, "width": 4, "stages": 1, "embedding_size": 4}]
    model = lamina.Model(config(inputs=inputs, outputs=[{"name": "segment", "type": "category"}])).fit(
        frame, quiet=True)
    with serving(model, "people") as address:
        yield address


@contextmanager
def serving(model, name: str):
    """`model` served by uvicorn on a free loopback port, in a background thread; yields its address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    uvicorn_server = uvicorn.Server(uvicorn.Config(create_app(model, name), log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        uvicorn_server.should_exit = True
        thread.join(30)
        listener.close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def test_form_predicts_with_probabilities(server, browser, tmp_path):
    picture = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), (90, 90, 90)).save(picture)
    browser.get(server)
    assert browser.title == "lamina: people"
    age = browser.find_element(By.ID, "age")
    age.clear()
    age.send_keys("66")
    Select(browser.find_element(By.ID, "city")).select_by_visible_text("rome")
    Select(browser.find_element(By.ID, "member")).select_by_visible_text("yes")
    tags = browser.find_element(By.ID, "tags")
    tags.clear()
    tags.send_keys("a|c")
    browser.find_element(By.ID, "photo").send_keys(str(picture))
    browser.find_element(By.ID, "predict").click()
    heading = WebDriverWait(browser, 30).until(
        lambda driver: driver.find_elements(By.CSS_SELECTOR, "#result h3[data-output='segment']"))[0]
    assert heading.text.startswith("segment: ") and "probability" in heading.text
    assert heading.text.split()[1] in ("young", "middle", "senior")
    rows = browser.find_elements(By.CSS_SELECTOR, "#result table tr")
    assert sorted(row.text.split()[0] for row in rows) == ["middle", "senior", "young"]
    assert browser.find_element(By.ID, "status").text == ""
    problems = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems


def test_crafted_labels_do_not_stop_the_page_script(browser):
    """Labels that would end or comment out the page's <script> if embedded raw: the form still
    predicts and shows them as text."""
    crafted = ["<!--<script>x", "</script><script>alert(1)</script>", "plain"]
    frame = people(60)
    frame["segment"] = frame["segment"].map(dict(zip(["young", "middle", "senior"], crafted)))
    frame["city"] = frame["city"].map(dict(zip(["paris", "rome", "oslo"], crafted)))
    model = lamina.Model(config(inputs=[{"name": "age", "type": "number"}, {"name": "city", "type": "category"}],
                                outputs=[{"name": "segment", "type": "category"}], training={"epochs": 1})).fit(
        frame, quiet=True)
    with serving(model, "crafted") as address:
        browser.get(address)
        Select(browser.find_element(By.ID, "city")).select_by_visible_text(crafted[0])
        browser.find_element(By.ID, "predict").click()
        heading = WebDriverWait(browser, 30).until(
            lambda driver: driver.find_elements(By.CSS_SELECTOR, "#result h3[data-output='segment']"))[0]
        assert heading.text.split(": ", 1)[1].rsplit(" (probability", 1)[0] in crafted  # the browser collapses spaces
        rows = browser.find_elements(By.CSS_SELECTOR, "#result table tr")
        assert sorted(row.find_element(By.TAG_NAME, "td").text for row in rows) == sorted(crafted)
        problems = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert not problems, problems
