"""The web page of `lamina serve`, end to end in headless Chromium (Debian's chromium and
chromium-driver, driven by selenium): fill the form, upload an image, submit, and see the
prediction with its probabilities, with no error in the browser console."""
from __future__ import annotations

import shutil
import socket
import threading
import time

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
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    uvicorn_server = uvicorn.Server(uvicorn.Config(create_app(model, "people"), log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
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
