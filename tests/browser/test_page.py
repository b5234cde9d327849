#!/usr/bin/env python3
"""The page of `charlm serve` in a real browser: headless Chromium, driven by Selenium, against a real server.

usage: test_page.py CHARLM_BINARY OUTPUT_DIR

Trains two tiny models on a text made here, serves them, and checks that the page generates with a fixed seed
(streamed, tinted characters, a tooltip with alternatives, Stop), scores a text (figures, surprise tint,
neuron rows), loads nothing from outside the server, logs no console error and generates with the model its
picker names; then opens from file:// a copy of the page with a hand-made report embedded, and the report
`charlm eval --html` writes, and checks that each renders with no server at all; last, against the two models
served with --api-key, that the page asks for the key on the first 401, keeps it for the tab, asks no more, and
generates with the model picked. Screenshots of each view go to OUTPUT_DIR.
Exit code 0 pass, 1 fail, 77 skipped (no chromium, chromedriver or selenium).
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

SKIP = 77


def skip(reason):
    print(f"SKIP: {reason}")
    sys.exit(SKIP)


def find(name):
    return shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/lib/chromium/{name}") if os.path.exists(p)), None)


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def training_text(seed=7, characters=30000):
    """Sentences of a few made-up words, so that even a tiny model learns something visible in a few seconds."""
    rng = random.Random(seed)
    nouns = ["cat", "dog", "bird", "river", "stone", "garden", "lamp", "window", "road", "tree"]
    verbs = ["sees", "likes", "finds", "follows", "hears", "keeps"]
    adjectives = ["small", "quiet", "green", "old", "bright", "slow"]
    lines, size = [], 0
    while size < characters:
        sentence = f"The {rng.choice(adjectives)} {rng.choice(nouns)} {rng.choice(verbs)} the {rng.choice(nouns)}."
        if rng.random() < 0.3:
            sentence += f" It is {rng.choice(adjectives)}."
        lines.append(sentence)
        size += len(sentence) + 1
    return "\n".join(lines) + "\n"


def start_server(charlm, checkpoints, log_path, extra=()):
    """Starts `charlm serve CHECKPOINT... --port 0 EXTRA...`; returns the process and the URL it prints, once /health says ok."""
    with open(log_path, "w") as log:  # the server keeps its own copy of the descriptor
        server = subprocess.Popen([charlm, "serve", *checkpoints, "--port", "0", *extra], stdout=subprocess.PIPE, stderr=log, text=True)
    first_line = []
    reader = threading.Thread(target=lambda: first_line.append(server.stdout.readline()), daemon=True)
    reader.start()
    reader.join(15)
    url = first_line[0].strip() if first_line else ""
    if not url.startswith("http://"):
        stop_server(server)
        raise Failure(f"charlm serve printed no URL on stdout (got {url!r}); its log is {log_path}")
    # The page's own health check would log a 503 in the console while the model loads: wait it out here.
    deadline = time.time() + 15
    while True:
        try:
            with urllib.request.urlopen(url + "health", timeout=2) as response:
                if json.load(response).get("status") == "ok":
                    return server, url
        except OSError:
            pass
        if time.time() > deadline:
            stop_server(server)
            raise Failure(f"/health never said ok; the server's log is {log_path}")
        time.sleep(0.1)


def stop_server(server):
    if server and server.poll() is None:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def open_browser(webdriver, Service, chromium, chromedriver, profile_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", f"--user-data-dir={profile_dir}", "--window-size=1280,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_window_size(1280, 900)
    return driver


def console_errors(driver):
    """The browser console's errors since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def resources(driver):
    return driver.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")


def run(charlm, out_dir, work):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select, WebDriverWait

    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(training_text())
    run_dir = os.path.join(work, "run")
    trained = subprocess.run([charlm, "train", corpus, "--out", run_dir, "--steps", "150", "--hidden", "64", "--layers", "2",
                              "--seq", "50", "--batch", "16", "--eval-every", "150", "--threads", "2", "--seed", "1", "--quiet"],
                             capture_output=True, text=True, timeout=60)
    check(trained.returncode == 0, f"training failed: {trained.stderr.strip()}")
    checkpoint = os.path.join(run_dir, "best.safetensors")
    # A second model, of another shape, for the picker: the page asks for the one picked.
    small_dir = os.path.join(work, "small")
    trained = subprocess.run([charlm, "train", corpus, "--out", small_dir, "--steps", "20", "--hidden", "32", "--layers", "1",
                              "--seq", "50", "--batch", "16", "--eval-every", "20", "--threads", "2", "--seed", "2", "--quiet"],
                             capture_output=True, text=True, timeout=60)
    check(trained.returncode == 0, f"training the second model failed: {trained.stderr.strip()}")

    server, driver = None, None
    try:
        server, url = start_server(charlm, [checkpoint, "small=" + os.path.join(small_dir, "best.safetensors")],
                                   os.path.join(out_dir, "serve.log"))
        driver = open_browser(webdriver, Service, find("chromium"), find("chromedriver"), os.path.join(work, "profile"))
        wait = WebDriverWait(driver, 20)
        element = lambda css: driver.find_element(By.CSS_SELECTOR, css)
        elements = lambda css: driver.find_elements(By.CSS_SELECTOR, css)

        def fill(css, text):
            field = element(css)
            field.clear()
            field.send_keys(text)

        # --- the header: model and health
        driver.get(url)
        wait.until(lambda d: "\u00d7" in element("#model").text)
        check("LSTM 2 \u00d7 64" in element("#model").text, f"the header does not describe the model: {element('#model').text!r}")
        check("ok" in element("#health").get_attribute("class"), f"health is not ok: {element('#health').text!r}")

        # --- generate with a fixed seed, twice: the same text
        def generate(prompt, length, seed):
            fill("#prompt", prompt)
            fill("#length", str(length))
            fill("#seed", str(seed))  # "" draws a seed
            element("#generate").click()
            wait.until(lambda d: element("#gen-output").get_attribute("data-state") in ("done", "error"))
            check(element("#gen-output").get_attribute("data-state") == "done", f"generation failed: {element('#gen-error').text!r}")
            return driver.execute_script("return [...document.querySelectorAll('#gen-output .ch')].map(s => s.textContent).join('')")

        first = generate("The ", 160, 42)
        check(len(first) == 160, f"expected 160 streamed characters, got {len(first)}")
        check(element("#gen-output .prompt").get_attribute("textContent") == "The ", "the prompt is not shown before the generated text")
        check("seed 42" in element("#gen-seed").text, f"the seed is not shown: {element('#gen-seed').text!r}")
        check("chars/s" in element("#gen-stats").text, f"no characters per second: {element('#gen-stats').text!r}")
        tinted = driver.execute_script("return [...document.querySelectorAll('#gen-output .ch')]"
                                       ".filter(s => getComputedStyle(s).backgroundColor !== 'rgba(0, 0, 0, 0)')")
        check(tinted, "no generated character is tinted by its probability")
        ActionChains(driver).move_to_element(tinted[0]).perform()
        wait.until(lambda d: element("#tip").is_displayed())
        check("p =" in element("#tip").text and len(elements("#tip tr")) >= 2,
              f"the tooltip shows no alternatives: {element('#tip').text!r}")
        ActionChains(driver).move_to_element(element("h1")).perform()
        second = generate("The ", 160, 42)
        check(second == first, "the same seed gave a different text")

        # A seed the server draws runs past 2^53, which a JavaScript number cannot hold: "use again" must repeat the text.
        drawn = generate("The ", 120, "")
        digits = element("#gen-seed").text.split()[1]
        check(digits.isdigit(), f"the drawn seed is not shown: {element('#gen-seed').text!r}")
        element("#gen-seed button").click()
        check(element("#seed").get_attribute("value") == digits, "'use again' does not fill the seed field")
        again = generate("The ", 120, digits)
        check(again == drawn, f"seed {digits}, used again, gave a different text")

        # Stop mid-stream. A tiny model writes 4096 characters in a blink, so the browser's network is slowed
        # (the page sees the stream arrive over seconds) and Stop must end it early.
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                               {"offline": False, "latency": 0, "downloadThroughput": 20000, "uploadThroughput": -1})
        fill("#length", element("#length").get_attribute("max") or "4096")
        element("#generate").click()
        wait.until(lambda d: len(elements("#gen-output .ch")) > 0 or element("#gen-output").get_attribute("data-state") != "streaming")
        element("#stop").click()
        wait.until(lambda d: element("#gen-output").get_attribute("data-state") != "streaming")
        driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                               {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        state, streamed = element("#gen-output").get_attribute("data-state"), len(elements("#gen-output .ch"))
        check(state == "stopped", f"Stop left the page in state {state!r}: {element('#gen-error').text!r}")
        check(0 < streamed < int(element("#length").get_attribute("value")), f"Stop after {streamed} characters")
        check("stopped" in element("#gen-stats").text, f"the stats do not say stopped: {element('#gen-stats').text!r}")
        generate("The ", 300, 7)
        driver.save_screenshot(os.path.join(out_dir, "generate.png"))

        # --- score, then pick neurons from the most varying
        element("#tab-score").click()
        text = "The old cat sees the river.\nIt is quiet."
        fill("#score-text", text)
        element("#score").click()
        wait.until(lambda d: element("#view-score").get_attribute("data-state") in ("done", "error"))
        check(element("#view-score").get_attribute("data-state") == "done", f"scoring failed: {element('#score-error').text!r}")
        for figure in ("#nats", "#bits", "#perplexity"):
            value = element(figure).text
            check(value.replace(".", "", 1).isdigit(), f"{figure} shows {value!r}, not a number")
        check(len(elements("#score-output .col")) == len(text), "not one column per scored character")
        chips = elements("#varying .chip")
        check(len(chips) >= 2, f"expected most-varying neurons to pick from, got {len(chips)}")
        for pick in range(2):  # the list is drawn again after each pick: find the chip afresh
            chip = elements("#varying .chip")[pick]
            name = chip.find_element(By.TAG_NAME, "span").text
            chip.click()
            wait.until(lambda d: len(elements(f"#score-output .n[data-row='{pick}']")) == len(text))
            check(name in element("#rows").text, f"{name} is not labelled among the rows: {element('#rows').text!r}")
        ActionChains(driver).move_to_element(elements("#score-output .col")[5]).perform()
        wait.until(lambda d: element("#tip").is_displayed())
        check("loss" in element("#tip").text and "activations" in element("#tip").text.lower(), f"the score tooltip: {element('#tip').text!r}")
        ActionChains(driver).move_to_element(element("h1")).perform()
        driver.save_screenshot(os.path.join(out_dir, "score.png"))

        origin = url.rstrip("/")
        outside = [name for name in resources(driver) if not name.startswith(origin + "/")]
        check(not outside, f"the page loaded resources from outside the server: {outside}")
        errors = console_errors(driver)
        check(not errors, f"console errors: {errors}")

        # --- the server's refusals show in the page (each logs a failed request in the console: read after the check)
        element("#tab-generate").click()
        fill("#temperature", "0")
        element("#generate").click()
        wait.until(lambda d: element("#gen-output").get_attribute("data-state") != "streaming")
        check("temperature" in element("#gen-error").text, f"the server's error is not shown: {element('#gen-error').text!r}")
        console_errors(driver)

        # --- two models: the picker lists them as /v1/models does, and the one picked writes the text
        picker = element("#model-picker")
        check(picker.is_displayed(), "no model picker with two models served")
        names = [option.get_attribute("value") for option in picker.find_elements(By.TAG_NAME, "option")]
        check(names == ["run", "small"], f"the picker lists {names}, not run (the run directory's name) and small")
        fill("#temperature", "1")
        Select(picker).select_by_value("small")
        check("LSTM 1 \u00d7 32" in element("#model").text, f"the header does not describe the model picked: {element('#model').text!r}")
        picked = generate("The ", 80, 5)

        def completion(model):
            request = {"model": model, "prompt": "The ", "max_tokens": 80, "seed": 5, "temperature": 1,
                       "top_p": float(element("#top-p").get_attribute("value"))}
            sent = urllib.request.Request(url + "v1/completions", json.dumps(request).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(sent) as response:
                return json.load(response)["choices"][0]["text"]
        check(picked == completion("small"), "the page's text is not the picked model's for its seed")
        check(picked != completion("run"), "the two models wrote the same text: the test cannot tell which answered")
        Select(picker).select_by_value("run")
        check("LSTM 2 \u00d7 64" in element("#model").text, f"picking back: {element('#model').text!r}")

        # --- report mode: the served page with a report embedded, from file://, with no server
        with urllib.request.urlopen(url) as response:
            page = response.read().decode()
        check(')charlm_page"' not in page, "the page holds the raw string's end delimiter")
        placeholder = '<script id="charlm-report" type="application/json">null</script>'
        check(page.count(placeholder) == 1, "the page lacks exactly one report placeholder")
        report_text = "A <b>small</b> </script> report,\nscored."
        characters = list(report_text)
        activations = lambda scale: [round(scale * ((i % 7) - 3) / 3, 3) for i in range(len(characters))]
        report = {
            "model": "best.safetensors", "characters": len(characters), "characters_scored": len(characters) - 1,
            "unknown_characters": 0, "nats_per_character": 1.25, "perplexity": 3.49, "bits_per_character": 1.8,
            "text": characters, "loss": [None] + [0.1 + (i % 5) for i in range(1, len(characters))],
            "top": [None] + [[[c, 0.6], ["e", 0.2]] for c in characters[1:]],
            "neurons": [{"layer": 1, "unit": 3, "state": "cell", "activations": activations(2.0)},
                        {"layer": 0, "unit": 9, "state": "hidden", "activations": activations(0.5)}],
            "most_varying": [{"layer": 1, "unit": 3, "state": "cell", "std": 1.2}, {"layer": 0, "unit": 9, "state": "hidden", "std": 0.3}],
            "report": {"file": "notes.txt", "characters_total": 5000, "characters_rendered": len(characters)},
        }
        embedded = json.dumps(report).replace("<", "\\u003c")  # as charlm eval --html escapes it
        report_path = os.path.join(out_dir, "report.html")
        with open(report_path, "w") as f:
            f.write(page.replace(placeholder, placeholder.replace("null", embedded)))
        def open_report(path, text, total, file_name):
            """Opens a report from file:// and checks it shows its text, a note, no Generate, and rows from its own data."""
            driver.get("file://" + path)
            wait.until(lambda d: len(elements("#score-output .col")) == len(text))
            note = element("#report-note").text
            check(note.startswith(f"Scored {total:,} characters of {file_name}") and f"; showing the first {len(text):,}" in note,
                  f"report note: {note!r}")
            check(not element("#tab-generate").is_displayed() and not element("#view-generate").is_displayed(), "report mode shows Generate")
            check(not element("#add-neuron").is_displayed(), "report mode shows the add-a-neuron form")
            shown = driver.execute_script("return [...document.querySelectorAll('#score-output .col .c')].map(c => c.textContent).join('')")
            check(shown == text.replace("\n", ""), f"the report's text renders as {shown!r}")
            for pick in range(min(3, len(elements("#varying .chip")))):
                elements("#varying .chip")[pick].click()
                wait.until(lambda d: len(elements(f"#score-output .n[data-row='{pick}']")) == len(text))
            check(resources(driver) == [], f"report mode fetched {resources(driver)}")
            errors = console_errors(driver)
            check(not errors, f"console errors in report mode: {errors}")

        open_report(report_path, report_text, 5000, "notes.txt")
        check(element("#nats").text == "1.250", f"report figures: {element('#nats').text!r}")
        driver.save_screenshot(os.path.join(out_dir, "report.png"))

        # --- and the report charlm eval --html writes, of the first 400 characters of the corpus
        eval_report = os.path.join(out_dir, "eval-report.html")
        evaluated = subprocess.run([charlm, "eval", checkpoint, corpus, "--html", eval_report, "--html-chars", "400"],
                                   capture_output=True, text=True, timeout=60)
        check(evaluated.returncode == 0, f"charlm eval --html failed: {evaluated.stderr.strip()}")
        with open(corpus) as f:
            corpus_text = f.read()
        open_report(eval_report, corpus_text[:400], len(corpus_text), "corpus.txt")
        whole = element("#report-note").text
        check(re.search(r"corpus\.txt: [0-9.]+ nats/char, [0-9.]+ bits/char;", whole) is not None,
              f"the report should give the whole file's figures: {whole!r}")
        driver.save_screenshot(os.path.join(out_dir, "report.png"))

        # --- the same two models with --api-key: the page asks for the key once, on the first 401, keeps it for
        # the tab, and the picker's model answers with it
        stop_server(server)
        server, url = start_server(charlm, [checkpoint, "small=" + os.path.join(small_dir, "best.safetensors")],
                                   os.path.join(out_dir, "serve-key.log"), ("--api-key", "page-key"))
        driver.get(url)
        WebDriverWait(driver, 20).until(lambda d: _alert(d) is not None)
        _alert(driver).send_keys("page-key")
        _alert(driver).accept()
        wait.until(lambda d: "\u00d7" in element("#model").text)
        check(driver.execute_script("return sessionStorage.getItem('charlm-api-key')") == "page-key", "the key is not kept for the tab")
        driver.refresh()  # the same tab: no second question
        wait.until(lambda d: "\u00d7" in element("#model").text or _alert(d) is not None)
        check(_alert(driver) is None, "the page asked for the key again in the same tab")
        check(generate("The ", 160, 42) == first, "a completion with the key differs from the one without")
        picker = element("#model-picker")
        check(picker.is_displayed(), "no model picker once the key is given")
        fill("#temperature", "1")
        Select(picker).select_by_value("small")
        check(generate("The ", 80, 5) == picked, "with the key, the picked model's text differs from the one without")
    finally:
        if driver:
            driver.quit()
        stop_server(server)


def _alert(driver):
    """The open prompt, or None."""
    from selenium.common.exceptions import NoAlertPresentException
    try:
        alert = driver.switch_to.alert
        alert.text  # raises where there is none
        return alert
    except NoAlertPresentException:
        return None


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    charlm, out_dir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    try:
        import selenium  # noqa: F401
    except ImportError:
        skip("python3-selenium is not installed (apt-get install python3-selenium)")
    if not find("chromium"):
        skip("chromium is not installed (apt-get install chromium)")
    if not find("chromedriver"):
        skip("chromedriver is not installed (apt-get install chromium-driver)")
    os.makedirs(out_dir, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="charlm-browser-") as work:
        try:
            run(charlm, out_dir, work)
        except Failure as failure:
            print(f"FAIL: {failure}")
            return 1
        except Exception as error:  # a timeout or a lost browser: a failure, said in one line with where it happened
            line = next((frame.lineno for frame in reversed(traceback.extract_tb(error.__traceback__)) if frame.filename == __file__), "?")
            message = str(error).strip().splitlines()[0] if str(error).strip() else ""
            print(f"FAIL: {type(error).__name__} at line {line} of {os.path.basename(__file__)}: {message}")
            return 1
    print(f"PASS in {time.time() - started:.1f} s; screenshots in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
