"""The "speak to it" page for real: ``python -m wavy_pipeline.speak`` on a free port of
127.0.0.1 in a copy of the project after a default run, driven over HTTP and in headless
Chromium (Debian's ``chromium`` + ``chromium-driver``, Selenium, as the kedro-viz test).

Chromium's fake microphone plays an example recording into the page's own record button.
The browser's network is closed (every host name but 127.0.0.1 resolves to nothing), and
the test checks that the page fetched nothing from anywhere else.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = PROJECT_ROOT / "data" / "01_raw" / "speak_examples"
STARTUP_S = 300  # importing torch, transformers and diffusers, loading every model
CONCURRENT = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def speak_server(demo_outputs, tmp_path, background):
    """``python -m wavy_pipeline.speak`` in the demo copy; yields ``(url, process)``."""
    port = free_port()
    log = tmp_path / "speak-server.log"
    server = background(
        [sys.executable, "-m", "wavy_pipeline.speak", "--port", str(port)],
        cwd=demo_outputs,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"},
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while True:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=5):
                break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on {url} in {STARTUP_S} s:\n{log.read_text()}")
            time.sleep(1)
    yield url, server
    assert "Traceback" not in log.read_text()  # every request answered, none crashed


def post(url: str, body: bytes, name: str = "x.wav", timeout: float = 300) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/api/speak?name={name}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def status(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/status", timeout=10) as response:
        return json.loads(response.read())


def wav_bytes(tmp_path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    path = tmp_path / "made.wav"
    sf.write(path, samples, rate, subtype=subtype)
    return path.read_bytes()


@pytest.mark.slow
def test_bad_input_gets_a_message_and_eight_concurrent_requests_are_all_answered(
    speak_server, tmp_path
):
    url, server = speak_server
    example = (EXAMPLES / "red_circle.wav").read_bytes()
    code, answer = post(url, example, "red_circle.wav")
    assert code == 200, answer
    assert "red" in answer["transcript"] and len(answer["images"]) == 1
    assert answer["images"][0].startswith("data:image/png;base64,")
    assert len(answer["neighbours"]) == 5
    assert set(answer["timings"]) == {
        "decode + resample",
        "HuBERT",
        "SpeechCLIP + adapter",
        "diffusion",
        "PNG encode",
    }
    with urllib.request.urlopen(url + answer["neighbours"][0]["src"], timeout=10) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"

    # bad input: a reason each, never a stack trace
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    nan = tone.copy()
    nan[100] = np.nan
    refused = {
        "not audio": (b"this is not audio at all", 422, "unreadable audio"),
        "empty": (b"", 400, "empty upload"),
        "no samples": (wav_bytes(tmp_path, np.zeros(0, np.float32), rate), 422, "empty audio"),
        "silent": (wav_bytes(tmp_path, np.zeros(rate, np.float32), rate), 422, "silent"),
        "NaN": (wav_bytes(tmp_path, nan, rate, "FLOAT"), 422, "non-finite samples"),
        "too big": (b"\0" * (21 * 2**20), 413, "over the limit of 20 MB"),
    }
    for case, (body, code_expected, reason) in refused.items():
        code, answer = post(url, body, "bad.wav")
        assert code == code_expected, (case, answer)
        assert reason in answer["error"], (case, answer)
        assert "Traceback" not in answer["error"] and "/tmp" not in answer["error"]
    # any rate and channel count; long recordings cropped as in `audio`
    stereo = np.stack([np.tile(tone, 2)] * 2, axis=1)
    accepted = {
        "44.1 kHz stereo": (wav_bytes(tmp_path, stereo[: 2 * 44100], 44100), 44100, False),
        "8 kHz": (wav_bytes(tmp_path, tone[:8000], 8000), 8000, False),
        "a minute": (wav_bytes(tmp_path, np.tile(tone, 60), rate), rate, True),
    }
    for case, (body, source_rate, cropped) in accepted.items():
        code, answer = post(url, body, "ok.wav")
        assert code == 200, (case, answer)
        assert (answer["source_rate"], answer["cropped"]) == (source_rate, cropped), case

    # 8 at once: each is answered with images or told "busy", none is lost
    before = status(url)
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(lambda i: post(url, example, f"c{i}.wav"), range(CONCURRENT)))
    codes = [code for code, _ in results]
    assert len(results) == CONCURRENT and set(codes) <= {200, 503}, results
    assert all(len(answer["images"]) == 1 for code, answer in results if code == 200)
    assert all(answer["error"] == "busy, try again" for code, answer in results if code == 503)
    after = status(url)
    assert codes.count(200) >= 1
    assert after["refused"] - before["refused"] == codes.count(503)
    assert after["done"] - before["done"] == codes.count(200)
    assert (after["running"], after["waiting"]) == (False, 0)
    assert server.poll() is None
    assert post(url, example, "after.wav")[0] == 200


@pytest.fixture
def browser(chromium):
    return chromium(
        "--window-size=1100,1300",
        # the fake microphone, allowed without asking, playing an example once
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={EXAMPLES / 'red_circle.wav'}%noloop",
        # a closed network: only the server on 127.0.0.1 answers
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    )


def answers(driver) -> int:
    return int(driver.find_element("id", "result").get_attribute("data-answers") or 0)


@pytest.mark.slow
def test_the_page_records_from_the_microphone_and_takes_uploads(speak_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, server = speak_server
    wait = WebDriverWait(browser, 240)
    browser.get(url)
    wait.until(lambda d: "model ready" in d.find_element(By.ID, "status").text)

    # the page's own record button, fed by Chromium's fake microphone
    record = browser.find_element(By.ID, "record")
    record.click()
    wait.until(lambda d: "Stop" in record.text)
    time.sleep(2.0)
    record.click()
    wait.until(lambda d: answers(d) == 1 or d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text == ""
    transcript = browser.find_element(By.ID, "transcript").text
    assert "red" in transcript, transcript
    image = browser.find_element(By.CSS_SELECTOR, "#images img")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, "#neighbours img")) == 5
    assert "diffusion" in browser.find_element(By.ID, "timings").text
    shot = tmp_path / "speak.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("SPEAK_SCREENSHOT"):  # to refresh docs/speak.png
        browser.save_screenshot(os.environ["SPEAK_SCREENSHOT"])

    # the upload path
    upload = browser.find_element(By.ID, "upload")
    upload.send_keys(str(EXAMPLES / "the_green_triangle.wav"))
    wait.until(lambda d: answers(d) == 2)
    assert "green" in browser.find_element(By.ID, "transcript").text

    # not audio: the reason on the page, and the next request still works
    junk = tmp_path / "notes.txt"
    junk.write_text("not a recording")
    upload.send_keys(str(junk))
    wait.until(lambda d: d.find_element(By.ID, "error").text)
    assert "unreadable audio" in browser.find_element(By.ID, "error").text
    upload.send_keys(str(EXAMPLES / "red_circle.wav"))
    wait.until(lambda d: answers(d) == 3)
    assert browser.find_element(By.ID, "error").text == ""
    assert "red" in browser.find_element(By.ID, "transcript").text

    # nothing came from anywhere but the server (no CDN, no web fonts)
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert all(name.startswith((url, "data:")) for name in fetched), fetched
    assert server.poll() is None
