"""The HTML report: self-contained (no network), every section present, and it renders without
errors in a real headless browser (Debian's chromium through Selenium)."""
from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

import lamina
from lamina import report
from lamina.cli import main

from helpers_data import config, people


@pytest.fixture(scope="module")
def trained():
    frame = people(300)
    model = lamina.Model(config()).fit(frame, quiet=True)
    model.compare(frame, resamples=100)
    return model, frame


def test_report_has_every_section_and_no_outside_resources(trained, tmp_path):
    model, frame = trained
    page = report.build(model, frame)
    for heading in ("Data and config", "Learning curves", "Metrics", "Test predictions", "Deep or classic?",
                    "What the model relies on", "Explained examples"):
        assert f"<h2>{heading}</h2>" in page, heading
    assert model.comparison_["verdict"].split("(")[0].strip() in page
    assert page.count("data:image/png;base64,") >= 6  # curves, confusion, ROC, PR, calibration, importance
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report must open without a network"


def test_report_of_a_saved_model_without_data(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "model")
    code = main(["report", "--model", str(tmp_path / "model")])
    assert code == 0
    page = (tmp_path / "model" / "report.html").read_text("utf-8")
    # no data given: the plots come from the test predictions saved in the folder (evaluation.json)
    assert page.count("data:image/png;base64,") >= 5 and "Give the training data" in page
    lamina.load(tmp_path / "model")  # report.html beside the model does not upset the checksums


def test_report_for_regression_category_and_text_outputs(tmp_path):
    frame = people(200)
    regression = config()
    regression["outputs"] = [{"name": "spend", "type": "number"}, {"name": "segment", "type": "category"}]
    page = report.build(lamina.Model(regression).fit(frame, quiet=True))
    assert page.count("data:image/png;base64,") >= 4  # curves, confusion, predicted vs true, residuals
    pairs = pd.DataFrame({"question": ["hi", "bye", "thanks"] * 30, "answer": ["hello", "see you", "welcome"] * 30})
    chat = {"inputs": [{"name": "question", "type": "text", "min_count": 1, "max_length": 4, "width": 16,
                        "layers": 1, "heads": 2}],
            "outputs": [{"name": "answer", "type": "text", "min_count": 1, "max_length": 4, "width": 16,
                         "layers": 1, "heads": 2}],
            "hidden": {"layers": 1, "size": 16}, "training": {"epochs": 1, "batch_size": 16}}
    model = lamina.Model(chat).fit(pairs, quiet=True)
    page = report.build(model, pairs)
    assert "<th>generated</th>" in page and "not explained by attributions" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                                      "(apt-get install chromium chromium-driver)")
def test_report_renders_in_headless_chromium_without_errors(trained, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    model, frame = trained
    path = tmp_path / "report.html"
    report.write(model, path, data=frame)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        browser.get(path.as_uri())
        assert browser.title.startswith("lamina report")
        headings = [element.text for element in browser.find_elements("tag name", "h2")]
        assert "Deep or classic?" in headings and "Explained examples" in headings
        images = browser.find_elements("tag name", "img")
        assert images and all(browser.execute_script("return arguments[0].naturalWidth", image) > 0
                              for image in images), "every embedded plot decodes"
        problems = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert not problems, problems
    finally:
        browser.quit()
