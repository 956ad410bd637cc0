"""The embedded report writer: rules over the caption and answers, no LLM, no network.

It is deterministic and takes microseconds, so it is the default (`REPORT_WRITER=template`) and
the writer tests run against. It writes English only: `locale` is accepted for the port and
ignored (the OpenAI writer honours it). It ignores the seller's `hints` too: free text it cannot
check has no place in a report built from rules.

Answers are matched to fields by the words of their question, never by position, because
operators may change `VISION_QUESTIONS` and clients may append their own. The vision model may
talk nonsense (the test model is random weights), so every value is kept only when it reads like
one: a color must be a color word, a material a material word, a brand not a non-answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from app.domain.models import REPORT_MAX_TAGS, REPORT_MAX_TITLE_CHARS, Condition, ProductReport, VisionResult
from app.services.taxonomy import (
    COLOR_MODIFIERS,
    COLORS,
    MATERIALS,
    PATTERNS,
    PRODUCT_WORDS,
    ProductMatch,
    find_product,
)
from app.services.text import truncate_words

FALLBACK_TITLE: Final = "Unidentified product"

AnswerField = Literal["brand", "color", "material", "condition", "text", "product"]

# Checked in this order, so "What brand is this product?" is about the brand, not the product.
_QUESTION_WORDS: Final[tuple[tuple[AnswerField, frozenset[str]], ...]] = (
    ("brand", frozenset({"brand", "brands", "manufacturer", "maker", "company"})),
    ("color", frozenset({"color", "colour", "colors", "colours"})),
    ("material", frozenset({"material", "materials", "made", "fabric"})),
    ("condition", frozenset({"condition", "damage", "damaged", "worn", "wear"})),
    ("text", frozenset({"text", "written", "writing", "say", "says", "words", "printed", "label"})),
    ("product", frozenset({"product", "item", "object", "thing", "kind", "type"})),
)

# Answers that carry no value, compared after cleaning and lower-casing.
_NON_ANSWERS: Final = frozenset(
    {
        "",
        "unknown",
        "no",
        "none",
        "nothing",
        "n a",
        "na",
        "yes",
        "i don't know",
        "i dont know",
        "don't know",
        "dont know",
        "i do not know",
        "not sure",
        "i'm not sure",
        "im not sure",
        "unsure",
        "no idea",
        "can't tell",
        "cannot tell",
        "unclear",
        "not visible",
        "none visible",
        "nothing visible",
        "no text",
        "no brand",
        "brand",
        "unbranded",
        "generic",
        "no name",
        "not applicable",
        "text",
        "words",
        "letters",
        "logo",
        "it",
        "this",
    }
)

# Lead-ins the vision model puts before the value ("it is nike", "the text says gucci").
_LEAD_INS: Final[tuple[tuple[str, ...], ...]] = tuple(
    tuple(phrase.split())
    for phrase in (
        "it looks like",
        "looks like",
        "the brand is",
        "the text says",
        "the text reads",
        "it is made of",
        "made of",
        "it is",
        "it's",
        "its",
        "this is",
        "that is",
        "it says",
        "says",
        "a",
        "an",
        "the",
    )
)
_TRAILERS: Final = frozenset({"brand", "logo"})

_REFURBISHED: Final = frozenset({"refurbished", "refurb", "renewed", "reconditioned", "restored"})
_USED: Final = frozenset(
    {
        "used",
        "worn",
        "old",
        "damaged",
        "scratched",
        "scuffed",
        "dirty",
        "stained",
        "broken",
        "torn",
        "cracked",
        "faded",
        "vintage",
        "secondhand",
        "second-hand",
        "pre-owned",
        "preowned",
        "good",
        "fair",
        "poor",
    }
)
_CAPTION_USED: Final = frozenset(
    {"used", "worn", "damaged", "scratched", "scuffed", "broken", "torn", "cracked", "stained", "vintage"}
)
_NEW: Final = frozenset({"new", "unused", "mint", "sealed", "unopened", "pristine", "unworn"})
_NEGATIONS: Final = frozenset({"not", "never", "isn't", "isnt", "no"})

_TRAILING_NOT_BRAND: Final = COLORS | MATERIALS.keys() | PRODUCT_WORDS
_NOT_BRAND: Final = _TRAILING_NOT_BRAND | PATTERNS.keys() | _NEW | _USED | _REFURBISHED | _NON_ANSWERS

# A run of letters or digits, with inner apostrophes, ampersands, dots or hyphens ("t-shirt", "h&m").
_WORD: Final = re.compile(r"[^\W_]+(?:['&.\-][^\W_]+)*")


class TemplateWriter:
    """Write product reports with rules and a keyword taxonomy (English only)."""

    name = "template"

    async def write(self, vision: VisionResult, *, locale: str, hints: str | None) -> ProductReport:
        """Write the report; `locale` and `hints` are ignored (see the module docstring)."""
        return build_report(vision)


def build_report(vision: VisionResult) -> ProductReport:
    """Derive a report from a caption and answers; never raise on odd text."""
    answers = _match_answers(vision)
    caption = _words(vision.caption)
    caption_lower = [word.lower() for word in caption]

    caption_product = find_product(caption_lower)
    product = _more_specific(find_product(_lower(answers.get("product", []))), caption_product)
    # Caption words before the product noun describe it ("a red leather handbag on a wooden table");
    # words after it usually describe the background, so they never feed an attribute.
    before_noun = caption_lower[: caption_product.start] if caption_product else []

    brand = _brand(answers.get("brand", []))
    colors = _colors(_lower(answers.get("color", []))) or _colors(before_noun)
    # "a gold watch" names a color more likely than a material, so the caption's color words stay colors.
    materials = _materials(_lower(answers.get("material", []))) or _materials(
        [word for word in before_noun if word not in COLORS]
    )
    color, material = _and_list(colors), _and_list(materials)
    pattern = _pattern(_lower(answers.get("color", [])) + before_noun)
    visible_text = _visible_text(answers.get("text", []))
    # A caption mentions condition only in passing ("a new york cap", "a good dog"): trust only clear words.
    condition = (
        _condition(_lower(answers.get("condition", [])))
        or _condition(caption_lower, used_words=_CAPTION_USED, new_words=frozenset())
        or "unknown"
    )

    attributes: dict[str, str] = {}
    for key, value in (("color", color), ("material", material), ("pattern", pattern), ("visible_text", visible_text)):
        if value:
            attributes[key] = value

    title = _title(brand, color, material, product, caption)
    return ProductReport(
        title=title,
        brand=brand,
        category=product.category if product else "other",
        attributes=attributes,
        condition=condition,
        description=_description(caption, title, brand, attributes, condition),
        tags=_tags(brand, product, colors, materials, pattern),
        writer=TemplateWriter.name,
    )


def _more_specific(answered: ProductMatch | None, captioned: ProductMatch | None) -> ProductMatch | None:
    """Prefer the answer's product, unless the caption names the same thing more precisely."""
    if answered is None:
        return captioned
    if captioned is not None and captioned.noun.endswith(f" {answered.noun}"):
        return captioned  # "shoe" answered, "running shoes" captioned
    return answered


def _words(text: str) -> list[str]:
    """Split text into clean words: NFKC, curly quotes straightened, punctuation and controls dropped."""
    normalized = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    return _WORD.findall(normalized)


def _lower(words: Iterable[str]) -> list[str]:
    return [word.lower() for word in words]


def _field_of(question: str) -> AnswerField | None:
    words = set(_lower(_words(question)))
    for field, keywords in _QUESTION_WORDS:
        if words & keywords:
            return field
    return None


def _match_answers(vision: VisionResult) -> dict[AnswerField, list[str]]:
    """Return the first usable answer per field, as cleaned words in their original case."""
    by_field: dict[AnswerField, list[str]] = {}
    for qa in vision.answers:
        field = _field_of(qa.question)
        if field is None or field in by_field:
            continue  # the first question about a field wins: the configured ones come first
        words = _strip_lead_ins(_words(qa.answer))
        if " ".join(_lower(words)) not in _NON_ANSWERS:
            by_field[field] = words
    return by_field


def _strip_lead_ins(words: list[str]) -> list[str]:
    changed = True
    while changed and words:
        changed = False
        lower = _lower(words)
        for lead in _LEAD_INS:
            if tuple(lower[: len(lead)]) == lead and len(words) > len(lead):
                words = words[len(lead) :]
                changed = True
                break
    while len(words) > 1 and words[-1].lower() in _TRAILERS:
        words = words[:-1]
    return words


def _brand(words: list[str]) -> str | None:
    """Return the brand an answer names, or None for a non-answer.

    BLIP-2 often answers "what brand" with the product, a color or a condition ("shoe", "red", "new"),
    and sometimes wraps the brand in them ("red nike shoes"): trim those, and refuse what is left
    when it is only such words. Only the ends are trimmed, so "New Balance" survives.
    """
    words = list(words)
    while words and words[-1].lower() in _TRAILING_NOT_BRAND:
        words.pop()
    while words and words[0].lower() in COLORS:
        words.pop(0)
    text = " ".join(words)
    if not words or len(words) > 3 or len(text) > 40 or text.lower() in _NON_ANSWERS:
        return None
    if all(word.lower() in _NOT_BRAND for word in words) or not any(char.isalpha() for char in text):
        return None
    return " ".join(_brand_case(word) for word in words)


def _brand_case(word: str) -> str:
    """Capitalize a lower-case brand word; keep mixed case ("iPhone"); upper-case initialisms ("hp", "h&m")."""
    if word != word.lower():
        return word
    if len(word) <= 2 or "&" in word:
        return word.upper()
    return word[:1].upper() + word[1:]


def _colors(words: Sequence[str]) -> list[str]:
    """Return the colors named, each with its modifier: ["navy blue"], ["red", "white"]."""
    colors: list[str] = []
    for index, word in enumerate(words):
        following = words[index + 1] if index + 1 < len(words) else ""
        if word not in COLORS or (word in COLOR_MODIFIERS and following in COLORS):
            continue  # "navy" in "navy blue" is a modifier, taken with "blue"
        previous = words[index - 1] if index else ""
        color = "gold" if word == "golden" else word
        colors.append(f"{previous} {color}" if previous in COLOR_MODIFIERS else color)
    return _unique(colors)


def _materials(words: Sequence[str]) -> list[str]:
    materials: list[str] = []
    for index, word in enumerate(words):
        if word == "steel" and index and words[index - 1] == "stainless":
            continue  # already taken as "stainless steel"
        if word in MATERIALS:
            materials.append(MATERIALS[word])
    return _unique(materials)


def _pattern(words: Sequence[str]) -> str | None:
    return next((PATTERNS[word] for word in words if word in PATTERNS), None)


def _unique(values: Iterable[str], limit: int = 3) -> list[str]:
    return list(dict.fromkeys(values))[:limit]


def _and_list(values: Sequence[str]) -> str | None:
    """Join values as prose: "red", "red and white", "red, white and blue"."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return f"{', '.join(values[:-1])} and {values[-1]}"


def _visible_text(words: list[str]) -> str | None:
    text = " ".join(words)
    if not any(char.isalnum() for char in text):
        return None
    return truncate_words(text, 60)


def _condition(
    words: Sequence[str], *, used_words: frozenset[str] = _USED, new_words: frozenset[str] = _NEW
) -> Condition | None:
    """Return the condition the first condition word signals, reading "not new" as used, "never used" as new."""
    for index, word in enumerate(words):
        previous = words[index - 1] if index else ""
        if word in _REFURBISHED:
            return "refurbished"
        if word in new_words:
            # "like new" is the resale phrase for a used item in top shape.
            return "used" if previous in _NEGATIONS or previous == "like" else "new"
        if word in used_words:
            if previous in _NEGATIONS:
                # "never used" means new; "not damaged" says nothing about it.
                return "new" if word in {"used", "worn"} else None
            return "used"
    return None


def _title(
    brand: str | None,
    color: str | None,
    material: str | None,
    product: ProductMatch | None,
    caption: list[str],
) -> str:
    if product is not None:
        parts = [part for part in (brand, color, material, product.noun) if part]
        text = " ".join(parts)
    else:
        # No product noun: the caption is all there is; its article is noise in a title.
        words = caption[1:] if caption and caption[0].lower() in {"a", "an", "the"} else caption
        text = " ".join(words)
    if not text:
        return FALLBACK_TITLE
    return _sentence_case(truncate_words(text, REPORT_MAX_TITLE_CHARS))


def _description(
    caption: list[str],
    title: str,
    brand: str | None,
    attributes: dict[str, str],
    condition: Condition,
) -> str:
    sentences = [_sentence_case(truncate_words(" ".join(caption), 300)) if caption else title]
    details = [f"brand: {brand}"] if brand else []
    details += [f"{key.replace('_', ' ')}: {value}" for key, value in attributes.items()]
    if details:
        sentences.append(_sentence_case("; ".join(details)))
    if condition != "unknown":
        sentences.append(f"Condition: {condition}")
    return " ".join(f"{sentence}." for sentence in sentences)


def _tags(
    brand: str | None,
    product: ProductMatch | None,
    colors: list[str],
    materials: list[str],
    pattern: str | None,
) -> list[str]:
    candidates = [brand, product.noun if product else None, product.category if product else None]
    candidates += [*colors, *materials, pattern]
    tags = dict.fromkeys(tag.lower() for tag in candidates if tag)
    return list(tags)[:REPORT_MAX_TAGS]


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]
