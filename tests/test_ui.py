"""The agents' Gradio UI in a real headless Chromium (selenium + chromedriver), against a real cycle.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``)
and the ``selenium`` package; skips with the reason when either is missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest

from deal_feeds import DealFeedServer, DealPage, fit_text_regressor, register_champion
from pricer.agents import logbuffer
from pricer.agents.config import AgentsConfig
from pricer.agents.deals import Deal, deal_text
from pricer.agents.planner import Planner
from pricer.data.config import CurateConfig, DemoSourceConfig
from pricer.data.curate import curate

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent (apt-get install chromium "
        "chromium-driver) - the UI test needs a real browser",
    ),
    pytest.mark.skipif(
        not CHROMEDRIVER.exists(), reason="chromedriver is absent (apt-get install chromium-driver)"
    ),
]
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def browser(tmp_path: Path):
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def embedder_or_none():
    try:
        from pricer.models.embeddings import get_embedder
    except ImportError:
        return None
    return get_embedder()


def test_ui_shows_opportunities_live_log_prices_and_the_vector_store(
    tmp_path: Path, mlflow_uri: str, browser, monkeypatch
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from pricer.agents.vectorstore import ProductStore
    from pricer.apps.ui import build_app

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    curate(CurateConfig(source=DemoSourceConfig(n_items=300)), root=tmp_path)
    train = pd.read_parquet(tmp_path / "data" / "curated" / "train.parquet")
    test = pd.read_parquet(tmp_path / "data" / "curated" / "test.parquet")
    model = fit_text_regressor(train)
    register_champion(model, "pricer-regressor", mae=40.0)

    def page(i: int, factor: float) -> DealPage:
        title, _, description = test.iloc[i]["text"].partition("\n")
        text = deal_text(Deal(url="http://x.test/", title=title, description=description, price=1, feed="f"))
        estimate = float(model.predict(pd.DataFrame({"text": [text]}))[0])
        return DealPage(f"p{i}", title, description, round(estimate * factor, 2))

    buffer = logbuffer.LogBuffer()
    logging.getLogger("pricer.agents").addHandler(buffer)
    logging.getLogger("pricer.agents").setLevel(logging.INFO)
    embedder = embedder_or_none()
    store = None
    if embedder is not None:
        store = ProductStore(tmp_path / "vectorstore", embedder=embedder)
        store.sync(train.head(150))
    app = None
    try:
        with DealFeedServer([page(0, 0.4), page(1, 1.1), page(2, 0.3)]) as server:
            config = AgentsConfig.model_validate(
                {
                    "feeds": server.feeds_config(broken=False, missing=False),
                    "agents": {"specialist": {"model": "pricer-specialist"}, "frontier": {"config": None}},
                    "planner": {"discount_threshold": 0.35},
                    "memory": {"path": str(tmp_path / "memory.sqlite")},
                    "messenger": {"kind": "log"},
                    "tracking": {"experiment": "pricer-ui-test"},
                    "ui": {"refresh_s": 0.5},
                }
            )
            planner = Planner(config)
            report = planner.run_cycle()
            surfaced = {opp["title"] for opp in report.opportunities}
            assert len(surfaced) == 2

            app = build_app(config, planner=planner, store=store, log_buffer=buffer)
            app.queue()
            port = free_port()
            app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
            browser.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(browser, 60, poll_frequency=0.25)
            wait.until(lambda driver: driver.title == "Pricer deals")

            # The opportunities table, read from memory.
            table = wait.until(lambda driver: driver.find_element(By.ID, "opportunities"))
            wait.until(lambda _: all(title[:40] in table.text for title in surfaced))
            assert "sent" in table.text

            # The live log is a tail of the agents' log, refreshed by the timer.
            log_box = browser.find_element(By.CSS_SELECTOR, "#agent-log textarea")
            wait.until(lambda _: "opportunity:" in (log_box.get_attribute("value") or ""))

            # The price box: each agent's estimate and the ensemble's.
            item = test.iloc[5]["text"]
            expected = planner.price(item)["ensemble"]
            browser.find_element(By.CSS_SELECTOR, "#price-input textarea").send_keys(item[:600])
            browser.find_element(By.ID, "price-button").click()
            answer = browser.find_element(By.ID, "price-answer")
            wait.until(lambda _: "Ensemble estimate: $" in answer.text)
            per_agent = browser.find_element(By.ID, "price-agents")
            wait.until(lambda _: "regressor" in per_agent.text and "ensemble" in per_agent.text)
            assert "Skipped agents: specialist, frontier" in answer.text
            assert expected is not None

            # A new cycle's opportunity appears without reloading the page.
            server.add([page(3, 0.35)])
            new = planner.run_cycle().opportunities
            assert len(new) == 1
            wait.until(lambda _: new[0]["title"][:40] in table.text)

            plot = browser.find_element(By.ID, "vector-plot")
            if store is not None:
                wait.until(lambda _: plot.find_elements(By.CSS_SELECTOR, "canvas, svg"))
            planner.close()
    finally:
        if app is not None:
            app.close()
        logging.getLogger("pricer.agents").removeHandler(buffer)
