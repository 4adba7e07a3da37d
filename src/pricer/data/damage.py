"""How the demo catalog breaks a record the way scraped data is broken: missing, textual, non-positive
or "$1,299.99"-style prices, empty titles, too little text, mojibake, wrong field types, and values
that are not dicts at all. ``malform`` draws the damage from the record's own generator, so a
record's damage depends only on (seed, i).
"""

from __future__ import annotations

import json
import random
from typing import Any

RawRecord = dict[str, Any] | str | list[Any]


def _mojibake(text: str) -> str:
    # The classic UTF-8-read-as-cp1252 round trip: "’" becomes "â€™", "é" becomes "Ã©".
    return text.encode("utf-8").decode("cp1252", errors="replace")


def malform(rng: random.Random, rec: dict[str, Any], non_numeric_prices: tuple[str, ...]) -> RawRecord:
    r = rng.random
    kind = r()
    if rec["price"] >= 1000 and r() < 0.5:
        kind = 0.4  # scrapers mostly keep big prices as formatted text: "$1,299.99"
    if kind < 0.13:  # price missing
        if r() < 0.5:
            rec["price"] = None
        else:
            del rec["price"]
    elif kind < 0.24:  # price that is not a number
        rec["price"] = non_numeric_prices[int(r() * len(non_numeric_prices))]
    elif kind < 0.33:  # price that is not positive
        rec["price"] = 0.0 if r() < 0.4 else (0 if r() < 0.3 else -rec["price"])
    elif kind < 0.43:  # a parseable price stored as text, as scraped
        p = rec["price"]  # the true price, so a parser that strips "$" and "," gets it back
        rec["price"] = f"${p:,.2f}" if r() < 0.8 else f"{p:.2f}"
    elif kind < 0.53:  # no title
        rec["title"] = (None, "", "   ")[int(r() * 3)]
    elif kind < 0.63:  # too little text to price
        words = rec["title"].replace(",", " ").split()
        rec["title"] = f"{words[0]} {words[-1].strip('()|-')}"
        rec["features"], rec["description"], rec["details"] = [], [], {}
    elif kind < 0.75:  # broken encoding
        if r() < 0.5:
            brand = rec["details"]["Brand"]
            rec["title"] = _mojibake(rec["title"].replace(brand, f"{brand}™", 1).replace(" - ", " – "))
            rec["description"] = [_mojibake(d.replace("'", "’")) for d in rec["description"]]
            rec["features"] = [_mojibake(f) for f in rec["features"]]
        else:
            t = rec["title"]
            cut = 1 + int(r() * (len(t) - 2))
            rec["title"] = t[:cut] + "\ufffd\ufffd" + t[cut + 1 :]
            rec["description"] = [d.replace("e", "\ufffd", 3) for d in rec["description"]]
            rec["features"] = [f.replace("a", "\ufffd", 2) for f in rec["features"]]
    elif kind < 0.92:  # wrong field types
        wrong = r()
        if wrong < 0.4:
            rec["features"] = " ".join(rec["features"]) or rec["title"]
        elif wrong < 0.75:
            rec["details"] = [f"{k}: {v}" for k, v in rec["details"].items()]
        elif wrong < 0.9:
            rec["description"] = "\n".join(rec["description"]) or rec["title"]
        else:
            rec["features"] = {"0": rec["title"]}
            rec["categories"] = " > ".join(rec["categories"])
    else:  # not a dict at all
        if r() < 0.6:
            text = json.dumps(rec, ensure_ascii=False)
            return text[: max(10, int(len(text) * (0.2 + 0.6 * r())))]  # a line cut off mid-write
        return [rec.get("title"), rec.get("price"), rec.get("parent_asin")]
    return rec
