"""The agents' Gradio UI in a real headless Chromium (selenium + chromedriver), against real cycles.

It runs a cycle from the page, opens an opportunity's detail, re-sends its alert to a real webhook receiver
and reads the 3-D plot's points, then saves a screenshot to ``reports/ui.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package (the ``browser`` fixture
skips, saying why, when one is missing).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from conftest import free_port
from deal_feeds import DealFeedServer, DealPage, WebhookReceiver, fit_text_regressor, register_champion
from pricer.agents import logbuffer
from pricer.agents.config import AgentsConfig
from pricer.agents.deals import Deal, deal_text
from pricer.agents.planner import Planner
from pricer.data.config import CurateConfig, DemoSourceConfig
from pricer.data.curate import curate

SCREENSHOT = Path(__file__).resolve().parents[1] / "reports" / "ui.png"  # git-ignored


def embedder_or_none():
    try:
        from pricer.models.embeddings import get_embedder
    except ImportError:
        return None
    return get_embedder()


ROWS = "[role=row].virtual-row"  # a Gradio 6 dataframe's body rows (the <table> only measures)
PLOT_POINTS = """
const plot = document.querySelector('#vector-plot .js-plotly-plot');
if (!plot || !plot._fullData) return null;  // the traces as plotly drew them (arrays decoded)
return plot._fullData.map(trace => [trace.type, (trace.x || []).length, (trace.customdata || [[]])[0]]);
"""


def test_ui_runs_cycles_opens_details_resends_alerts_and_maps_the_vector_store(
    tmp_path: Path, mlflow_uri: str, browser, monkeypatch
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from pricer.agents.outbox import resend_key
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
        with DealFeedServer([page(0, 0.4), page(1, 1.1), page(2, 0.3)]) as server, WebhookReceiver() as receiver:
            config = AgentsConfig.model_validate(
                {
                    "feeds": server.feeds_config(broken=False, missing=False),
                    "agents": {"specialist": {"model": "pricer-specialist"}, "frontier": {"config": None}},
                    "planner": {"discount_threshold": 0.35},
                    "memory": {"path": str(tmp_path / "memory.sqlite")},
                    "messenger": {"kind": "webhook", "url": receiver.url, "url_env": None, "max_retries": 0,
                                  "timeout_s": 5.0},
                    "tracking": {"experiment": "pricer-ui-test"},
                    "ui": {"refresh_s": 0.5},
                }
            )
            planner = Planner(config)
            report = planner.run_cycle()
            surfaced = {opp["title"] for opp in report.opportunities}
            assert len(surfaced) == 2 and len(receiver.delivered) == 2

            app = build_app(config, planner=planner, store=store, log_buffer=buffer)
            app.queue()
            port = free_port()
            app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
            browser.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(browser, 60, poll_frequency=0.25)
            wait.until(lambda driver: driver.title == "Pricer deals")

            # The opportunities table, read from memory; the live log is a tail of the agents' log.
            table = wait.until(lambda driver: driver.find_element(By.ID, "opportunities"))
            wait.until(lambda _: all(title[:40] in table.text for title in surfaced))
            assert "sent" in table.text
            log_box = browser.find_element(By.CSS_SELECTOR, "#agent-log textarea")
            wait.until(lambda _: "opportunity:" in (log_box.get_attribute("value") or ""))

            # "Run a cycle now": the cycle runs, its log streams into the page, its opportunity joins the table.
            server.add([page(3, 0.35)])
            browser.find_element(By.ID, "cycle-button").click()
            status = browser.find_element(By.ID, "cycle-status")
            wait.until(lambda _: "new opportunities" in status.text)
            assert "1 new deals" in status.text and "1 new opportunities" in status.text and "1 notified" in status.text
            cycle_log = browser.find_element(By.CSS_SELECTOR, "#cycle-log textarea").get_attribute("value") or ""
            lines = cycle_log.splitlines()
            assert len(lines) >= 4 and "cycle started from the UI" in lines[0]
            assert any("opportunity:" in line for line in lines) and any("agent regressor priced" in line for line in lines)
            new_title = test.iloc[3]["text"].partition("\n")[0]
            wait.until(lambda _: new_title[:40] in table.text)
            assert len(receiver.delivered) == 3

            # A row opens its detail: each agent's estimate (as surfaced and now), citations, the link.
            chosen = min(surfaced)
            row = next(r for r in table.find_elements(By.CSS_SELECTOR, ROWS) if chosen[:40] in r.text)
            row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")[3].click()
            detail = browser.find_element(By.ID, "detail")
            wait.until(lambda _: chosen[:30] in detail.text and "Open the deal" in detail.text)
            agents = browser.find_element(By.ID, "detail-agents")
            wait.until(lambda _: "regressor" in agents.text and "ensemble" in agents.text)
            assert "models:/pricer-regressor/1" in agents.text
            citations = browser.find_element(By.ID, "detail-citations")
            if store is not None:
                wait.until(lambda _: len(citations.find_elements(By.CSS_SELECTOR, ROWS)) == 5)
                cited = train.head(150)["title"].str[:25].tolist()
                assert any(title in citations.text for title in cited) and "$" in citations.text

            # Re-send: recorded in memory, delivered at the webhook under a new Idempotency-Key.
            key = next(o["key"] for o in [planner.memory.opportunity(k) for k in planner.memory.opportunities()["key"]]
                       if o["title"] == chosen)
            browser.find_element(By.ID, "resend-button").click()
            result = browser.find_element(By.ID, "resend-result")
            wait.until(lambda _: "delivered" in result.text)
            assert resend_key(key, 1) in result.text
            resent = receiver.delivered[-1]
            assert resent["headers"]["idempotency-key"] == resend_key(key, 1) and resent["body"]["resend_of"] == key
            assert len(receiver.delivered) == 4
            record = planner.memory.opportunity(key)["resends"]
            assert len(record) == 1 and record[0]["requested_by"].startswith("ui") and record[0]["sent_at"]
            wait.until(lambda _: "Re-send 1" in detail.text)

            # The price box still answers.
            browser.find_element(By.CSS_SELECTOR, "#price-input textarea").send_keys(test.iloc[5]["text"][:600])
            browser.find_element(By.ID, "price-button").click()
            answer = browser.find_element(By.ID, "price-answer")
            wait.until(lambda _: "Ensemble estimate: $" in answer.text)
            assert "Skipped agents: specialist, frontier" in answer.text

            # The 3-D map: one Scatter3d trace per category, every stored product a point with its title and price.
            if store is not None:
                traces = wait.until(lambda driver: driver.execute_script(PLOT_POINTS))
                assert {trace[0] for trace in traces} == {"scatter3d"}
                assert sum(trace[1] for trace in traces) == store.count() >= 140  # one product per id
                assert len(traces) == train.head(150)["category"].nunique()
                assert all(len(trace[2]) == 2 for trace in traces)  # (title, price) on hover
            height = browser.execute_script("return document.body.scrollHeight")
            browser.set_window_size(1400, max(1100, int(height) + 100))
            browser.find_element(By.ID, "detail").location_once_scrolled_into_view  # noqa: B018 - in view
            SCREENSHOT.parent.mkdir(exist_ok=True)
            assert browser.save_screenshot(str(SCREENSHOT))
            planner.close()
    finally:
        if app is not None:
            app.close()
        logging.getLogger("pricer.agents").removeHandler(buffer)
