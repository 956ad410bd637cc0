"""The product vocabulary both report writers share: categories, their keywords, colors, materials.

`Category` is the closed set of category names a report carries; the OpenAI writer sends it to
the model as an enum, the template writer finds it with `find_product`. Keywords are singular
nouns (or short noun phrases); their plurals are derived, so "shoes" finds "shoe".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

Category = Literal[
    "phones",
    "computers",
    "electronics",
    "watches",
    "jewelry",
    "footwear",
    "bags",
    "clothing",
    "furniture",
    "home & kitchen",
    "toys",
    "books",
    "beauty",
    "sports",
    "tools",
    "other",
]
CATEGORIES: Final[tuple[Category, ...]] = get_args(Category)

_KEYWORDS: Final[dict[Category, tuple[str, ...]]] = {
    "phones": ("phone", "smartphone", "iphone", "cell phone", "cellphone", "mobile phone", "android phone"),
    "computers": (
        "laptop",
        "computer",
        "notebook computer",
        "macbook",
        "desktop computer",
        "tablet",
        "ipad",
        "keyboard",
        "computer mouse",
        "monitor",
    ),
    "electronics": (
        "camera",
        "headphone",
        "headset",
        "earbud",
        "earphone",
        "speaker",
        "television",
        "tv",
        "remote control",
        "game controller",
        "controller",
        "console",
        "charger",
        "radio",
        "drone",
        "smartwatch",
    ),
    "watches": ("watch", "wristwatch"),
    "jewelry": ("ring", "necklace", "bracelet", "earring", "pendant", "brooch", "jewelry", "jewellery"),
    "footwear": (
        "shoe",
        "running shoe",
        "sneaker",
        "trainer",
        "boot",
        "sandal",
        "slipper",
        "heel",
        "high heel",
        "loafer",
        "flip flop",
    ),
    "bags": (
        "bag",
        "handbag",
        "purse",
        "backpack",
        "suitcase",
        "luggage",
        "wallet",
        "tote",
        "tote bag",
        "clutch",
        "briefcase",
        "duffel bag",
    ),
    "clothing": (
        "shirt",
        "t-shirt",
        "tshirt",
        "jacket",
        "coat",
        "dress",
        "skirt",
        "jeans",
        "pants",
        "trousers",
        "shorts",
        "sweater",
        "hoodie",
        "sweatshirt",
        "blouse",
        "suit",
        "hat",
        "cap",
        "scarf",
        "glove",
        "sock",
        "jersey",
        "tank top",
        "vest",
        "cardigan",
        "uniform",
    ),
    "furniture": (
        "chair",
        "table",
        "desk",
        "sofa",
        "couch",
        "bed",
        "dresser",
        "cabinet",
        "shelf",
        "bookshelf",
        "stool",
        "bench",
        "armchair",
        "wardrobe",
        "nightstand",
    ),
    "home & kitchen": (
        "mug",
        "cup",
        "plate",
        "bowl",
        "pan",
        "pot",
        "kettle",
        "teapot",
        "toaster",
        "blender",
        "knife",
        "fork",
        "spoon",
        "vase",
        "lamp",
        "candle",
        "clock",
        "pillow",
        "blanket",
        "towel",
        "bottle",
        "water bottle",
        "jar",
        "coffee maker",
        "microwave",
        "glassware",
        "cutlery",
    ),
    "toys": (
        "toy",
        "teddy bear",
        "stuffed animal",
        "doll",
        "action figure",
        "lego",
        "puzzle",
        "board game",
        "toy car",
        "plush toy",
    ),
    "books": ("book", "novel", "magazine", "comic", "comic book", "textbook", "notebook"),
    "beauty": (
        "lipstick",
        "perfume",
        "cologne",
        "makeup",
        "cosmetic",
        "lotion",
        "face cream",
        "hand cream",
        "shampoo",
        "nail polish",
        "mascara",
        "hairbrush",
        "comb",
    ),
    "sports": (
        "ball",
        "football",
        "soccer ball",
        "basketball",
        "baseball",
        "tennis racket",
        "racket",
        "bicycle",
        "bike",
        "helmet",
        "skateboard",
        "surfboard",
        "ski",
        "snowboard",
        "golf club",
        "dumbbell",
        "yoga mat",
        "frisbee",
    ),
    "tools": (
        "tool",
        "hammer",
        "screwdriver",
        "wrench",
        "drill",
        "handsaw",
        "pliers",
        "toolbox",
        "tape measure",
        "shovel",
    ),
}


def _vocabulary(words: str) -> frozenset[str]:
    """Return the words of a space-separated list (long word lists read best as prose)."""
    return frozenset(words.split())


# Colors BLIP-2 names; a modifier counts only right before a color ("dark blue", not "dark room").
COLORS: Final[frozenset[str]] = _vocabulary(
    "red blue green yellow orange purple violet pink brown black white gray grey beige tan cream ivory "
    "navy maroon burgundy teal turquoise gold golden silver bronze khaki olive magenta cyan lavender "
    "multicolor multicolored multicolour colorful colourful"
)
COLOR_MODIFIERS: Final[frozenset[str]] = _vocabulary("light dark bright pale deep navy royal")

# Materials, with the adjective forms captions use mapped to the noun.
MATERIALS: Final[dict[str, str]] = {
    **{
        word: word
        for word in _vocabulary(
            "leather suede cotton wool denim silk linen cashmere polyester nylon spandex fleece velvet canvas "
            "plastic metal steel aluminum aluminium titanium iron brass copper gold silver chrome "
            "wood bamboo rattan wicker glass ceramic porcelain stone marble granite concrete "
            "rubber silicone foam vinyl paper cardboard fabric mesh"
        )
    },
    "wooden": "wood",
    "woolen": "wool",
    "woollen": "wool",
    "golden": "gold",
    "metallic": "metal",
    "stainless": "stainless steel",
}


# Surface patterns, mapped to how a listing names them.
PATTERNS: Final[dict[str, str]] = {
    "striped": "striped",
    "floral": "floral",
    "plaid": "plaid",
    "tartan": "tartan",
    "checkered": "checkered",
    "paisley": "paisley",
    "polka": "polka dot",
    "camouflage": "camouflage",
    "camo": "camouflage",
    "leopard": "leopard print",
}


@dataclass(frozen=True, slots=True)
class ProductMatch:
    """A product noun found in a word list: its singular phrase, its category and where it stood."""

    noun: str
    category: Category
    start: int  # index of the first word of the match
    end: int  # index after the last word


def _plural(phrase: str) -> str:
    """Return the regular English plural of a phrase's last word."""
    head, _, last = phrase.rpartition(" ")
    if last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u"):
        last = last[:-1] + "ies"
    elif last.endswith(("knife", "shelf")):
        last = last.removesuffix("fe").removesuffix("f") + "ves"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def _build_index() -> dict[tuple[str, ...], tuple[str, Category]]:
    index: dict[tuple[str, ...], tuple[str, Category]] = {}
    for category, keywords in _KEYWORDS.items():
        for keyword in keywords:
            for form in (keyword, _plural(keyword)):
                # The first category listed keeps a shared phrase, so the table's order is the tie-break.
                index.setdefault(tuple(form.split()), (keyword, category))
    return index


_INDEX: Final[dict[tuple[str, ...], tuple[str, Category]]] = _build_index()
_LONGEST: Final[int] = max(len(key) for key in _INDEX)
PRODUCT_WORDS: Final[frozenset[str]] = frozenset(word for key in _INDEX for word in key)


def find_product(words: Sequence[str]) -> ProductMatch | None:
    """Return the leftmost product noun in lower-case `words`, the longest phrase at that place."""
    for start in range(len(words)):
        for size in range(min(_LONGEST, len(words) - start), 0, -1):
            hit = _INDEX.get(tuple(words[start : start + size]))
            if hit is not None:
                return ProductMatch(noun=hit[0], category=hit[1], start=start, end=start + size)
    return None
