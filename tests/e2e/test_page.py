"""The producer's page in a real headless Chromium: it asks for a key when refused, an upload through its form
reaches 100 % live, failed rows download.

Debian's `chromium` and `chromium-driver` packages (`make browser`) are driven through WebDriver; a real
`python -m producer` with UPLOAD_TOKEN set serves the page and a real worker drains the queue.
"""

import csv
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.keys import bearer, create_key
from tests.helpers.ledger import as_database_url, fresh_database
from tests.helpers.producer import csv_file, producer
from tests.helpers.worker import start_worker

ROWS, POISON = 40, frozenset({4, 19, 33})
KEY, WRONG_KEY = "page-test-key", "not-the-key"
REFUSED = "a valid bearer credential is required: an API key, UPLOAD_TOKEN or an OIDC token"
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


def shown(browser: WebDriver, element_id: str, start: str) -> str:
    """The element's text once it starts with `start` (for WebDriverWait.until: "" until then)."""
    element = browser.find_element(By.ID, element_id)
    return element.text if element.is_displayed() and element.text.startswith(start) else ""


def enter_key(browser: WebDriver, key: str) -> None:
    browser.find_element(By.CSS_SELECTOR, "#key-form input[name=key]").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()


@pytest.fixture
def asked(browser: WebDriver, queue_name: str, tmp_path: Path) -> Iterator[str]:
    """The page of a producer with UPLOAD_TOKEN set, once orders.csv was sent through it without a key: what it
    says as it asks for one."""
    data = tmp_path / "orders.csv"
    data.write_bytes(csv_file(ROWS, poison=POISON))
    with producer(queue_name, UPLOAD_TOKEN=KEY) as (url, _pid):
        browser.get(f"{url}/")
        browser.execute_script("window.loadedOnce = true")
        browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(data))
        upload_button(browser).click()
        yield waiting(browser).until(lambda b: shown(b, "key-problem", "The producer needs an API key"))


def waiting(browser: WebDriver) -> WebDriverWait:
    return WebDriverWait(browser, 60, poll_frequency=0.2)


def upload_button(browser: WebDriver) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, "#upload-form button")


def test_the_page_asks_for_a_key_when_refused_and_says_so_again_of_a_wrong_one(browser: WebDriver,
                                                                             asked: str) -> None:
    assert asked == f"The producer needs an API key (401: {REFUSED})."
    wait = waiting(browser)
    assert wait.until(lambda b: shown(b, "upload-result", "Upload refused")).startswith("Upload refused (401: ")

    enter_key(browser, WRONG_KEY)
    upload_button(browser).click()
    refused = wait.until(lambda b: shown(b, "key-problem", "The producer refused the key"))
    assert refused == f"The producer refused the key (401: {REFUSED}). Enter it again."
    assert wait.until(lambda b: shown(b, "upload-result", "Upload refused")).startswith("Upload refused (401: ")
    assert browser.execute_script("return sessionStorage.length") == 0, "a refused key is not kept"


@pytest.mark.usefixtures("asked")
def test_an_upload_with_the_key_reaches_100_percent_on_the_page_and_its_failed_rows_download(
        browser: WebDriver, queue_name: str, tmp_path: Path) -> None:
    wait = waiting(browser)
    enter_key(browser, KEY)
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    upload_button(browser).click()
    result = wait.until(lambda b: shown(b, "upload-result", "Queued"))
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

    button = item.find_element(By.CSS_SELECTOR, ".download")
    assert button.text == f"Download the {len(POISON)} failed rows (CSV)"
    button.click()
    failed = downloaded(tmp_path / "downloads", f"{upload_id}-failed.csv")

    # Asked for once, kept for the tab only, and never written into an address.
    assert browser.execute_script("return sessionStorage.getItem('kubejob-api-key')") == KEY
    assert browser.execute_script("return localStorage.length") == 0
    addresses = browser.execute_script(
        "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]")
    assert any(a.endswith("/failed") for a in addresses) and not [a for a in addresses if KEY in a]
    with open(failed, newline="") as f:
        assert list(csv.reader(f)) == [["id", "name", "poison", "_row", "_attempts", "_error"]] + [
            [str(i), f"name {i}", "yes", str(i), "2", f"RuntimeError: poison row {i}"] for i in sorted(POISON)]


def test_a_producer_with_no_key_configured_takes_an_upload_from_the_page_without_asking(
        browser: WebDriver, queue_name: str, tmp_path: Path) -> None:
    data = tmp_path / "orders.csv"
    data.write_bytes(csv_file(ROWS))
    with producer(queue_name) as (url, _pid):
        browser.get(f"{url}/")
        browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(data))
        upload_button(browser).click()
        assert waiting(browser).until(lambda b: shown(b, "upload-result", "Queued")).startswith(f"Queued {ROWS} rows")
        assert not browser.find_element(By.ID, "key-form").is_displayed()
        assert browser.execute_script("return sessionStorage.length") == 0


def test_with_a_tenant_s_key_the_page_shows_that_tenant_s_uploads_only(browser: WebDriver, queue_name: str) -> None:
    # A database of its own: a key in the run's shared one would close the open mode other tests upload in.
    with fresh_database() as url, as_database_url(url):
        alpha, beta = create_key("alpha", "upload", "read"), create_key("beta", "upload", "read")
        with producer(queue_name) as (base, _pid):
            ids = {key: httpx.post(f"{base}/upload", files={"file": ("orders.csv", csv_file(3), "text/csv")},
                                   headers=bearer(key), timeout=30).json()["upload_id"] for key in (alpha, beta)}
            browser.get(f"{base}/")
            waiting(browser).until(lambda b: shown(b, "key-problem", "The producer needs an API key"))
            enter_key(browser, alpha)
            waiting(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, f'li[data-id="{ids[alpha]}"]'))
            time.sleep(1.5)  # a poll more (POLL_MS): whatever else the list would show is there by now
            shown_ids = [li.get_attribute("data-id") for li in browser.find_elements(By.CSS_SELECTOR, "li[data-id]")]
    assert shown_ids == [ids[alpha]]


def test_the_owner_pauses_resumes_and_cancels_an_upload_from_the_page(browser: WebDriver, queue_name: str) -> None:
    with producer(queue_name, UPLOAD_TOKEN=KEY) as (url, _pid):
        upload_id = httpx.post(f"{url}/upload", files={"file": ("orders.csv", csv_file(ROWS), "text/csv")},
                               headers=bearer(KEY), timeout=30).json()["upload_id"]
        browser.get(f"{url}/")
        waiting(browser).until(lambda b: shown(b, "key-problem", "The producer needs an API key"))
        enter_key(browser, KEY)
        item = waiting(browser).until(lambda b: b.find_element(By.CSS_SELECTOR, f'li[data-id="{upload_id}"]'))
        wait = waiting(browser)

        def buttons() -> list[str]:
            return [b.text for b in item.find_elements(By.CSS_SELECTOR, ".controls button") if b.is_displayed()]

        wait.until(lambda _: text(item, ".state") == "processing")
        assert buttons() == ["Pause", "Cancel"]
        item.find_element(By.CSS_SELECTOR, ".pause").click()
        wait.until(lambda _: text(item, ".state") == "paused" and buttons() == ["Resume", "Cancel"])
        assert httpx.get(f"{url}/uploads/{upload_id}", headers=bearer(KEY), timeout=10).json()["state"] == "paused"
        item.find_element(By.CSS_SELECTOR, ".resume").click()
        wait.until(lambda _: text(item, ".state") == "processing" and buttons() == ["Pause", "Cancel"])

        item.find_element(By.CSS_SELECTOR, ".cancel").click()
        browser.switch_to.alert.dismiss()  # asked first, and not cancelled when told no
        time.sleep(1.5)  # a poll more (POLL_MS)
        assert text(item, ".state") == "processing"
        item.find_element(By.CSS_SELECTOR, ".cancel").click()
        browser.switch_to.alert.accept()
        wait.until(lambda _: text(item, ".state") == "cancelled" and buttons() == [])
        assert text(item, ".n-cancelled") == str(ROWS) and text(item, ".time-label") == "Cancelled after"
        status = httpx.get(f"{url}/uploads/{upload_id}", headers=bearer(KEY), timeout=10).json()
    assert (status["state"], status["cancelled"]) == ("cancelled", ROWS)
