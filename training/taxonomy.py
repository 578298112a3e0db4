"""One topic taxonomy across languages: Chinese FinNL tags onto the 20 English topics.

Dashboards, trends and alerts key by topic, so a Chinese news flash about a
takeover must land on the same label as an English tweet about one. The
English twitter topic set defines the labels (`training.data.TOPIC_LABELS`,
unchanged: the shipped bundle and the default recipe keep their 20-way
head); FinNL's tags are mapped onto them here and nowhere else.
docs/TAXONOMY.md has the table with counts and the reasons.

FinNL labels are "region|topic[|topic...]" (e.g. 外国|公司). The rule:

* region tags (中国 / 外国 / 国际) say where, not what: ignored;
* every topic tag maps to one English topic (`FINNL_TOPICS`), refined by a
  few keyword rules on the lead of the text where one Chinese tag spans
  several English topics (`REFINE`: e.g. 公司 with 净利润 is Earnings, 期货
  on gold is Gold | Metals | Materials, 经济 about a central bank is
  Fed | Central Banks), because the English set splits what FinNL lumps
  together and the shared encoder would otherwise learn two meanings for
  one label;
* 新冠 (COVID) and 行业 (industry) are secondary: they never decide a topic
  (case counts are not financial news; "industry" spans stock moves, macro
  and company news), but do not block the row's other tag;
* 虚拟货币 (crypto) has no English topic (the English set files crypto
  tweets under five different labels): its rows are dropped;
* rows whose tags map to two different topics are dropped (conflict), as
  are rows with no topic tag left.

Nothing here imports torch: the monitor may import it if it ever needs to.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from training.data import TOPIC_LABELS

# The taxonomy: the English twitter topic set's 20 labels, for every language.
TOPICS: tuple[str, ...] = TOPIC_LABELS
REGION_TAGS = frozenset({"中国", "外国", "国际"})
# Tag -> English topic (before the keyword refinements below).
FINNL_TOPICS: dict[str, str] = {
    "公司": "Company | Product News",
    "大盘": "Markets",
    "经济": "Macro",
    "政策": "Legal | Regulation",
    "政治": "Politics",
    "期货": "Markets",
    "债券": "Treasuries | Corporate Debt",
    "房地产": "Macro",  # the English set files housing data and property markets under Macro
    "外汇": "Currencies",
    "能源": "Energy | Oil",
}
# Tags that never decide a topic on their own: the row's other topic tag decides.
SECONDARY_TAGS = frozenset({"新冠", "行业"})
# Tags whose rows are dropped: no English topic holds them consistently.
DROPPED_TAGS = frozenset({"虚拟货币"})
# Obvious annotator slips seen in the published files (typos, synonyms).
TAG_REPAIRS = {"虚拟火币": "虚拟货币", "正政策": "政策", "转债": "债券", "汇率": "外汇", "企业": "公司"}

_CENTRAL_BANK = r"美联储|联储|央行|人民银行|Fed\b|ECB|BOJ|BOE"
# (tag, ordered (topic, pattern) rules); the first pattern found in the lead of the text wins.
REFINE: dict[str, tuple[tuple[str, str], ...]] = {
    "公司": (
        ("Analyst Update", r"评级|目标价"),
        ("Earnings", r"业绩|净利润|营收|营业收入|财报|季报|年报|预增|预亏|扭亏"),
        ("M&A | Investments", r"收购|并购|入股|战略投资"),
        ("IPO", r"IPO|首次公开发行|招股|挂牌上市|递表|过会"),
        ("Dividend", r"分红|派息|股息"),
        ("Personnel Change", r"辞职|辞任|任命|离职|卸任|接任|出任"),
    ),
    "经济": (("Fed | Central Banks", _CENTRAL_BANK),),
    "政策": (("Fed | Central Banks", _CENTRAL_BANK),),
    "期货": (
        ("Energy | Oil", r"原油|石油|天然气|燃料油|动力煤|焦煤|油价|布伦特|WTI"),
        ("Gold | Metals | Materials", r"黄金|期金|现货金|沪金|白银|期银|沪银|金属|铜|铝|镍|锌|钢|铁矿|锡|铅"),
    ),
}
LEAD_CHARS = 40  # the headline / speaker part of a flash; later sentences drift to other subjects

_REFINE_RE = {tag: tuple((topic, re.compile(p)) for topic, p in rules) for tag, rules in REFINE.items()}
_KNOWN = frozenset(FINNL_TOPICS) | SECONDARY_TAGS | DROPPED_TAGS


@dataclass(frozen=True)
class TopicDecision:
    """The English topic for one FinNL row, or None with the reason it was dropped."""

    topic: str | None
    reason: str  # "mapped" | "conflict" | "secondary_only" | "dropped_tag" | "no_topic_tag"


def parse_tags(label: str) -> tuple[list[str], list[str]]:
    """Topic tags (repaired) and unknown junk tags of one "a|b|c" label; region tags are left out.

    A region glued to a topic ("中国大盘", "外国债券") is split; trailing enumeration
    commas ("公司、") are stripped.
    """
    topics: list[str] = []
    junk: list[str] = []
    for raw in str(label).split("|"):
        tag = raw.strip().strip("、,，").strip()
        tag = TAG_REPAIRS.get(tag, tag)
        if not tag or tag in REGION_TAGS:
            continue
        if tag not in _KNOWN:
            for region in REGION_TAGS:
                rest = TAG_REPAIRS.get(tag[len(region) :], tag[len(region) :])
                if tag.startswith(region) and rest in _KNOWN:
                    tag = rest
                    break
            else:
                junk.append(tag)
                continue
        if tag not in topics:
            topics.append(tag)
    return topics, junk


def refine(tag: str, text: str) -> str:
    """The English topic of one FinNL topic tag for this text (keyword rules on its lead)."""
    lead = text[:LEAD_CHARS]
    for topic, pattern in _REFINE_RE.get(tag, ()):
        if pattern.search(lead):
            return topic
    return FINNL_TOPICS[tag]


def finnl_topic(label: str, text: str) -> TopicDecision:
    """Map one FinNL row onto the English taxonomy (module docstring: the rule)."""
    tags, _junk = parse_tags(label)
    if any(t in DROPPED_TAGS for t in tags):
        return TopicDecision(None, "dropped_tag")
    primary = [t for t in tags if t in FINNL_TOPICS]
    if not primary:
        return TopicDecision(None, "secondary_only" if tags else "no_topic_tag")
    topics = {refine(t, text) for t in primary}
    if len(topics) > 1:
        return TopicDecision(None, "conflict")
    return TopicDecision(topics.pop(), "mapped")


def mapping_report(rows: list[tuple[str, str]]) -> dict[str, Counter[str]]:
    """Counts for docs/TAXONOMY.md: per raw tag, per decision reason and per English topic."""
    tags: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    topics: Counter[str] = Counter()
    for text, label in rows:
        found, junk = parse_tags(label)
        tags.update(found)
        tags.update(f"junk:{j}" for j in junk)
        d = finnl_topic(label, text)
        reasons[d.reason] += 1
        if d.topic:
            topics[d.topic] += 1
    return {"tags": tags, "reasons": reasons, "topics": topics}
