"""The UI's 3-D map of the vector store: a PCA of the product embeddings, one colour per category.

Titles come from scraped and curated product text, so they are escaped before plotly sees them: its
hover labels render a few HTML tags (links among them), and a title is data, not markup.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import pandas as pd
import plotly.graph_objects as go

log = logging.getLogger("pricer.agents.ui")

AXES = ("pc1", "pc2", "pc3")
PLOT_COLUMNS = [*AXES, "category", "title", "price"]


def projection_frame(store: Any, max_points: int) -> pd.DataFrame:
    if store is None:
        return pd.DataFrame(columns=PLOT_COLUMNS)
    try:
        return store.projection(max_points, dims=3)
    except Exception as error:  # noqa: BLE001 - the plot is optional; the page must load
        log.warning("vector store plot unavailable: %s", error)
        return pd.DataFrame(columns=PLOT_COLUMNS)


def catalog_figure(points: pd.DataFrame) -> go.Figure:
    """One Scatter3d trace per category (the legend toggles them); hover: title, price and category."""
    figure = go.Figure()
    for category, group in points.groupby("category", sort=True):
        labels = [html.escape(str(title)[:90]) for title in group["title"]]
        figure.add_trace(go.Scatter3d(
            x=group["pc1"], y=group["pc2"], z=group["pc3"], mode="markers", name=html.escape(str(category)),
            marker={"size": 3, "opacity": 0.8},
            customdata=list(zip(labels, group["price"].astype(float), strict=True)),
            hovertemplate="%{customdata[0]}<br>$%{customdata[1]:,.2f}<extra>%{fullData.name}</extra>",
        ))
    empty = points.empty
    figure.update_layout(
        height=520, margin={"l": 0, "r": 0, "t": 30, "b": 0}, legend={"itemsizing": "constant"},
        title=("The vector store is empty: run the pipeline (make demo) or pricer vectorstore" if empty
               else f"{len(points):,} training products, PCA of their MiniLM embeddings"),
        scene={"xaxis_title": "PC1", "yaxis_title": "PC2", "zaxis_title": "PC3"},
    )
    return figure


def store_figure(store: Any, max_points: int) -> go.Figure:
    return catalog_figure(projection_frame(store, max_points))
