"""The producer's page in a real headless Chromium: an upload through its form reaches 100 % live, failed rows download.

Debian's `chromium` and `chromium-driver` packages (`make browser`) are driven through WebDriver; a real
`python -m producer` serves the page and a real worker drains the queue.
"""

import csv
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.producer import csv_file, producer
from tests.helpers.worker import start_worker

ROWS, POISON = 40, frozenset({4, 19, 33})
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1100,900"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A fresh headless Chromium (its own profile) that saves downloads in tmp_path/downloads."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("Debian's chromium and chromedriver are needed: make browser "
                    "(apt-get install chromium chromium-driver)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"),
                                              "download.prompt_for_download": False})
    # An explicit chromedriver keeps Selenium from looking for (and downloading) one of its own.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    yield driver
    driver.quit()


def text(item: WebElement, selector: str) -> str:
    return item.find_element(By.CSS_SELECTOR, selector).text


def downloaded(folder: Path, name: str, timeout: float = 30) -> Path:
    """The file once Chromium has finished writing it (no `.crdownload` left)."""
    deadline, path = time.monotonic() + timeout, folder / name
    while not path.exists() or any(folder.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"{name} was not downloaded; {folder} has {list(folder.glob('*'))}"
        time.sleep(0.1)
    return path


def test_an_upload_reaches_100_percent_on_the_page_and_its_failed_rows_download(
        browser: WebDriver, queue_name: str, tmp_path: Path) -> None:
    data = tmp_path / "orders.csv"
    data.write_bytes(csv_file(ROWS, poison=POISON))
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    with producer(queue_name) as (url, _pid):
        browser.get(f"{url}/")
        browser.execute_script("window.loadedOnce = true")
        browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(data))
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        result = wait.until(lambda b: b.find_element(By.ID, "upload-result").text.startswith("Queued")
                            and b.find_element(By.ID, "upload-result").text)
        upload_id = result.rsplit(" ", 1)[1].rstrip(".")
        assert result == f"Queued {ROWS} rows of orders.csv as upload {upload_id}."
        item = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, f'li[data-id="{upload_id}"]'))
        assert (text(item, ".name"), text(item, ".upload-id"), text(item, ".state")) == \
            ("orders.csv", upload_id, "processing")
        assert (text(item, ".percent"), text(item, ".n-done")) == ("0 %", "0")
        assert not item.find_element(By.CSS_SELECTOR, ".download").is_displayed(), "no failed rows yet"

        worker = start_worker(queue_name, tmp_path / "handled", "fail_poison", WORKER_MAX_ATTEMPTS="2")
        wait.until(lambda _: text(item, ".state") == "done")
        assert worker.wait(timeout=60) == 0
        bar = item.find_element(By.CSS_SELECTOR, "[role=progressbar]")
        assert (bar.get_attribute("aria-valuenow"), bar.get_attribute("aria-valuemax")) == (str(ROWS), str(ROWS))
        assert text(item, ".percent") == "100 %"
        assert [text(item, f".n-{n}") for n in ("rows", "confirmed", "done", "failed")] == \
            [str(ROWS), str(ROWS), str(ROWS - len(POISON)), str(len(POISON))]
        failed_part = item.find_element(By.CSS_SELECTOR, ".bar-failed").size["width"] / bar.size["width"]
        assert failed_part == pytest.approx(len(POISON) / ROWS, abs=0.02), "the failed share of the bar"
        assert text(item, ".time-label") == "Took" and text(item, ".rate") != "—"
        assert browser.execute_script("return window.loadedOnce"), "the page reloaded instead of updating"
        browser.save_screenshot(str(tmp_path / "page.png"))

        link = item.find_element(By.CSS_SELECTOR, ".download")
        assert link.text == f"Download the {len(POISON)} failed rows (CSV)"
        link.click()
        failed = downloaded(tmp_path / "downloads", f"{upload_id}-failed.csv")
    with open(failed, newline="") as f:
        assert list(csv.reader(f)) == [["id", "name", "poison", "_row", "_attempts", "_error"]] + [
            [str(i), f"name {i}", "yes", str(i), "2", f"RuntimeError: poison row {i}"] for i in sorted(POISON)]
