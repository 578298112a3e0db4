"""Which language an item is in: the producer's `lang` when it names one, else the text's script.

The worker routes each item to the model bundle trained on its language and
labels its metrics by language, so the answer must be cheap (one pass over
the first characters), deterministic and bounded: a small set of codes,
never whatever string a producer sends.

Script decides, not vocabulary: Han characters mean Chinese unless kana
says Japanese; Hangul means Korean; anything else with letters is reported
as English, the one Latin-script language the models are trained on.
Han characters carry a word or more each, so a text counts as Chinese when
they are at least a third as many as its Latin letters: "贵州茅台600519
跌停 Moutai" is Chinese, "Kweichow Moutai (贵州茅台) cut its dividend" is
English.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Literal

LangSource = Literal["input", "script"]

SCAN_CHARS = 400  # enough to decide; bounds the cost of a long text
HAN_PER_LATIN = 1 / 3

# Producer spellings folded onto the codes the bundles declare (ISO 639-1).
ALIASES = {
    "zh": "zh", "zho": "zh", "chi": "zh", "cmn": "zh", "yue": "zh", "chinese": "zh", "中文": "zh",
    "en": "en", "eng": "en", "english": "en",
    "ja": "ja", "jpn": "ja", "ko": "ko", "kor": "ko",
}  # fmt: skip
_TAG = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*$")


# Han ideographs: the unified block, extension A, compatibility ideographs, extensions B-G.
HAN_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF), (0x20000, 0x3134F))
# The same ranges as a regex character class, for code that matches Han inside a pattern.
HAN_CLASS = "[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in HAN_RANGES) + "]"
# Unpacked for `_is_han`, which runs once per non-ASCII character of every item: a loop over the
# ranges there made script detection of a Chinese text several times slower.
(_H1, _H1_END), (_H2, _H2_END), (_H3, _H3_END), (_H4, _H4_END) = HAN_RANGES


def _is_han(ch: str) -> bool:
    o = ord(ch)
    return _H1 <= o <= _H1_END or _H2 <= o <= _H2_END or _H3 <= o <= _H3_END or _H4 <= o <= _H4_END


def _is_kana(ch: str) -> bool:
    return 0x3040 <= ord(ch) <= 0x30FF or 0x31F0 <= ord(ch) <= 0x31FF


def _is_hangul(ch: str) -> bool:
    o = ord(ch)
    return 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F


def detect_script(text: str) -> str:
    """The language a text's script indicates: "zh", "ja", "ko" or "en" (also for text without letters)."""
    han = kana = hangul = latin = 0
    for ch in text[:SCAN_CHARS]:
        if ch.isascii():
            latin += ch.isalpha()
        elif _is_han(ch):
            han += 1
        elif _is_kana(ch):
            kana += 1
        elif _is_hangul(ch):
            hangul += 1
        elif ch.isalpha() and unicodedata.name(ch, "").startswith("LATIN"):
            latin += 1
    if hangul and hangul >= han:
        return "ko"
    if kana:
        return "ja"
    if han and han >= latin * HAN_PER_LATIN:
        return "zh"
    return "en"


def normalize_lang(tag: str | None) -> str | None:
    """A producer's language tag as a code ("zh-Hans-CN" -> "zh", "EN_us" -> "en"); None if it names none."""
    if tag is None:
        return None
    t = tag.strip()
    if t.lower() in ALIASES:
        return ALIASES[t.lower()]
    if not _TAG.match(t):
        return None
    primary = re.split(r"[-_]", t, maxsplit=1)[0].lower()
    return ALIASES.get(primary, primary if len(primary) == 2 else None)


def item_language(tag: str | None, text: str) -> tuple[str, LangSource]:
    """The item's language and where it came from: the producer's tag if it names one, else the script."""
    code = normalize_lang(tag)
    if code is not None:
        return code, "input"
    return detect_script(text), "script"


def served_language(lang: str | None, declared: Sequence[str]) -> str:
    """The language whose model and calibration serve an item: its own if declared, else the first declared.

    The worker's scorer, `finsent-train evaluate` and calibration all resolve an undeclared language
    this way, so a bundle is measured the way it serves.
    """
    return lang if lang is not None and lang in declared else declared[0]
