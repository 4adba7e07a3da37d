"""A built-in, seeded product catalog so the whole pipeline runs offline with no data on disk.

``generate_catalog`` streams records in the raw Amazon Reviews 2023 metadata layout
(``main_category``, ``title``, ``features``, ``description``, ``price``, ``details``,
``store``, ``categories``, ``parent_asin``). ``main_category`` holds the Hugging Face
subset name (``"Tools_and_Home_Improvement"``) so category handling is the same for every source.

The hidden pricing rule, which a model has to recover from the text alone::

    price = base(product type)            # "Cordless Drill" ~ $90, "Guitar Picks" ~ $4
          * brand multiplier              # premium ~1.8-2.6x, mid ~0.9-1.2x, budget ~0.45-0.65x
          * spec multipliers              # capacity, wattage, voltage, size, pieces, pack count...
          * modifier multiplier           # "Mini" 0.7x ... "Commercial Grade" 1.9x
          * exp(N(0, 0.25))               # irreducible noise
    then rounded to a .99 ending (cents are kept below $1).

Every factor shows up in the title, bullets, description or details, so the text carries the
price up to the noise. Well-formed prices span about $0.20 to $3,000 with a median near $50.

About ``malformed_fraction`` of the records are broken the way scraped data is: missing,
textual, non-positive or ``"$1,299.99"``-style prices, empty titles, too little text, mojibake,
wrong field types, and a few values that are not dicts at all. About 0.5% are exact duplicates of
an earlier record and 0.5% repeat an earlier title at a different price. Nothing in a record says
which it is: finding them is the curation stage's job.

Record ``i`` depends only on ``(seed, i)``: the Mersenne Twister is reseeded from both for every
item, so a longer catalog starts with the shorter one and the stream holds nothing but the
current record (a duplicate regenerates its original instead of remembering it).
"""

from __future__ import annotations

import json
import math
import random
from _random import Random as _MersenneTwister  # the C base class of random.Random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["CATEGORIES", "RawRecord", "generate_catalog"]

RawRecord = dict[str, Any] | str | list[Any]

NOISE_SIGMA = 0.25
DUPLICATE_FRACTION = 0.005
VARIANT_FRACTION = 0.005
# Duplicates point back at most this far, like re-listings that appear close together in a crawl.
_DUP_WINDOW = 2000
# Keeps per-item seeds of different catalog seeds apart (item indices stay far below 2**40).
_SEED_STRIDE = 1 << 40
_SOFT_CAP = 800.0
# One knob for the whole catalog's price level, so the bases below can stay readable round numbers.
_PRICE_LEVEL = 1.15
_TAU = 2.0 * math.pi
_mt_seed = _MersenneTwister.seed


# --- vocabulary -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Axis:
    """One price-relevant spec: each option is (title token, multiplier)."""

    key: str | None  # the details key that repeats the token; None keeps it out of details
    options: tuple[tuple[str, float], ...]
    before_type: bool = False  # "55-Inch 4K Smart TV" reads better than "4K Smart TV, 55-Inch"


def _axis(key: str | None, *options: tuple[str, float], before: bool = False) -> _Axis:
    return _Axis(key, tuple(options), before)


def _pack(*counts: int, ref: int = 1, word: str = "Pack") -> _Axis:
    # Sub-linear in the count: bulk packs are cheaper per unit, as on any store shelf.
    opts = []
    for c in counts:
        token = "" if c == 1 and word == "Pack" else (f"{c} {word}" if word != "Pack" else f"{c} Pack")
        opts.append((token, (c / ref) ** 0.75))
    return _Axis("Number of Items" if word == "Pack" else None, tuple(opts))


_STORAGE = _axis(
    "Capacity",
    ("32GB", 0.6),
    ("64GB", 0.8),
    ("128GB", 1.0),
    ("256GB", 1.35),
    ("512GB", 1.8),
    ("1TB", 2.5),
    ("2TB", 3.4),
    before=True,
)
_BATTERY = _axis(
    "Battery Capacity", ("5000mAh", 0.7), ("10000mAh", 1.0), ("20000mAh", 1.45), ("26800mAh", 1.8)
)
_SPEAKER_WATT = _axis("Output Power", ("10W", 0.7), ("20W", 1.0), ("30W", 1.3), ("50W", 1.75), ("100W", 2.5))
_CABLE_LEN = _axis("Cable Length", ("3 ft", 0.8), ("6 ft", 1.0), ("10 ft", 1.25), ("15 ft", 1.5))
_SCREEN = _axis(
    "Screen Size",
    ("32-Inch", 0.45),
    ("43-Inch", 0.7),
    ("50-Inch", 0.85),
    ("55-Inch", 1.0),
    ("65-Inch", 1.45),
    ("75-Inch", 2.1),
    ("85-Inch", 3.0),
    before=True,
)
_RESOLUTION = _axis("Video Resolution", ("720p", 0.6), ("1080p", 1.0), ("2K", 1.4), ("4K", 2.0), before=True)
_KITCHEN_WATT = _axis(
    "Wattage", ("600W", 0.75), ("800W", 0.9), ("1000W", 1.0), ("1200W", 1.2), ("1500W", 1.45), ("1800W", 1.7)
)
_MINI_FRIDGE = _axis(
    "Capacity", ("1.7 Cu. Ft.", 0.7), ("2.7 Cu. Ft.", 0.9), ("3.1 Cu. Ft.", 1.0), ("4.5 Cu. Ft.", 1.3)
)
_BIG_FRIDGE = _axis(
    "Capacity", ("18 Cu. Ft.", 0.8), ("22 Cu. Ft.", 1.0), ("25 Cu. Ft.", 1.15), ("28 Cu. Ft.", 1.35)
)
_WASHER_LOAD = _axis("Capacity", ("8 lbs", 0.7), ("11 lbs", 0.85), ("17.6 lbs", 1.0), ("26 lbs", 1.35))
_VOLT = _axis(
    "Voltage", ("12V", 0.7), ("18V", 1.0), ("20V MAX", 1.1), ("40V", 1.6), ("60V", 2.1), before=True
)
_BIT_PIECES = _pack(13, 29, 50, 100, 246, ref=29, word="Piece")
_TAPE_LEN = _axis("Length", ("16 ft", 0.8), ("25 ft", 1.0), ("35 ft", 1.3))
_CORD_LEN = _axis("Length", ("10 ft", 0.6), ("25 ft", 1.0), ("50 ft", 1.5), ("100 ft", 2.4))
_GALLONS = _axis(
    "Capacity",
    ("4 Gallon", 0.6),
    ("6 Gallon", 0.8),
    ("9 Gallon", 1.0),
    ("12 Gallon", 1.3),
    ("16 Gallon", 1.65),
    before=True,
)
_KEYS = _axis("Number of Keys", ("61-Key", 0.55), ("76-Key", 0.8), ("88-Key", 1.0), before=True)
_UKE = _axis("Size", ("Soprano", 0.85), ("Concert", 1.0), ("Tenor", 1.2), ("Baritone", 1.4), before=True)
_WOOD = _axis(
    "Top Material",
    ("Laminate", 0.7),
    ("Spruce Top", 1.0),
    ("Solid Spruce", 1.45),
    ("Solid Mahogany", 1.6),
    ("All-Solid Rosewood", 2.4),
)
_PUZZLE = _pack(100, 300, 500, 1000, 2000, ref=500, word="Piece")
_BLOCKS = _pack(150, 300, 500, 1000, 2500, ref=500, word="Piece")
_PLUSH = _axis(
    "Size", ("8 Inch", 0.7), ("12 Inch", 1.0), ("18 Inch", 1.5), ("24 Inch", 2.0), ("36 Inch", 3.0)
)
_DESK = _axis(
    "Desktop Size",
    ('40" x 24"', 0.8),
    ('48" x 24"', 1.0),
    ('55" x 28"', 1.15),
    ('63" x 30"', 1.3),
    ('72" x 30"', 1.55),
)
_CHAIR_MAT = _axis(
    "Material", ("Mesh", 1.0), ("Fabric", 0.9), ("Faux Leather", 1.15), ("Genuine Leather", 1.9)
)
_BOARD = _axis(
    "Size", ("24 x 18 Inch", 0.6), ("36 x 24 Inch", 1.0), ("48 x 36 Inch", 1.6), ("72 x 40 Inch", 2.6)
)
_EDITION = _axis(
    "Edition",
    ("Standard Edition", 1.0),
    ("Deluxe Edition", 1.45),
    ("Gold Edition", 1.8),
    ("Collector's Edition", 2.9),
)
_PLATFORM = _axis(
    "Platform", ("PlayStation 5", 1.0), ("Xbox Series X", 1.0), ("Nintendo Switch", 0.95), ("PC", 0.85)
)
_CONSOLE_STORAGE = _axis("Capacity", ("512GB", 0.85), ("1TB", 1.0), ("2TB", 1.3))
_PAD = _axis("Size", ("Medium", 0.7), ("Large", 1.0), ("XL", 1.3), ("XXL", 1.6))
_DUMBBELL = _axis("Maximum Weight", ("25 lbs", 0.6), ("52.5 lbs", 1.0), ("90 lbs", 1.65))
_TENT = _axis(
    "Capacity",
    ("2 Person", 0.7),
    ("4 Person", 1.0),
    ("6 Person", 1.4),
    ("8 Person", 1.8),
    ("10 Person", 2.2),
    before=True,
)
_BOTTLE = _axis("Capacity", ("18 oz", 0.75), ("24 oz", 0.9), ("32 oz", 1.0), ("40 oz", 1.15), ("64 oz", 1.45))
_BALL = _axis("Size", ("Size 5", 0.9), ("Size 6", 0.95), ("Size 7", 1.0), ("Official Size", 1.1))
_ROD = _axis("Material", ("Fiberglass", 0.7), ("Graphite", 1.0), ("Carbon Fiber", 1.6))
_QUARTS = _axis(
    "Capacity",
    ("2 Quart", 0.6),
    ("4 Quart", 0.8),
    ("6 Quart", 1.0),
    ("8 Quart", 1.25),
    ("10 Quart", 1.5),
    before=True,
)
_KNIFE = _axis(
    "Blade Material",
    ("Stainless Steel", 0.8),
    ("High Carbon Steel", 1.0),
    ("Damascus Steel", 1.9),
    ("Ceramic", 0.9),
)
_PAN = _axis("Size", ("8 Inch", 0.7), ("10 Inch", 1.0), ("12 Inch", 1.3), before=True)
_PAN_MAT = _axis(
    "Material",
    ("Nonstick Aluminum", 0.8),
    ("Stainless Steel", 1.2),
    ("Cast Iron", 1.1),
    ("Tri-Ply Copper", 2.2),
)
_COOK_PIECES = _pack(5, 8, 10, 12, 15, ref=10, word="Piece")
_BED = _axis("Size", ("Twin", 0.7), ("Full", 0.85), ("Queen", 1.0), ("King", 1.2), ("California King", 1.25))
_THREADS = _axis(None, ("300 Thread Count", 0.8), ("600 Thread Count", 1.0), ("1000 Thread Count", 1.5))
_CONTAINERS = _pack(8, 12, 24, 36, 50, ref=24, word="Piece")
_WEIGHT_CAP = _axis("Capacity", ("4 lbs", 0.8), ("6 lbs", 1.0), ("10 lbs", 1.4))

# Names and themes tell items apart without moving the price, as on a real shelf.
_GAME_NAMES = _Axis(
    None,
    tuple(
        (f"{a} {b}", 1.0)
        for a in (
            "Starfall",
            "Iron",
            "Crimson",
            "Shadow",
            "Neon",
            "Eternal",
            "Frost",
            "Solar",
            "Hollow",
            "Silent",
            "Rogue",
            "Emerald",
            "Thunder",
            "Lost",
            "Arcane",
        )
        for b in (
            "Odyssey",
            "Legends",
            "Kingdom",
            "Protocol",
            "Frontier",
            "Requiem",
            "Tactics",
            "Racers",
            "Chronicles",
            "Uprising",
            "Saga",
            "Horizon",
            "Dynasty",
            "Rebellion",
            "Quest",
        )
    ),
)
_BOARD_NAMES = _Axis(
    None,
    tuple(
        (f"{a} {b}", 1.0)
        for a in (
            "Harbor",
            "Castle",
            "Desert",
            "River",
            "Sky",
            "Island",
            "Mountain",
            "Jungle",
            "Royal",
            "Clockwork",
        )
        for b in (
            "Empires",
            "Traders",
            "Railways",
            "Gardens",
            "Explorers",
            "Dragons",
            "Settlers",
            "Heist",
            "Builders",
        )
    ),
)
_PUZZLE_THEMES = _Axis(
    "Theme",
    tuple(
        (t, 1.0)
        for t in (
            "Mountain Lake Sunset",
            "Vintage World Map",
            "Cat Cafe",
            "Autumn Forest",
            "Lighthouse at Dawn",
            "Venice Canals",
            "Wildflower Meadow",
            "Space Nebula",
            "Candy Shop",
            "Farmers Market",
            "Underwater Reef",
            "Night Sky",
            "Country Barn",
            "Hot Air Balloons",
            "Book Lovers Library",
            "Christmas Village",
        )
    ),
)
_PLUSH_ANIMALS = _Axis(
    None,
    tuple(
        (t, 1.0)
        for t in (
            "Unicorn",
            "Teddy Bear",
            "Axolotl",
            "Penguin",
            "Dinosaur",
            "Sloth",
            "Bunny",
            "Shark",
            "Cat",
            "Puppy",
            "Panda",
            "Elephant",
            "Frog",
            "Highland Cow",
            "Octopus",
            "Fox",
        )
    ),
    before_type=True,
)
_BLOCK_THEMES = _Axis(
    "Theme",
    tuple(
        (t, 1.0)
        for t in (
            "City Fire Station",
            "Space Shuttle",
            "Medieval Castle",
            "Pirate Ship",
            "Race Car",
            "Treehouse",
            "Dinosaur Park",
            "Train Station",
            "Police Headquarters",
            "Botanical Garden",
            "Robot Mech",
            "Ice Cream Truck",
        )
    ),
)

_MODIFIERS: tuple[tuple[str, float], ...] = (
    ("", 1.0),
    ("", 1.0),
    ("", 1.0),
    ("", 1.0),
    ("", 1.0),
    ("", 1.0),
    ("", 1.0),
    ("", 1.0),
    ("Mini", 0.7),
    ("Compact", 0.85),
    ("Lite", 0.75),
    ("Pro", 1.35),
    ("Professional", 1.45),
    ("Heavy Duty", 1.3),
    ("Max", 1.25),
    ("Commercial Grade", 1.9),
)
_NO_MODIFIER: tuple[tuple[str, float], ...] = (("", 1.0),)

_COLORS = (
    "Black",
    "White",
    "Silver",
    "Navy Blue",
    "Red",
    "Gray",
    "Rose Gold",
    "Green",
    "Blue",
    "Beige",
    "Matte Black",
    "Space Gray",
    "Charcoal",
    "Teal",
)


@dataclass(frozen=True, slots=True)
class _Type:
    name: str
    base: float  # dollars for a mid-tier brand, reference specs, no modifier
    weight_lb: float
    axes: tuple[_Axis, ...]
    path: tuple[str, ...]  # the "categories" breadcrumb below the department
    pick: float = 1.0  # how often it appears, relative to its category's other types
    modifiers: bool = True
    colored: bool = True
    part_number: bool = False  # replacement parts name the part they replace in the title


@dataclass(frozen=True, slots=True)
class _Category:
    name: str  # Hugging Face subset name, used as main_category
    display: str  # department name as Amazon shows it in breadcrumbs and sales ranks
    pick: float
    types: tuple[_Type, ...]
    premium: tuple[tuple[str, float], ...]
    mid: tuple[tuple[str, float], ...]
    budget: tuple[tuple[str, float], ...]
    hooks: tuple[str, ...]  # short selling points that pad titles: no price signal
    bullets: tuple[str, ...]
    sentences: tuple[str, ...]


def _t(
    name: str,
    base: float,
    weight: float,
    *axes: _Axis,
    path: tuple[str, ...],
    pick: float = 1.0,
    modifiers: bool = True,
    colored: bool = True,
    part_number: bool = False,
) -> _Type:
    return _Type(name, base * _PRICE_LEVEL, weight, tuple(axes), path, pick, modifiers, colored, part_number)


_CATALOG: tuple[_Category, ...] = (
    _Category(
        "Electronics",
        "Electronics",
        1.6,
        (
            _t(
                "Wireless Earbuds",
                45,
                0.2,
                path=("Headphones, Earbuds & Accessories", "Earbud Headphones"),
                pick=1.5,
            ),
            _t(
                "Over-Ear Headphones",
                80,
                0.6,
                path=("Headphones, Earbuds & Accessories", "Over-Ear Headphones"),
            ),
            _t(
                "Bluetooth Speaker",
                50,
                1.2,
                _SPEAKER_WATT,
                path=("Portable Audio & Video", "Portable Speakers"),
            ),
            _t(
                "Portable Power Bank",
                28,
                0.7,
                _BATTERY,
                path=("Accessories & Supplies", "Power Banks"),
                pick=1.2,
            ),
            _t(
                "USB-C Charging Cable",
                9,
                0.2,
                _CABLE_LEN,
                _pack(1, 2, 3, 5),
                path=("Accessories & Supplies", "Cables", "USB Cables"),
                pick=1.3,
                modifiers=False,
            ),
            _t(
                "microSD Memory Card",
                14,
                0.05,
                _STORAGE,
                path=("Computers & Accessories", "Memory Cards"),
                modifiers=False,
                colored=False,
            ),
            _t(
                "Portable SSD",
                90,
                0.15,
                _STORAGE,
                path=("Computers & Accessories", "External Solid State Drives"),
            ),
            _t(
                "4K Smart TV",
                420,
                35,
                _SCREEN,
                path=("Television & Video", "Televisions"),
                modifiers=False,
                colored=False,
                pick=0.6,
            ),
            _t("Smartwatch", 150, 0.3, path=("Wearable Technology", "Smartwatches")),
            _t(
                "HDMI Cable",
                8,
                0.3,
                _CABLE_LEN,
                _pack(1, 2, 3),
                path=("Accessories & Supplies", "Cables", "HDMI Cables"),
                modifiers=False,
            ),
            _t(
                "Tempered Glass Screen Protector",
                7,
                0.1,
                _pack(1, 2, 3, 4),
                path=("Cell Phones & Accessories", "Screen Protectors"),
                modifiers=False,
                colored=False,
            ),
            _t("Wireless Mouse", 22, 0.25, path=("Computers & Accessories", "Mice")),
            _t("Webcam", 55, 0.4, _RESOLUTION, path=("Computers & Accessories", "Webcams")),
            _t("Laptop", 650, 4.2, _STORAGE, path=("Computers & Accessories", "Laptops"), pick=0.5),
        ),
        premium=(("Aurelion", 2.4), ("Sonique", 2.0), ("Veridian Audio", 1.8)),
        mid=(("Ankora", 1.1), ("Lumetra", 1.0), ("Pixelon", 0.95), ("Crestline", 1.15)),
        budget=(("ZOKIVA", 0.55), ("Hapyon", 0.5), ("BESTMARTY", 0.6), ("Wuyoo", 0.45), ("QWIKTEK", 0.55)),
        hooks=(
            "Bluetooth 5.3",
            "Fast Charging",
            "Active Noise Cancelling",
            "Long Battery Life",
            "USB-C",
            "Plug and Play",
            "Ultra HD",
            "Low Latency",
            "Hi-Fi Stereo Sound",
            "Compatible with iPhone & Android",
        ),
        bullets=(
            "【PREMIUM SOUND】 Tuned drivers deliver deep bass and crisp highs for music, calls and movies.",
            "FAST & STABLE CONNECTION: The latest chipset pairs in seconds and keeps a stable signal up to 33 ft.",
            "WIDE COMPATIBILITY - Works with iPhone, iPad, Android phones, tablets, Windows and macOS.",
            "【ALL-DAY POWER】 A high-efficiency battery keeps you going from the morning commute to the night.",
            "PLUG AND PLAY: No drivers or apps required; connect the {pt} and it is ready in seconds.",
            "Durable build with reinforced connectors tested for more than 10,000 bends.",
            "WHAT YOU GET: {brand} {pt}, quick start guide, and our worry-free 18-month warranty.",
            "Smart chip protects your devices against over-charging, over-heating and short circuits.",
            "【ERGONOMIC DESIGN】 Lightweight and comfortable for hours of use at home, in the office or on the go.",
            "Energy-saving standby mode switches off automatically after 10 minutes without a signal.",
        ),
        sentences=(
            "The {brand} {pt} is built for everyday listening, working and streaming.",
            "Advanced signal processing keeps audio and video in sync.",
            "Its compact housing slips easily into a backpack or a jacket pocket.",
            "A multi-layer protection circuit keeps your devices safe while charging.",
            "Every unit is tested before it leaves our factory.",
            "Pair it once and it reconnects automatically the next time you power it on.",
            "The {pt} supports the latest standards, so it will keep up with your next phone or laptop.",
            "LED indicators show the remaining power at a glance.",
        ),
    ),
    _Category(
        "Appliances",
        "Appliances",
        1.0,
        (
            _t(
                "Countertop Microwave Oven",
                130,
                30,
                _KITCHEN_WATT,
                path=("Microwave Ovens", "Countertop Microwaves"),
                modifiers=False,
            ),
            _t(
                "Compact Refrigerator", 230, 45, _MINI_FRIDGE, path=("Refrigerators", "Compact Refrigerators")
            ),
            _t(
                "French Door Refrigerator",
                1100,
                280,
                _BIG_FRIDGE,
                path=("Refrigerators", "French Door Refrigerators"),
                pick=0.35,
                modifiers=False,
            ),
            _t(
                "Dishwasher", 520, 75, path=("Dishwashers", "Built-In Dishwashers"), pick=0.4, modifiers=False
            ),
            _t(
                "Refrigerator Water Filter",
                25,
                0.9,
                _pack(1, 2, 3, 6),
                path=("Parts & Accessories", "Refrigerator Parts & Accessories", "Water Filters"),
                pick=2.0,
                modifiers=False,
                colored=False,
                part_number=True,
            ),
            _t(
                "Dryer Vent Cleaning Kit",
                18,
                1.3,
                _CORD_LEN,
                path=("Parts & Accessories", "Dryer Parts & Accessories"),
                colored=False,
            ),
            _t(
                "Washing Machine Drain Hose",
                14,
                1.0,
                _TAPE_LEN,
                path=("Parts & Accessories", "Washer Parts & Accessories"),
                modifiers=False,
                colored=False,
                part_number=True,
            ),
            _t("Countertop Ice Maker", 120, 22, _WEIGHT_CAP, path=("Ice Makers",)),
            _t(
                "Range Hood Filter",
                12,
                0.8,
                _pack(1, 2, 4),
                path=("Parts & Accessories", "Range Hood Parts", "Filters"),
                modifiers=False,
                colored=False,
                pick=1.3,
                part_number=True,
            ),
            _t(
                "Dryer Heating Element",
                28,
                1.1,
                path=("Parts & Accessories", "Dryer Parts & Accessories"),
                modifiers=False,
                colored=False,
                part_number=True,
            ),
            _t("Portable Washing Machine", 180, 40, _WASHER_LOAD, path=("Laundry Appliances", "Washers")),
            _t(
                "Refrigerator Door Gasket",
                35,
                1.5,
                path=("Parts & Accessories", "Refrigerator Parts & Accessories"),
                modifiers=False,
                colored=False,
                part_number=True,
            ),
        ),
        premium=(("Kelvara", 2.3), ("Nordholm", 2.0), ("Bosquet", 1.9)),
        mid=(("HomeLine", 1.0), ("FrostPeak", 1.1), ("Everclad", 0.95), ("Gemco", 1.05)),
        budget=(("AMIRO PARTS", 0.5), ("Colpart", 0.55), ("UPGRADIA", 0.45), ("Fixbay", 0.6)),
        hooks=(
            "Energy Star Certified",
            "OEM Replacement",
            "Easy Install",
            "Quiet Operation",
            "Stainless Steel",
            "Fits Most Models",
            "Child Lock",
            "Digital Control Panel",
        ),
        bullets=(
            "PERFECT FIT: Replaces part numbers from the major brands; please check your model number before ordering.",
            "【EASY TO INSTALL】 No tools needed, installs in under 5 minutes with the included instructions.",
            "ENERGY EFFICIENT - Uses up to 30% less electricity than comparable models.",
            "Made from food-grade, BPA-free materials that meet NSF standards.",
            "QUIET OPERATION: Runs at under 42 dB so it will not disturb your household.",
            "【WHAT YOU GET】 {brand} {pt}, mounting hardware and a 1-year limited warranty.",
            "Digital controls with an LED display make settings simple to adjust.",
            "Tested to the original equipment specification for a long service life.",
        ),
        sentences=(
            "The {brand} {pt} is designed to keep your home running smoothly.",
            "Please confirm the model number of your appliance before purchasing.",
            "Our engineers tested it for thousands of cycles to meet OEM performance.",
            "A reversible door and adjustable legs make it easy to fit into any space.",
            "It is the ideal choice for apartments, dorms, offices and RVs.",
            "Clean the unit regularly with a soft cloth to keep it performing like new.",
            "Certified components keep energy use low without giving up performance.",
        ),
    ),
    _Category(
        "Tools_and_Home_Improvement",
        "Tools & Home Improvement",
        1.2,
        (
            _t("Cordless Drill", 90, 3.5, _VOLT, path=("Power Tools", "Drills", "Drill Drivers"), pick=1.3),
            _t("Impact Driver", 110, 3.2, _VOLT, path=("Power Tools", "Drills", "Impact Drivers")),
            _t("Circular Saw", 120, 8.5, _VOLT, path=("Power Tools", "Saws", "Circular Saws")),
            _t(
                "Drill Bit Set",
                20,
                1.8,
                _BIT_PIECES,
                path=("Power Tool Parts & Accessories", "Drill Bits"),
                colored=False,
            ),
            _t(
                "Tape Measure",
                12,
                0.9,
                _TAPE_LEN,
                path=("Measuring & Layout Tools", "Tape Measures"),
                colored=False,
            ),
            _t(
                "LED Light Bulbs",
                4,
                0.3,
                _pack(1, 2, 4, 6, 12, 24),
                path=("Lighting & Ceiling Fans", "Light Bulbs", "LED Bulbs"),
                pick=1.4,
                modifiers=False,
                colored=False,
            ),
            _t(
                "Wood Screws",
                6,
                1.0,
                _pack(1, 2, 4),
                path=("Hardware", "Screws"),
                modifiers=False,
                colored=False,
            ),
            _t("Outdoor Extension Cord", 15, 2.5, _CORD_LEN, path=("Electrical", "Extension Cords")),
            _t(
                "Work Gloves",
                9,
                0.4,
                _pack(1, 3, 6, 12),
                path=("Safety & Security", "Work Gloves"),
                modifiers=False,
            ),
            _t("Wet/Dry Shop Vacuum", 90, 15, _GALLONS, path=("Power Tools", "Shop Vacuums")),
            _t(
                "Nylon Cable Ties", 5, 0.5, _pack(1, 2, 5), path=("Electrical", "Cable Ties"), modifiers=False
            ),
            _t("Smart Door Lock", 160, 3.5, path=("Hardware", "Door Hardware & Locks", "Smart Locks")),
            _t(
                "Replacement Saw Blade",
                1.2,
                0.1,
                path=("Power Tool Parts & Accessories", "Saw Blades"),
                pick=0.35,
                modifiers=False,
                colored=False,
            ),
        ),
        premium=(("Torvik", 2.2), ("Hammerline", 2.0), ("Steelforge", 1.8)),
        mid=(("Craftwell", 1.0), ("Boltman", 1.1), ("Ironside", 0.95), ("WorkPoint", 1.05)),
        budget=(("DOWLUX", 0.5), ("Avidor Tools", 0.55), ("HAUTRIX", 0.6), ("TACKVIO", 0.45)),
        hooks=(
            "Brushless Motor",
            "Battery and Charger Included",
            "Heavy Duty",
            "Contractor Grade",
            "Tool Only",
            "LED Work Light",
            "Weatherproof",
            "UL Listed",
        ),
        bullets=(
            "【POWERFUL MOTOR】 Delivers high torque for driving screws and drilling into wood, metal and plastic.",
            "2-SPEED GEARBOX: 0-450 / 0-1,500 RPM for control on delicate jobs and speed on tough ones.",
            "Ergonomic rubber grip reduces fatigue during long jobs.",
            "BUILT TO LAST - Heat-treated steel components resist wear, rust and corrosion.",
            "【WHAT'S IN THE BOX】 {brand} {pt}, carrying case, and a 3-year limited warranty.",
            "Integrated LED light illuminates dark work areas.",
            "Compatible with the full line of {brand} batteries and accessories.",
            "UL listed and tested for safe use indoors and outdoors.",
        ),
        sentences=(
            "The {brand} {pt} is built for contractors and weekend DIYers alike.",
            "A compact, lightweight design lets you work in tight spaces and overhead.",
            "Precision machining keeps every part within tight tolerances.",
            "Whether you are hanging shelves or framing a deck, it gets the job done.",
            "The durable housing stands up to drops and jobsite abuse.",
            "Store it in the included case to keep everything organized between projects.",
        ),
    ),
    _Category(
        "Musical_Instruments",
        "Musical Instruments",
        0.8,
        (
            _t(
                "Guitar Picks",
                4,
                0.1,
                _pack(1, 2, 4),
                path=("Instrument Accessories", "Guitar & Bass Accessories", "Picks & Pick Holders"),
                modifiers=False,
            ),
            _t(
                "Single Guitar String",
                1.1,
                0.02,
                path=("Instrument Accessories", "Guitar & Bass Accessories", "Strings"),
                pick=0.45,
                modifiers=False,
                colored=False,
            ),
            _t("Acoustic Guitar", 250, 5.5, _WOOD, path=("Guitars", "Acoustic Guitars"), pick=1.2),
            _t("Electric Guitar", 400, 8.0, path=("Guitars", "Electric Guitars"), pick=0.8),
            _t(
                "Digital Piano",
                550,
                38,
                _KEYS,
                path=("Keyboards & MIDI", "Digital Pianos"),
                pick=0.6,
                modifiers=False,
            ),
            _t(
                "Acoustic Guitar Strings",
                9,
                0.1,
                _pack(1, 3, 5),
                path=("Instrument Accessories", "Guitar & Bass Accessories", "Strings"),
                modifiers=False,
                colored=False,
                pick=1.3,
            ),
            _t("Clip-On Guitar Tuner", 15, 0.1, path=("Instrument Accessories", "Tuners"), modifiers=False),
            _t("Instrument Cable", 14, 0.6, _CABLE_LEN, path=("Live Sound & Stage", "Cables")),
            _t("Microphone Stand", 30, 6.0, path=("Live Sound & Stage", "Stands")),
            _t("Dynamic Microphone", 90, 0.7, path=("Microphones & Accessories", "Microphones")),
            _t("Ukulele", 60, 1.8, _UKE, path=("Ukuleles, Mandolins & Banjos", "Ukuleles")),
            _t(
                "Drum Sticks",
                12,
                0.4,
                _pack(1, 2, 4, 12),
                path=("Drums & Percussion", "Drum Sticks"),
                modifiers=False,
                colored=False,
            ),
            _t("USB Audio Interface", 150, 1.2, path=("Studio Recording Equipment", "Audio Interfaces")),
        ),
        premium=(("Castellan", 2.4), ("Brightwood", 2.0), ("Marlowe & Finch", 1.8)),
        mid=(("Tonecraft", 1.0), ("Resonar", 1.1), ("Harmonia", 0.95)),
        budget=(("DONVERA", 0.5), ("MUSIKLY", 0.55), ("GLARVO", 0.45), ("Kmizo", 0.6)),
        hooks=(
            "For Beginners",
            "Studio Quality",
            "Stage Ready",
            "With Gig Bag",
            "Warm Tone",
            "Low Action",
            "Handcrafted",
            "Plug and Play",
        ),
        bullets=(
            "【RICH TONE】 Carefully selected tonewoods and materials produce a warm, balanced sound.",
            "BEGINNER FRIENDLY: Comfortable to play and easy to keep in tune.",
            "Set up by our technicians before shipping for smooth, low action out of the box.",
            "STAGE & STUDIO READY - Reliable performance night after night.",
            "【WHAT YOU GET】 {brand} {pt}, accessories as pictured, and lifetime customer support.",
            "Premium hardware holds tuning through hours of practice.",
            "Lightweight design makes it easy to bring to rehearsals and gigs.",
        ),
        sentences=(
            "The {brand} {pt} is made for players who care about their sound.",
            "From the practice room to the stage, it delivers consistent performance.",
            "Every instrument is inspected by hand before it is packed.",
            "It makes a wonderful gift for students, hobbyists and working musicians.",
            "Its balanced response works for folk, rock, jazz and worship music.",
        ),
    ),
    _Category(
        "Toys_and_Games",
        "Toys & Games",
        1.0,
        (
            _t(
                "Jigsaw Puzzle",
                16,
                1.1,
                _PUZZLE,
                _PUZZLE_THEMES,
                path=("Puzzles", "Jigsaw Puzzles"),
                modifiers=False,
                colored=False,
                pick=1.2,
            ),
            _t(
                "Building Blocks Set",
                35,
                2.0,
                _BLOCK_THEMES,
                _BLOCKS,
                path=("Building Toys", "Building Sets"),
                modifiers=False,
                colored=False,
                pick=1.2,
            ),
            _t(
                "Strategy Board Game",
                30,
                2.2,
                _BOARD_NAMES,
                path=("Games & Accessories", "Board Games"),
                modifiers=False,
                colored=False,
            ),
            _t("Remote Control Car", 45, 2.5, path=("Hobbies", "Remote & App Controlled Vehicles", "Cars")),
            _t(
                "Plush Toy",
                14,
                0.6,
                _PLUSH_ANIMALS,
                _PLUSH,
                path=("Stuffed Animals & Plush Toys", "Plush Figures"),
            ),
            _t(
                "Playing Cards",
                5,
                0.3,
                _pack(1, 2, 6, 12),
                path=("Games & Accessories", "Card Games"),
                modifiers=False,
            ),
            _t("Wooden Dollhouse", 110, 18, path=("Dolls & Accessories", "Dollhouses"), modifiers=False),
            _t("Kids Drone", 60, 0.9, path=("Hobbies", "Remote & App Controlled Vehicles", "Drones")),
            _t(
                "Party Balloons", 8, 0.5, _pack(1, 2, 4), path=("Party Supplies", "Balloons"), modifiers=False
            ),
            _t("Sticker Sheet", 0.9, 0.02, path=("Arts & Crafts", "Stickers"), pick=0.45, modifiers=False),
            _t(
                "Magnetic Tiles",
                40,
                3.5,
                _pack(32, 64, 100, ref=64, word="Piece"),
                path=("Building Toys", "Magnetic Building Sets"),
                modifiers=False,
                colored=False,
            ),
        ),
        premium=(("Wondertrail", 2.1), ("Kinderhaus", 2.3), ("Brightmind", 1.8)),
        mid=(("PlayNest", 1.0), ("Jubilee Toys", 1.1), ("Tinker Lane", 0.95)),
        budget=(("FUNNIGO", 0.5), ("JOYVIN", 0.55), ("Toyzoo", 0.45), ("KIDDOLAB", 0.6)),
        hooks=(
            "Great Gift for Kids",
            "Ages 3+",
            "STEM Learning",
            "Family Game Night",
            "Non-Toxic",
            "Birthday Gift",
            "For Boys and Girls",
            "Educational",
        ),
        bullets=(
            "【SAFE MATERIALS】 Made from non-toxic, BPA-free materials that meet ASTM F963 toy safety standards.",
            "STEM LEARNING: Builds creativity, problem solving and fine motor skills through play.",
            "PERFECT GIFT - Ideal for birthdays, holidays and family game nights.",
            "Hours of screen-free fun for kids, teens and adults.",
            "【WHAT YOU GET】 {brand} {pt}, illustrated instructions, and a storage box.",
            "Vivid colors and sturdy construction hold up to enthusiastic play.",
        ),
        sentences=(
            "The {brand} {pt} brings the whole family together.",
            "Children learn as they play, building confidence with every success.",
            "All pieces are smooth, sturdy and sized for small hands.",
            "It packs away neatly into its box when playtime is over.",
            "Recommended for ages 3 and up; adult supervision is advised for younger children.",
        ),
    ),
    _Category(
        "Office_Products",
        "Office Products",
        0.9,
        (
            _t(
                "Ballpoint Pens",
                8,
                0.3,
                _pack(1, 2, 4, 10),
                path=("Office & School Supplies", "Writing Supplies", "Ballpoint Pens"),
                modifiers=False,
                pick=1.3,
            ),
            _t(
                "Sticky Notes",
                7,
                0.5,
                _pack(1, 2, 6, 12),
                path=("Office & School Supplies", "Paper", "Sticky Notes"),
                modifiers=False,
            ),
            _t(
                "Ergonomic Office Chair",
                180,
                35,
                _CHAIR_MAT,
                path=("Office Furniture & Lighting", "Chairs"),
                pick=0.8,
            ),
            _t(
                "Electric Standing Desk",
                320,
                65,
                _DESK,
                path=("Office Furniture & Lighting", "Desks"),
                pick=0.6,
            ),
            _t(
                "Copy Paper",
                10,
                5.0,
                _pack(1, 3, 5, 10),
                path=("Office & School Supplies", "Paper", "Copy & Multipurpose Paper"),
                modifiers=False,
                colored=False,
            ),
            _t(
                "Wireless Laser Printer",
                220,
                16,
                path=("Office Electronics", "Printers"),
                pick=0.6,
                modifiers=False,
            ),
            _t(
                "Ink Cartridge",
                30,
                0.3,
                _pack(1, 2, 4),
                path=("Office Electronics", "Printer Ink & Toner"),
                modifiers=False,
                colored=False,
                pick=1.2,
                part_number=True,
            ),
            _t("Desktop Stapler", 14, 0.8, path=("Office & School Supplies", "Staplers")),
            _t(
                "Paper Clips",
                3,
                0.3,
                _pack(1, 2, 5),
                path=("Office & School Supplies", "Paper Clips"),
                modifiers=False,
            ),
            _t(
                "Hanging File Folders",
                12,
                1.5,
                _pack(1, 2, 4),
                path=("Office & School Supplies", "Filing Products"),
                modifiers=False,
            ),
            _t(
                "Magnetic Whiteboard",
                45,
                9.0,
                _BOARD,
                path=("Office & School Supplies", "Presentation Boards"),
            ),
            _t("Label Maker", 40, 1.0, path=("Office Electronics", "Label Makers")),
            _t(
                "Pencil Eraser Cap",
                0.8,
                0.01,
                path=("Office & School Supplies", "Erasers"),
                pick=0.45,
                modifiers=False,
            ),
        ),
        premium=(("Ashford & Vale", 2.3), ("Scriptura", 2.0), ("Ergoluxe", 1.9)),
        mid=(("DeskMate", 1.0), ("PaperTrail", 1.05), ("OfficeWorks", 0.95), ("Clarion", 1.1)),
        budget=(("BASICMART", 0.5), ("EMRAVO", 0.55), ("Mr. Quill", 0.45), ("SUPERDANO", 0.6)),
        hooks=(
            "For Home Office",
            "School Supplies",
            "Smooth Writing",
            "Acid-Free",
            "Ergonomic",
            "Bulk Pack",
            "Quick Dry",
            "Easy Assembly",
        ),
        bullets=(
            "【SMOOTH PERFORMANCE】 Consistent results page after page for the office, school and home.",
            "EASY ASSEMBLY: All hardware included; most customers finish in under 20 minutes.",
            "Acid-free and archival safe to protect your important documents.",
            "ERGONOMIC DESIGN - Supports good posture through long workdays.",
            "【WHAT YOU GET】 {brand} {pt} and a 100% satisfaction guarantee.",
            "Great value for teachers, students and busy professionals.",
        ),
        sentences=(
            "Stay organized and productive with the {brand} {pt}.",
            "It fits right in at the office, the classroom or the home desk.",
            "Quality materials hold up to daily use.",
            "Stock up and never run out at the worst moment.",
            "A clean, modern look complements any workspace.",
        ),
    ),
    _Category(
        "Video_Games",
        "Video Games",
        0.8,
        (
            _t(
                "Video Game",
                45,
                0.2,
                _GAME_NAMES,
                _EDITION,
                _PLATFORM,
                path=("Games",),
                modifiers=False,
                colored=False,
                pick=1.8,
            ),
            _t("Wireless Controller", 55, 0.6, _PLATFORM, path=("Accessories", "Controllers")),
            _t("Gaming Headset", 60, 0.8, _PLATFORM, path=("Accessories", "Headsets")),
            _t("Game Console", 450, 9.0, _CONSOLE_STORAGE, path=("Consoles",), pick=0.4, modifiers=False),
            _t("Mechanical Gaming Keyboard", 70, 2.2, path=("PC", "Accessories", "Gaming Keyboards")),
            _t("Gaming Mouse Pad", 15, 0.5, _PAD, path=("PC", "Accessories", "Mouse Pads"), modifiers=False),
            _t("Controller Charging Station", 25, 0.7, _PLATFORM, path=("Accessories", "Charging Stations")),
            _t("VR Headset", 350, 1.5, path=("Virtual Reality", "Headsets"), pick=0.4),
            _t(
                "Thumb Grip Caps",
                2.5,
                0.05,
                _pack(1, 2, 4),
                path=("Accessories", "Thumb Grips"),
                pick=0.6,
                modifiers=False,
            ),
        ),
        premium=(("Nexaforge", 2.2), ("Vortex Labs", 1.9), ("Arcadia Works", 2.0)),
        mid=(("PlayCore", 1.0), ("GameRise", 1.05), ("Pixel Ridge", 0.95)),
        budget=(("GAMESIRO", 0.55), ("FOSMORA", 0.5), ("ORZLEE", 0.45), ("Kytovo", 0.6)),
        hooks=(
            "RGB Backlit",
            "Low Latency",
            "Rated T for Teen",
            "Online Multiplayer",
            "Ergonomic Grip",
            "Dual Vibration",
            "Hall Effect Sticks",
            "Plug and Play",
        ),
        bullets=(
            "【IMMERSIVE PLAY】 Responsive controls and rich feedback pull you into every match.",
            "LOW LATENCY: A 2.4 GHz wireless link keeps input lag under 5 ms.",
            "Customizable RGB lighting with 16.8 million colors and several effects.",
            "COMPATIBILITY - Check your platform before ordering; firmware updates are free.",
            "【WHAT YOU GET】 {brand} {pt}, USB-C cable and a quick start guide.",
            "Explore a vast open world, take on story missions or team up with friends online.",
        ),
        sentences=(
            "Level up your setup with the {brand} {pt}.",
            "Built for marathon sessions, it stays comfortable hour after hour.",
            "Competitive players will appreciate the precise, consistent response.",
            "Download the companion app to remap buttons and update firmware.",
            "Content rating and online features may vary by region.",
        ),
    ),
    _Category(
        "Sports_and_Outdoors",
        "Sports & Outdoors",
        1.0,
        (
            _t("Yoga Mat", 25, 2.5, path=("Exercise & Fitness", "Yoga", "Mats"), pick=1.2),
            _t(
                "Adjustable Dumbbells",
                180,
                50,
                _DUMBBELL,
                path=("Exercise & Fitness", "Strength Training", "Dumbbells"),
                pick=0.6,
                colored=False,
            ),
            _t("Camping Tent", 120, 9.0, _TENT, path=("Outdoor Recreation", "Camping & Hiking", "Tents")),
            _t(
                "Insulated Water Bottle",
                22,
                0.9,
                _BOTTLE,
                path=("Outdoor Recreation", "Water Bottles"),
                pick=1.4,
                modifiers=False,
            ),
            _t("Basketball", 25, 1.4, _BALL, path=("Team Sports", "Basketball", "Balls"), modifiers=False),
            _t(
                "Resistance Bands Set",
                15,
                0.8,
                _pack(1, 2, 5),
                path=("Exercise & Fitness", "Accessories", "Resistance Bands"),
            ),
            _t("Sleeping Bag", 55, 4.0, path=("Outdoor Recreation", "Camping & Hiking", "Sleeping Bags")),
            _t("Fishing Rod", 60, 0.8, _ROD, path=("Outdoor Recreation", "Fishing", "Rods")),
            _t("Bike Helmet", 45, 0.8, path=("Outdoor Recreation", "Cycling", "Helmets")),
            _t(
                "Golf Balls",
                30,
                1.0,
                _pack(1, 2, 4),
                path=("Golf", "Golf Balls"),
                modifiers=False,
                colored=False,
            ),
            _t("Mountain Bike", 450, 35, path=("Outdoor Recreation", "Cycling", "Bikes"), pick=0.4),
            _t(
                "Folding Treadmill",
                650,
                90,
                path=("Exercise & Fitness", "Cardio Training", "Treadmills"),
                pick=0.4,
            ),
            _t(
                "Aluminum Carabiner",
                4,
                0.1,
                _pack(1, 2, 4, 10),
                path=("Outdoor Recreation", "Climbing", "Carabiners"),
                modifiers=False,
            ),
        ),
        premium=(("Summitcraft", 2.3), ("Alpenrow", 2.0), ("Trailborne", 1.8)),
        mid=(("FitNation", 1.0), ("Ridgeway", 1.1), ("Bluewater Sport", 0.95), ("Pacer", 1.05)),
        budget=(("GYMAXO", 0.5), ("OUTRIVA", 0.55), ("BalanceWay", 0.45), ("WAKEMORE", 0.6)),
        hooks=(
            "For Men and Women",
            "Lightweight",
            "Waterproof",
            "Leak Proof",
            "Non-Slip",
            "Home Gym",
            "Camping and Hiking",
            "BPA-Free",
        ),
        bullets=(
            "【BUILT FOR THE OUTDOORS】 Weather-resistant materials hold up to rain, sun and rough trails.",
            "LIGHTWEIGHT & PORTABLE: Packs down small for travel, camping and the gym.",
            "Non-slip texture gives you confident grip in every condition.",
            "ERGONOMIC COMFORT - Designed with athletes to reduce strain and fatigue.",
            "【WHAT YOU GET】 {brand} {pt}, carry bag, and a lifetime warranty.",
            "Easy to clean: wipe down with mild soap and water.",
        ),
        sentences=(
            "Take the {brand} {pt} anywhere your adventures lead.",
            "Whether you are training at home or exploring the backcountry, it is ready when you are.",
            "Tough, lightweight materials keep your pack light.",
            "Designed and tested by outdoor enthusiasts.",
            "A great pick for beginners and seasoned athletes alike.",
        ),
    ),
    _Category(
        "Home_and_Kitchen",
        "Home & Kitchen",
        1.5,
        (
            _t(
                "Air Fryer",
                80,
                11,
                _QUARTS,
                path=("Kitchen & Dining", "Small Appliances", "Fryers"),
                pick=1.2,
            ),
            _t(
                "Drip Coffee Maker",
                60,
                7.0,
                path=("Kitchen & Dining", "Coffee, Tea & Espresso", "Coffee Makers"),
            ),
            _t(
                "Chef Knife",
                40,
                0.5,
                _KNIFE,
                path=("Kitchen & Dining", "Cutlery & Knife Accessories", "Chef's Knives"),
                colored=False,
            ),
            _t(
                "Frying Pan",
                30,
                2.5,
                _PAN,
                _PAN_MAT,
                path=("Kitchen & Dining", "Cookware", "Skillets"),
                colored=False,
            ),
            _t(
                "Cookware Set",
                130,
                20,
                _COOK_PIECES,
                path=("Kitchen & Dining", "Cookware", "Cookware Sets"),
                modifiers=False,
            ),
            _t(
                "Cotton Bath Towels",
                25,
                3.0,
                _pack(1, 2, 4, 6),
                path=("Bath", "Towels", "Bath Towels"),
                modifiers=False,
            ),
            _t(
                "Bed Sheet Set",
                35,
                3.0,
                _BED,
                _THREADS,
                path=("Bedding", "Sheets & Pillowcases", "Sheet & Pillowcase Sets"),
                modifiers=False,
                pick=1.2,
            ),
            _t(
                "Throw Pillow Covers",
                14,
                0.5,
                _pack(1, 2, 4),
                path=("Home Décor Products", "Pillows", "Throw Pillow Covers"),
                modifiers=False,
            ),
            _t(
                "Food Storage Containers",
                22,
                3.0,
                _CONTAINERS,
                path=("Kitchen & Dining", "Storage & Organization", "Food Storage"),
                modifiers=False,
            ),
            _t("Robot Vacuum", 250, 7.5, path=("Vacuums & Floor Care", "Robotic Vacuums"), pick=0.6),
            _t(
                "Espresso Machine",
                300,
                14,
                path=("Kitchen & Dining", "Coffee, Tea & Espresso", "Espresso Machines"),
                pick=0.5,
            ),
            _t(
                "Countertop Blender",
                70,
                8.0,
                _KITCHEN_WATT,
                path=("Kitchen & Dining", "Small Appliances", "Blenders"),
            ),
            _t(
                "Kitchen Sponges",
                5,
                0.3,
                _pack(1, 3, 6, 12, 24),
                path=("Kitchen & Dining", "Kitchen Utensils", "Sponges"),
                modifiers=False,
                colored=False,
            ),
            _t(
                "Memory Foam Mattress",
                400,
                60,
                _BED,
                path=("Furniture", "Bedroom Furniture", "Mattresses"),
                pick=0.5,
                modifiers=False,
                colored=False,
            ),
            _t(
                "Dish Drying Rack", 28, 4.0, path=("Kitchen & Dining", "Storage & Organization", "Dish Racks")
            ),
        ),
        premium=(("Maison Calder", 2.3), ("Culinara", 2.0), ("Hearthstone", 1.9)),
        mid=(("Homelux", 1.0), ("Kitchenova", 1.1), ("Cozyline", 0.95), ("Pure Linen Co.", 1.05)),
        budget=(("UTOPIQ", 0.5), ("BEDSURA", 0.55), ("HOMVUE", 0.45), ("VREMIO", 0.6)),
        hooks=(
            "Dishwasher Safe",
            "BPA-Free",
            "Easy to Clean",
            "Nonstick",
            "Machine Washable",
            "Space Saving",
            "Soft and Breathable",
            "Modern Design",
        ),
        bullets=(
            "【EASY TO CLEAN】 Dishwasher-safe parts and a nonstick surface make cleanup effortless.",
            "PREMIUM MATERIALS: Food-grade, BPA-free and built to last for years of daily use.",
            "Soft, breathable fabric that gets softer with every wash.",
            "SPACE SAVING - A compact footprint leaves more room on your counter.",
            "【WHAT YOU GET】 {brand} {pt}, recipe guide, and a 2-year warranty.",
            "Evenly distributes heat for consistent results every time.",
            "Makes a thoughtful gift for weddings, housewarmings and holidays.",
        ),
        sentences=(
            "Bring comfort and style home with the {brand} {pt}.",
            "It is designed to make everyday routines a little easier.",
            "Quality materials and careful stitching ensure it lasts.",
            "Pair it with other pieces from our collection for a coordinated look.",
            "Hand wash or use the top rack of the dishwasher; do not use metal scouring pads.",
            "Crème brûlée, stir-fries or a weeknight roast: it handles them all at up to 450°F.",
        ),
    ),
)

CATEGORIES: tuple[str, ...] = tuple(c.name for c in _CATALOG)

_GENERIC_BULLETS: tuple[str, ...] = (
    "100% SATISFACTION GUARANTEE: If you are not happy, contact us for a replacement or a full refund.",
    "Designed in the USA and quality checked at every step of production.",
    "Thoughtful packaging that is free of plastic and 100% recyclable.",
    "Perfect as a gift for Father's Day, Mother's Day, Christmas or a birthday.",
    "Our friendly support team answers every message within 24 hours.",
    "Note: colors may vary slightly because of monitor settings.",
)
_GENERIC_SENTENCES: tuple[str, ...] = (
    "We stand behind every product we sell with responsive customer service.",
    "Please allow slight measurement deviations due to manual measurement.",
    "Thousands of happy customers trust us for quality and value.",
    "Package includes: 1 x {pt}, 1 x user manual.",
    "Specifications: {specs}.",
    "If you have any questions, please contact us and we will reply within 24 hours.",
    "Our team is committed to making products that are built to last and easy to love.",
    "Simple, reliable and thoughtfully designed – the way everyday products should be.",
)

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_ASIN_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASIN_PAIRS: tuple[str, ...] = tuple(a + b for a in _ASIN_CHARS for b in _ASIN_CHARS)  # 36**2 == 1296

# A flat (category, type) table with cumulative weights makes the per-record pick one bisect.
_PAIRS: tuple[tuple[_Category, _Type], ...] = tuple((c, t) for c in _CATALOG for t in c.types)
_CUM: list[float] = []
_acc = 0.0
for _c, _ty in _PAIRS:
    _acc += _c.pick * _ty.pick / sum(t.pick for t in _c.types)
    _CUM.append(_acc)
_TOTAL = _acc
del _acc

# Doubled pools let a record take k consecutive entries from a random start with one slice.
_BULLET_POOLS: dict[str, tuple[str, ...]] = {c.name: (c.bullets + _GENERIC_BULLETS) * 2 for c in _CATALOG}
_SENTENCE_POOLS: dict[str, tuple[str, ...]] = {
    c.name: (c.sentences + _GENERIC_SENTENCES) * 2 for c in _CATALOG
}


# --- one record -------------------------------------------------------------------------------


def _round_price(p: float) -> float:
    if p > _SOFT_CAP:
        # Big-ticket prices grow with the square root of the rule above the cap: a $5,000
        # fridge-sized tail would otherwise dominate any squared-error metric.
        p = _SOFT_CAP * math.sqrt(p / _SOFT_CAP)
    # Shelf prices: .99 endings above a dollar, dimes-plus-nine below it.
    if p >= 1.0:
        return round(math.floor(p) + 0.99, 2)
    return round(max(0.09, math.floor(p * 10) / 10 + 0.09), 2)


def _fill(template: str, fields: dict[str, str]) -> str:
    return template.format_map(fields) if "{" in template else template


def _weight_text(lb: float) -> str:
    if lb < 1.0:
        return f"{lb * 16:.1f} ounces" if lb >= 0.0625 else f"{lb * 16:.2f} ounces"
    return f"{lb:.2f} pounds" if lb < 10 else f"{lb:.1f} pounds"


def _asin(r: Callable[[], float]) -> str:
    return (
        f"B0{_ASIN_PAIRS[int(r() * 1296)]}{_ASIN_PAIRS[int(r() * 1296)]}"
        f"{_ASIN_PAIRS[int(r() * 1296)]}{_ASIN_PAIRS[int(r() * 1296)]}"
    )


def _clean_record(rng: random.Random) -> dict[str, Any]:
    """A well-formed record, priced by the hidden rule."""
    r = rng.random
    cat, pt = _PAIRS[bisect_right(_CUM, r() * _TOTAL)]

    tier = r()
    if tier < 0.25:
        brands = cat.premium
    elif tier < 0.7:
        brands = cat.mid
    else:
        brands = cat.budget
    brand, mult = brands[int(r() * len(brands))]

    pre: list[str] = []
    post: list[str] = []
    spec_details: list[tuple[str, str]] = []
    size = 1.0
    for axis in pt.axes:
        token, m = axis.options[int(r() * len(axis.options))]
        mult *= m
        size *= m
        if token:
            (pre if axis.before_type else post).append(token)
            if axis.key is not None:
                spec_details.append((axis.key, token))
    if pt.part_number:
        post.append(
            f"Replacement for {_LETTERS[int(r() * 23)]}{_LETTERS[int(r() * 23)]}{int(r() * 100):02d}X"
            f"{int(r() * 100000):05d}"
        )
    if pt.modifiers:
        modifier, m = _MODIFIERS[int(r() * len(_MODIFIERS))]
        mult *= m
        if modifier:
            pre.insert(0, modifier)
    color = _COLORS[int(r() * len(_COLORS))] if pt.colored else ""

    # Box-Muller by hand: Random.gauss caches its second value on the instance, which would tie
    # one record's noise to the next once the instance is reseeded and reused.
    noise = math.sqrt(-2.0 * math.log(1.0 - r())) * math.cos(_TAU * r())
    price = _round_price(pt.base * mult * math.exp(NOISE_SIGMA * noise))

    name = " ".join((*pre, pt.name)) if pre else pt.name
    hooks = cat.hooks
    hook = hooks[int(r() * len(hooks))]
    specs = ", ".join(post)
    style = r()  # text length: title-only, bullets-only, medium, long
    shape = int(r() * 4)
    if shape == 0:
        title = (
            f"{brand} {name}"
            + (f", {specs}" if specs else "")
            + f", {hook}"
            + (f", {color}" if color else "")
        )
    elif shape == 1:
        title = (
            f"{brand} {name} - {hook}" + (f", {specs}" if specs else "") + (f" ({color})" if color else "")
        )
    elif shape == 2:
        title = (
            f"{name} by {brand}"
            + (f" - {specs}" if specs else "")
            + f", {hook}"
            + (f", {color}" if color else "")
        )
    else:
        title = f"{brand} {name}" + (f" {specs}" if specs else "") + f" | {hook}"
    if style < 0.15:
        # Title-only listings on Amazon pack their selling points into the title.
        h = hooks.index(hook)
        extra = 1
        while len(title) < 70 and extra < len(hooks):
            title = f"{title}, {hooks[(h + extra) % len(hooks)]}"
            extra += 1
        title = f"{title} for {cat.display}" if len(title) < 70 else title

    fields = {"brand": brand, "pt": pt.name.lower(), "specs": specs or pt.name}
    features: list[str]
    description: list[str]
    if style < 0.15:
        features, description = [], []
    else:
        bpool = _BULLET_POOLS[cat.name]
        half = len(bpool) // 2
        start = int(r() * half)
        long_text = style >= 0.7
        k = 5 + int(r() * 4) if long_text else 2 + int(r() * 4)
        features = [_fill(b, fields) for b in bpool[start : start + k]]
        if specs and r() < 0.6:
            features.insert(int(r() * len(features)), f"SPECIFICATIONS: {name}, {specs}.")
        spool = _SENTENCE_POOLS[cat.name]
        shalf = len(spool) // 2
        if long_text:
            description = []
            for _ in range(2 + int(r() * 3)):
                s0 = int(r() * shalf)
                description.append(" ".join(_fill(s, fields) for s in spool[s0 : s0 + 3 + int(r() * 3)]))
        elif style < 0.3:
            description = []  # bullets only, as many real listings are
        else:
            s0 = int(r() * shalf)
            description = [" ".join(_fill(s, fields) for s in spool[s0 : s0 + 2 + int(r() * 3)])]

    weight = pt.weight_lb * (size**0.5) * (0.85 + 0.3 * r())
    side = (weight + 0.05) ** (1 / 3) * 6.0
    details: dict[str, Any] = {
        "Brand": brand,
        "Item Weight": _weight_text(weight),
        "Product Dimensions": f"{side * (0.8 + 0.8 * r()):.1f} x {side * (0.5 + 0.6 * r()):.1f} x "
        f"{side * (0.2 + 0.6 * r()):.1f} inches",
    }
    for key, value in spec_details:
        details[key] = value
    if color and r() < 0.5:
        details["Color"] = color
    if r() < 0.45:
        details["Item model number"] = (
            f"{_LETTERS[int(r() * 23)]}{_LETTERS[int(r() * 23)]}-{int(r() * 10000):04d}"
            f"{_LETTERS[int(r() * 23)]}{int(r() * 10)}"
        )
    rank = int(math.exp(2 + 11 * r()))
    bsr: dict[str, int] = {cat.display: rank}
    if r() < 0.7:
        bsr[pt.path[-1]] = max(1, rank // (5 + int(r() * 50)))
    details["Best Sellers Rank"] = bsr
    details["Date First Available"] = f"{_MONTHS[int(r() * 12)]} {1 + int(r() * 28)}, {2010 + int(r() * 14)}"
    if r() < 0.3:
        details["Is Discontinued By Manufacturer"] = "No"

    store_roll = r()
    store = brand if store_roll < 0.8 else (f"{brand} Store" if store_roll < 0.95 else None)
    return {
        # A sliver of real listings have no department.
        "main_category": cat.name if r() >= 0.01 else None,
        "title": title,
        "features": features,
        "description": description,
        "price": price,
        "details": details,
        "store": store,
        "categories": [cat.display, *pt.path] if r() < 0.75 else [],
        "parent_asin": _asin(r),
    }


# --- malformed records ------------------------------------------------------------------------

_NON_NUMERIC_PRICES = ("N/A", "Currently unavailable.", "", "See price in cart", "—", "TBD", "null")


def _mojibake(text: str) -> str:
    # The classic UTF-8-read-as-cp1252 round trip: "’" becomes "â€™", "é" becomes "Ã©".
    return text.encode("utf-8").decode("cp1252", errors="replace")


def _malform(rng: random.Random, rec: dict[str, Any]) -> RawRecord:
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
        rec["price"] = _NON_NUMERIC_PRICES[int(r() * len(_NON_NUMERIC_PRICES))]
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


# --- the stream -------------------------------------------------------------------------------


def _item(seed: int, i: int, malformed_fraction: float, rng: random.Random) -> RawRecord:
    # Seeding the C generator directly: constructing a random.Random per item costs a sixth of
    # the whole record, and nothing here uses the Python-level state (gauss) that seed() resets.
    _mt_seed(rng, (seed % (1 << 64)) * _SEED_STRIDE + i)
    r = rng.random
    # Drawn before anything else so a duplicate's choice never shifts the record's own content.
    role = r()
    back = r()
    if i > 0 and role < DUPLICATE_FRACTION + VARIANT_FRACTION:
        j = i - 1 - int(back * min(i, _DUP_WINDOW))
        original = _item(seed, j, malformed_fraction, random.Random())
        if role < DUPLICATE_FRACTION:
            return original
        if isinstance(original, dict):
            price = original.get("price")
            if isinstance(price, float) and price > 0 and isinstance(original.get("title"), str):
                # The same product re-listed by another seller: same text, its own price and ASIN.
                ratio = 1.1 + 0.4 * r()
                price *= ratio if r() < 0.5 else 1 / ratio
                return {**original, "price": _round_price(price), "parent_asin": _asin(r)}
    rec = _clean_record(rng)
    if r() < malformed_fraction:
        return _malform(rng, rec)
    return rec


def generate_catalog(n_items: int, seed: int = 42, malformed_fraction: float = 0.03) -> Iterator[RawRecord]:
    """Stream ``n_items`` raw catalog records; mostly dicts, a few malformed values of any type.

    Record ``i`` depends only on ``(seed, i)``, so generating ``n + k`` items starts with the
    same ``n``. Memory use does not grow with ``n_items``. Bad arguments raise ``ValueError`` here,
    at the call, not at the first ``next``.
    """
    if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 0:
        raise ValueError(f"n_items must be a non-negative int, got {n_items!r}")
    if not 0.0 <= malformed_fraction <= 1.0:
        raise ValueError(f"malformed_fraction must be within [0, 1], got {malformed_fraction!r}")
    return _stream(n_items, seed, malformed_fraction)


def _stream(n_items: int, seed: int, malformed_fraction: float) -> Iterator[RawRecord]:
    rng = random.Random()
    for i in range(n_items):
        yield _item(seed, i, malformed_fraction, rng)
