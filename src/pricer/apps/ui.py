"""The deal agents' web UI (Gradio): opportunities, live agent activity, a price box, the vector store.

- the opportunities the planner surfaced, from memory, with their notification status;
- a live tail of the agents' log (a ``LogBuffer``), refreshed by a ``gr.Timer``;
- "price this product": a text -> each agent's estimate and the ensemble's;
- a 2-D PCA of the vector store's embeddings, coloured by category.

``build_app`` only builds the Blocks (tests pass their own planner, store and log buffer);
``launch`` builds from ``configs/agents.yaml`` and serves. The UI reads memory and prices
on demand; the planner's cycles run elsewhere (the Prefect deployment, ``pricer deals``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from pricer.agents import logbuffer
from pricer.agents.config import AgentsConfig, load_agents_config

log = logging.getLogger("pricer.agents.ui")

TABLE_COLUMNS = ["discount", "price", "estimate", "title", "notification", "found", "feed", "url"]
PLOT_COLUMNS = ["pc1", "pc2", "category", "title", "price"]


def _money(value: Any) -> str:
    try:
        return f"${float(value):,.2f}"
    except (TypeError, ValueError):
        return ""


def opportunities_frame(memory: Any, limit: int = 200) -> pd.DataFrame:
    frame = memory.opportunities(limit)
    if frame.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return pd.DataFrame(
        {
            "discount": frame["discount"].map(lambda value: f"{value:.0%}"),
            "price": frame["price"].map(_money),
            "estimate": frame["estimate"].map(_money),
            "title": frame["title"].str.slice(0, 70),
            "notification": frame["notification"].fillna(""),
            "found": frame["created_at"],
            "feed": frame["feed"],
            "url": frame["url"],
        },
        columns=TABLE_COLUMNS,
    )


def price_answer(planner: Any, text: str) -> tuple[str, pd.DataFrame]:
    text = (text or "").strip()
    if not text:
        return "Type or paste a product description first.", pd.DataFrame(columns=["agent", "estimate"])
    try:
        result = planner.price(text)
    except Exception as error:  # the box reports it; the app keeps running
        log.exception("pricing from the UI failed")
        return f"Pricing failed: {type(error).__name__}: {error}", pd.DataFrame(columns=["agent", "estimate"])
    rows = [
        {"agent": name, "estimate": _money(value) or "no answer"} for name, value in result["agents"].items()
    ]
    rows.append({"agent": "ensemble", "estimate": _money(result["ensemble"]) or "no answer"})
    if result["ensemble"] is None:
        summary = "No agent could price it" + (
            f" (skipped: {', '.join(result['skipped'])})" if result["skipped"] else ""
        )
    else:
        summary = f"**Ensemble estimate: {_money(result['ensemble'])}**"
        if result["skipped"]:
            summary += f"  \nSkipped agents: {', '.join(result['skipped'])}"
    log.info("UI priced a product at %s", _money(result["ensemble"]) or "nothing")
    return summary, pd.DataFrame(rows, columns=["agent", "estimate"])


def projection_frame(store: Any, max_points: int) -> pd.DataFrame:
    if store is None:
        return pd.DataFrame(columns=PLOT_COLUMNS)
    try:
        return store.projection(max_points)
    except Exception as error:  # noqa: BLE001 - the plot is optional; the page must load
        log.warning("vector store plot unavailable: %s", error)
        return pd.DataFrame(columns=PLOT_COLUMNS)


def build_app(
    config: AgentsConfig | None = None,
    *,
    planner: Any = None,
    store: Any = None,
    log_buffer: logbuffer.LogBuffer | None = None,
) -> gr.Blocks:
    """The Blocks app over a planner (its memory and agents), a product store and a log buffer."""
    config = config or load_agents_config()
    buffer = log_buffer or logbuffer.install(capacity=max(1000, config.ui.log_lines))
    if planner is None:
        from pricer.agents.planner import Planner

        planner = Planner(config)
    if store is None:
        from pricer.agents.vectorstore import ProductStore

        vs = config.vectorstore
        store = (
            ProductStore(vs.path, vs.collection, batch_size=vs.batch_size) if Path(vs.path).exists() else None
        )
    ui = config.ui

    def refresh() -> tuple[pd.DataFrame, str]:
        return opportunities_frame(planner.memory, ui.table_rows), buffer.tail(ui.log_lines)

    with gr.Blocks(title="Pricer deals", analytics_enabled=False) as app:
        gr.Markdown(
            "# Pricer deal hunter\nOpportunities the agents surfaced, what they are doing, and a price box."
        )
        with gr.Row():
            with gr.Column(scale=3):
                table = gr.Dataframe(
                    value=lambda: opportunities_frame(planner.memory, ui.table_rows),
                    label="Opportunities",
                    elem_id="opportunities",
                    interactive=False,
                    wrap=True,
                )
            with gr.Column(scale=2):
                logs = gr.Textbox(
                    value=lambda: buffer.tail(ui.log_lines),
                    label="Agent activity (live)",
                    lines=14,
                    max_lines=14,
                    autoscroll=True,
                    interactive=False,
                    elem_id="agent-log",
                )
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(
                    label="Price this product",
                    lines=5,
                    elem_id="price-input",
                    placeholder="Title and description of a product",
                )
                button = gr.Button("Price it", variant="primary", elem_id="price-button")
                answer = gr.Markdown(elem_id="price-answer")
                per_agent = gr.Dataframe(
                    headers=["agent", "estimate"],
                    label="Each agent",
                    interactive=False,
                    elem_id="price-agents",
                )
            with gr.Column():
                gr.ScatterPlot(
                    value=lambda: projection_frame(store, ui.plot_max_points),
                    x="pc1",
                    y="pc2",
                    color="category",
                    tooltip=["title", "price", "category"],
                    label="Vector store (PCA of the embeddings)",
                    height=420,
                    elem_id="vector-plot",
                )
        timer = gr.Timer(ui.refresh_s)
        timer.tick(refresh, outputs=[table, logs], show_progress="hidden")
        button.click(lambda value: price_answer(planner, value), inputs=text, outputs=[answer, per_agent])
        text.submit(lambda value: price_answer(planner, value), inputs=text, outputs=[answer, per_agent])
    return app


def launch(
    host: str | None = None,
    port: int | None = None,
    config_path: str | Path = "configs/agents.yaml",
    **kwargs: Any,
) -> Any:
    """Build the app from the config file and serve it (blocking unless ``prevent_thread_lock=True``)."""
    config = load_agents_config(config_path)
    app = build_app(config)
    app.queue()
    return app.launch(
        server_name=host or config.ui.host, server_port=port if port is not None else config.ui.port, **kwargs
    )
