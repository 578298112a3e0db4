"""Text normalisation shared by training and serving.

One definition, imported by `training/` and by the worker, so the text a
model was trained on and the text it scores in production never drift.
Bump NORMALIZATION_VERSION whenever the output of `normalize_text` changes
for any input: bundles record the version they were trained with and the
worker refuses a bundle that expects another one.

Chinese (and any CJK) text needs no rule of its own; v1 already does what
a multilingual model needs, and the tests pin it:

* full-width ASCII forms become half-width: NFKC maps ＡＢＣ１２３％ to
  ABC123%, the full-width punctuation ，：；！？（） to ,:;!?(), the
  ideographic space U+3000 to a space, and half-width ｡､｢｣ to 。、「」;
* ideographic punctuation NFKC leaves alone is kept: 。 ends a sentence, 、
  enumerates (unlike ","), 【】 marks a headline, 《》 a title, “” a quote;
  all carry meaning and all are pieces of the multilingual tokenizer;
* whitespace is collapsed, not removed: in Chinese news headlines a space
  separates clauses (【…消化CPI高预期 美债仍受追捧】, about 1 in 18 FinNL /
  FinFE texts), so joining the characters would merge two statements;
* simplified and traditional characters are left as written (converting
  would be a translation step, and the tokenizer covers both).

So English text normalises exactly as it did before Chinese sources were
added, the version stays "1", and the shipped English bundle keeps
loading. A rule that changes any output (say, dropping spaces between
Chinese and Latin text) must bump the version, and with it retrain or
re-declare every bundle.
"""

from __future__ import annotations

import html
import re
import unicodedata

NORMALIZATION_VERSION = "1"

_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_WS = re.compile(r"\s+")
# Sequences that appear when UTF-8 bytes were decoded as cp1252/latin-1.
_MOJIBAKE_HINT = re.compile("[\u00c2\u00c3\u00e2][\u0080-\u00bf\u2018-\u203a\u0152-\u0178\u20ac]")


def _fix_mojibake(text: str) -> str:
    """Undo one round of UTF-8-read-as-cp1252 damage, only when it clearly helps."""
    if not _MOJIBAKE_HINT.search(text):
        return text
    for codec in ("cp1252", "latin-1"):
        try:
            fixed = text.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        if len(fixed) < len(text):
            return fixed
    return text


def _drop_controls(text: str) -> str:
    # Cc/Cf (NUL, escapes, zero-width joiners) carry no meaning for the model
    # and break terminals downstream; whitespace controls become spaces.
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r\v\f":
            out.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co"):
            continue
        else:
            out.append(ch)
    return "".join(out)


def normalize_text(text: str) -> str:
    """Clean one text for the model: entities, mojibake, controls, URLs, spaces.

    URLs become the word "url": t.co links are source-specific noise that a
    classifier would otherwise memorise.
    """
    prev = None
    # Tweets carry double-escaped entities such as "&amp;amp;".
    for _ in range(3):
        if prev == text:
            break
        prev, text = text, html.unescape(text)
    text = _fix_mojibake(text)
    text = unicodedata.normalize("NFKC", text)
    text = _drop_controls(text)
    text = _URL.sub(" url ", text)
    return _WS.sub(" ", text).strip()
