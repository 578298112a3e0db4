"""Entity extraction: cashtags, given tickers, watchlist aliases with careful word boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.core.entities import TICKER_RE, Company, Watchlist, default_watchlist, extract_entities

WL = default_watchlist()


@pytest.mark.parametrize(
    ("text", "tickers", "want"),
    [
        # Names and aliases, case-insensitive, on word boundaries.
        ("Apple's iPhone sales beat estimates", [], ["AAPL"]),
        ("Apple’s iPhone sales beat estimates", [], ["AAPL"]),
        ("APPLE SHARES FALL", [], ["AAPL"]),
        ("apple stock is tanking", [], ["AAPL"]),
        ("Applebee's sales slump", [], []),
        ("Pineapple prices rise", [], []),
        ("the iPhone maker said", [], ["AAPL"]),
        ("Goldman Sachs and JP Morgan raise targets", [], ["GS", "JPM"]),
        ("J.P. Morgan's desk", [], ["JPM"]),
        ("JPMorgan Chase & Co reports", [], ["JPM"]),
        ("Bank of America Merrill Lynch cuts", [], ["BAC"]),
        ("Exxon Mobil and Chevron drop as oil falls", [], ["XOM", "CVX"]),
        ("Coca-Cola and Johnson & Johnson", [], ["KO", "JNJ"]),
        ("Amazon.com outage; Amazon Web Services", [], ["AMZN"]),
        ("Alphabet, the parent of Google", [], ["GOOGL"]),
        # Mixed scripts: a CJK neighbour is a boundary, a Latin letter is not.
        ("Tesla股价大跌 📉", [], ["TSLA"]),
        ("特斯拉 Tesla 和 Nvidia", [], ["TSLA", "NVDA"]),
        ("Teslaé", [], []),
        # Short or all-caps aliases and bare tickers count only as written.
        ("MS upgrades GE", [], ["MS", "GE"]),
        ("ms word and c programming; ge", [], []),
        ("FB shares up", [], ["META"]),
        ("fb shares up", [], []),
        ("HSBC and UBS", [], ["HSBC", "UBS"]),
        ("hsbc and ubs", [], []),  # an all-caps name is an acronym: as written only
        ("AWS outage", [], ["AMZN"]),
        ("C and V are letters", [], []),  # one-letter tickers only as cashtags
        # Common words listed as exact aliases.
        ("a meta-analysis of shell companies on a visa", [], []),
        ("Meta and Shell and Visa", [], ["META", "SHEL", "V"]),
        ("META FALLS; SHELL OIL", [], ["META", "SHEL"]),
        ("Meta Platforms Inc", [], ["META"]),
        # Cashtags.
        ("$TSLA and $brk.b rally; a $5bn deal and $3.2 bonus", [], ["TSLA", "BRK.B"]),
        ("US$5 and $ 10 and $$ and $AAPL123", [], []),
        ("$TSLA. Then $NVDA's $AMD,", [], ["TSLA", "NVDA", "AMD"]),
        ("$GOOG and $goog", [], ["GOOGL"]),  # ticker-shaped alias -> canonical ticker
        ("$C $V", [], ["C", "V"]),
        ("$XYZ is not on the watchlist", [], ["XYZ"]),
        ("$TOOLONGX", [], []),
        # Given tickers: first, canonical, de-duplicated; junk ignored.
        ("no companies here", ["aapl", "$msft"], ["AAPL", "MSFT"]),
        ("Tesla says Tesla cars", ["TSLA"], ["TSLA"]),
        ("Nvidia then Apple", ["goog", "bad ticker!", "", "$"], ["GOOGL", "NVDA", "AAPL"]),
        ("", [], []),
    ],
)
def test_extract(text: str, tickers: list[str], want: list[str]) -> None:
    assert extract_entities(text, tickers, WL) == want


def test_order_is_first_appearance_and_output_bounded() -> None:
    assert extract_entities("Nvidia, then $AAPL, then Nvidia again, then Tesla", [], WL) == ["NVDA", "AAPL", "TSLA"]
    text = " ".join(f"${chr(65 + i % 26)}{chr(65 + i // 26)}X" for i in range(100))
    assert len(extract_entities(text, [], WL, max_entities=20)) == 20
    assert extract_entities(text, [f"T{i}" for i in range(30)], WL, max_entities=5) == [f"T{i}" for i in range(5)]
    assert extract_entities("Apple", ["MSFT"], WL, max_entities=0) == []


def test_default_watchlist() -> None:
    assert len(WL.companies) >= 40
    for t in ("AAPL", "MSFT", "TSLA", "JPM", "GS", "HSBC", "UBS", "DB", "CS", "BLK", "COIN", "BRK.B"):
        assert WL.contains(t)
    assert not WL.contains("XYZ") and not WL.contains("aapl")
    assert WL.name_of("TSLA") == "Tesla" and WL.name_of("XYZ") == "XYZ"
    assert WL.canonical("$goog") == "GOOGL" and WL.canonical("xyz") == "XYZ" and WL.canonical("no way") is None
    assert default_watchlist() is WL  # compiled once per process


def test_prefix_aliases_longest_wins_and_boundaries() -> None:
    wl = Watchlist([Company("ACME", "Acme", ("Acme Corp", "Acme Corporation", "Acme Bank")),
                    Company("ACMB", "Acmeb", ())])  # fmt: skip
    assert wl.find("Acme Corporation, Acme Corp., Acme Bank; Acmeb; Acmex") == [
        (0, "ACME"), (18, "ACME"), (30, "ACME"), (41, "ACMB")]  # fmt: skip
    assert extract_entities("acme corporate", [], wl) == ["ACME"]  # "Acme" then a word boundary


def test_alias_with_regex_characters_is_literal() -> None:
    wl = Watchlist([Company("WEIRD", "A+B (Holdings)", ("x.y*z",))])
    assert extract_entities("A+B (Holdings) and x.y*z", [], wl) == ["WEIRD"]
    assert extract_entities("AAB (Holdings) and xxy*z", [], wl) == []


def test_empty_watchlist_still_finds_cashtags() -> None:
    wl = Watchlist([])
    assert extract_entities("$AAPL and Apple", ["msft"], wl) == ["MSFT", "AAPL"]
    assert not wl.contains("AAPL")


def test_watchlist_files(tmp_path: Path) -> None:
    t = tmp_path / "w.toml"
    t.write_text('[[companies]]\nticker = "acme"\nname = "Acme Corp"\naliases = ["Acme"]\nexact = ["Road"]\n')
    wl = Watchlist.from_file(t)
    assert wl.contains("ACME") and extract_entities("Acme shares fall on the Road, not the road", [], wl) == ["ACME"]
    j = tmp_path / "w.json"
    j.write_text('{"companies": [{"ticker": "$zz", "aliases": ["Zedco"]}]}')
    wl = Watchlist.from_file(j)
    assert wl.contains("ZZ") and wl.name_of("ZZ") == "ZZ" and extract_entities("ZEDCO zedco", [], wl) == ["ZZ"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.json", None, "does not exist"),
        ("bad.json", "{not json", "cannot be read"),
        ("bad.toml", "[[companies]\n", "cannot be read"),
        ("list.json", "[1, 2]", "must hold an object"),
        ("nocompanies.json", '{"firms": []}', "'companies' list"),
        ("noticker.json", '{"companies": [{"name": "no ticker"}]}', "ticker"),
        ("badticker.json", '{"companies": [{"ticker": "not a ticker"}]}', "ticker"),
        ("row.json", '{"companies": ["AAPL"]}', "must be an object"),
        ("aliases.json", '{"companies": [{"ticker": "A", "aliases": "Apple"}]}', "'aliases' must be a list"),
        ("exact.json", '{"companies": [{"ticker": "A", "exact": [1]}]}', "'exact' must be a list"),
        ("name.json", '{"companies": [{"ticker": "A", "name": 5}]}', "'name' must be a string"),
        ("dup.json", '{"companies": [{"ticker": "A"}, {"ticker": "a"}]}', "twice"),
        (
            "clash.json",
            '{"companies": [{"ticker": "AA", "aliases": ["Foo"]}, {"ticker": "BB", "aliases": ["foo"]}]}',
            "names both",
        ),  # fmt: skip
    ],
)
def test_bad_watchlist_files_give_one_line_errors(tmp_path: Path, name: str, content: str | None, message: str) -> None:
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        Watchlist.from_file(p)
    assert "\n" not in str(err.value) and str(p) in str(err.value)


# Chinese-language text: A-share and Hong Kong codes, Chinese names, mixed scripts.


@pytest.mark.parametrize(
    ("spellings", "key"),
    [
        (["600519", "600519.SH", "SH600519", "sh600519", "600519.SS", "600519.sh", "SH.600519"], "600519.SH"),
        (["000001.SZ", "SZ000001", "sz000001", "000001"], "000001.SZ"),
        (["300750", "300750.SZ", "SZ300750"], "300750.SZ"),
        (["688981", "688981.SH", "SH688981", "0981.HK", "00981.HK", "981.HK", "HK00981"], "688981.SH"),  # STAR + H
        (["00700.HK", "0700.HK", "700.HK", "HK00700", "hk00700", "HK.00700", "00700", "0700.hk"], "0700.HK"),
        (["1211.HK", "01211.HK", "HK01211", "002594.SZ", "002594"], "002594.SZ"),  # dual listing: one key
        (["9988.HK", "09988.HK", "HK09988"], "BABA"),  # an existing key keeps its name
        (["0005.HK", "5.HK", "HK00005"], "HSBC"),
    ],
)
def test_every_code_spelling_is_one_key(spellings: list[str], key: str) -> None:
    assert WL.contains(key)
    for s in spellings:
        assert extract_entities(f"关注 {s} 走势", [], WL) == [key], s
        assert extract_entities("", [s], WL) == [key], s  # given tickers too


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # Codes in brackets and after code words, in running Chinese text.
        ("腾讯(00700)跌5%", ["0700.HK"]),
        ("阿里巴巴-SW（09988）盘中拉升", ["BABA"]),
        ("港股00700今日收涨", ["0700.HK"]),
        ("港股通9988净流入", ["BABA"]),  # four digits after a code word: a listed code
        ("股票代码：600519", ["600519.SH"]),
        ("证券代码 300750", ["300750.SZ"]),
        ("贵州茅台(600519)", ["600519.SH"]),
        ("600519涨停，600519股价创新高", ["600519.SH"]),
        ("浦发银行(600000)与600000.SH", ["600000.SH"]),  # unlisted codes pass through canonical
        ("北交所(830799)", ["830799.BJ"]),
        ("港股代码：01299", ["1299.HK"]),
        ("https://quote.example.com/sh601318.html", ["601318.SH"]),
        # Chinese names anywhere in Chinese text: no word boundaries.
        ("贵州茅台股价大跌", ["600519.SH"]),
        ("茅台", ["600519.SH"]),
        ("今天宁德时代和比亚迪都涨了", ["300750.SZ", "002594.SZ"]),
        ("XD贵州茅台除息", ["600519.SH"]),
        ("比亚迪H股走强", ["002594.SZ"]),
        ("腾讯控股发布财报，腾讯股价", ["0700.HK"]),
        ("中国平安与平安银行", ["601318.SH", "000001.SZ"]),
        ("京东方A涨停，京东跌", ["000725.SZ", "9618.HK"]),  # the longest name wins
        ("中国石油化工股份", ["600028.SH"]),  # Sinopec's full name is not PetroChina's short one
        ("中国移动和中国电信", ["600941.SH", "601728.SH"]),
        ("汇丰控股、友邦保险、港交所", ["HSBC", "1299.HK", "0388.HK"]),
        ("小米集团与小米汽车", ["1810.HK"]),
        # Phrases that hold a name but mean something else.
        ("平安夜快乐", []),
        ("中国银行业协会发布报告", []),
        ("中国银行保险监督管理委员会", []),
        ("早上喝小米粥", []),
        ("伊利诺伊州", []),
        ("加工行业", []),  # "工行业" is an ignore phrase: 加工 + 行业
        # Mixed-language text.
        ("Tesla股价", ["TSLA"]),
        ("$TSLA 与 比亚迪", ["TSLA", "002594.SZ"]),
        ("今天NVDA腾讯都涨了", ["NVDA", "0700.HK"]),
        ("Tencent and Alibaba vs CATL and BYD", ["0700.HK", "BABA", "300750.SZ", "002594.SZ"]),
        (
            "Kweichow Moutai, Meituan, Xiaomi, JD.com, NetEase, Baidu",
            ["600519.SH", "3690.HK", "1810.HK", "9618.HK", "9999.HK", "9888.HK"],
        ),  # fmt: skip
        ("Ping An Bank and Ping An", ["000001.SZ", "601318.SH"]),
        ("ping an endpoint; china mobile apps", []),  # common words: as written only
        ("$BIDU and $NIO", ["9888.HK", "9866.HK"]),  # US listings' tickers map to the company key
    ],
)
def test_chinese_text(text: str, want: list[str]) -> None:
    assert extract_entities(text, [], WL) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # Short names and forum nicknames, each listed in `exact`.
        ("工行、建行、农行、中行、交行齐涨", ["601398.SH", "601939.SH", "601288.SH", "601988.SH", "601328.SH"]),
        ("工行股息率都快6%了", ["601398.SH"]),
        ("工行业绩稳健，中行业务转型，建行行长发言", ["601398.SH", "601988.SH", "601939.SH"]),
        ("中石油、中石化和中海油", ["601857.SH", "600028.SH", "600938.SH"]),
        ("中免跌了，东财涨了", ["601888.SH", "300059.SZ"]),
        ("中芯牛逼，神华分红，紫金跟着金价飞", ["688981.SH", "601088.SH", "601899.SH"]),
        ("撤了恒瑞买迈瑞，歌尔立讯都涨了", ["600276.SH", "300760.SZ", "002475.SZ"]),
        ("宁王终于涨停了", ["300750.SZ"]),
        ("鹅厂天天回购", ["0700.HK"]),
        ("药明康德跌超2%", ["603259.SH"]),
        # 平安 and 友邦 alone are ordinary words: only names no other sense or company has.
        ("平安集团、平安人寿、平安寿险、平安产险", ["601318.SH"]),
        ("友邦集团和友邦人寿", ["1299.HK"]),
        # Real mentions next to an ignore phrase's neighbourhood still count.
        ("快手上涨，在快手上直播", ["1024.HK"]),
        ("北京京东世纪贸易", ["9618.HK"]),
        ("万科A和万科创始人", ["000002.SZ"]),
        ("格力量产新品", ["000651.SZ"]),
        ("百度股价和百度百科", ["9888.HK"]),
        ("中国石油产量", ["601857.SH"]),
        ("隆基股份", ["601012.SH"]),
        ("盘中中免拉升", ["601888.SH"]),
    ],
)
def test_chinese_short_names(text: str, want: list[str]) -> None:
    assert extract_entities(text, [], WL) == want


@pytest.mark.parametrize(
    "text",
    [
        # A bank's short name ends in 行, which also starts 行业, 行情, 行为, 行政, 行动, 行使.
        "化工行业、军工行情、员工行为、基建行业、施工行业",
        "其中行政拘留23人；盘中行情反复；途中行驶；空中行走；集中行权",
        "外交行动，成交行为，公交行业，务农行业",
        # Another word ending in the name's first character, or starting with its last.
        "其中石油、煤炭及其他，盘中石化板块走强",
        "其中免税收入下降，过程中免费，治疗中免疫力下降",
        "股东财富最大化，山东财经大学，广东财政厅",
        "市场中芯片需求旺盛",
        "北京东路、南京东路、北京东城区、东京东部",
        "投资风格力求稳健，价格力度加大，人格力量，性格力",
        "很快手里的筹码就没了，尽快手续，加快手续办理，快手快脚",
        "几千万科技股，百万科研经费，500万科技型企业",
        "兴隆基金，兴隆基地，丰隆基金",
        "辽宁王某，南宁王先生，养鹅厂",
        "美团队协作，健美团体赛",
        # Places, idioms, transliterations and the look-it-up verb.
        "阿里山，阿里郎，阿里路亚",
        "紫金山天文台，紫金港校区，紫金县",
        "平安夜，平平安安，出入平安，报平安，一路平安",
        "友邦惊诧，台湾所谓友邦",
        "经济增长和调结构，董事长和总经理",  # 长和 (CK Hutchison) is left out
        "百度一下，你就知道；我百度了一下",
        "伊利亚，伊利沙伯医院，伊利诺伊州",
        "茅台镇的酱酒",
        "上海康复医院",
        # The industry, not the company.
        "中国电信业，中国电信行业，中国银行业",
        "中国石油需求放缓，中国石油进口量，中国石油消费，中国石油行业，中国石油工业",
        "中国人寿命延长",
        # Other companies whose names start with a watchlist name.
        "中海油服，中海油田服务，中石化油服，中芯集成，紫金银行，紫金保险",
        "格力地产，格力博，隆基机械，药明生物，平安证券，平安好医生",
    ],
)
def test_chinese_words_that_hold_a_name(text: str) -> None:
    assert extract_entities(text, [], WL) == []


@pytest.mark.parametrize(
    ("text", "tickers", "want"),
    [
        # A one- or two-letter word touching a Han character is an abbreviation, not a ticker.
        ("MA均线金叉，5日均线MA", [], []),
        ("同时下调5个BP，BP点", [], []),
        ("GE医疗，MS评级，KO对手，BA波音，CS战队，DB数据库，GS手表", [], []),
        # Cashtags, given tickers, spaces, punctuation and English text still name the company.
        ("$MA均线", [], ["MA"]),
        ("MA均线", ["MA"], ["MA"]),
        ("关注 GE 的走势，摩根士丹利(MS.N)目标价，英国石油（BP）涨4%", [], ["GE", "MS", "BP"]),
        ("MA shares rose; BP and KO fell", [], ["MA", "BP", "KO"]),
        ("AMD芯片，NVDA腾讯", [], ["AMD", "NVDA", "0700.HK"]),  # three letters and more: a ticker
    ],
)
def test_short_latin_tickers_in_chinese_text(text: str, tickers: list[str], want: list[str]) -> None:
    assert extract_entities(text, tickers, WL) == want


def test_year_after_a_code_word_is_not_a_code() -> None:
    assert extract_entities("港股2020至今跌了一半", [], WL) == []
    assert extract_entities("港股2020今日大涨", [], WL) == ["2020.HK"]  # a code word then a listed code
    assert extract_entities("港股2020至少还能涨", [], WL) == ["2020.HK"]  # 至少 is not 至今
    assert extract_entities("港股9988至今，600519以来", [], WL) == ["BABA", "600519.SH"]  # not year-shaped


@pytest.mark.parametrize(
    "text",
    [
        "价格600519元",  # an amount that happens to be a listed code
        "成交300750手，成交额600519万",
        "股价1650.00元，市值2.1万亿",
        "600519.5 and 1,600,519 and 600519%",
        "2024年营收增长，(2024) (2020) (2015)",  # years, including ones that are listed HK codes
        "电话13800138000，座机(0755)8888 1234，(0755) 区号",
        "订单号20240601123，邮编100000，编号123456，(123456) (202406)",
        "约¥600519，$600519，-600519",
        "股价9988点，港股2020年",
        "港股2020至今跌了一半，港股通2015以来，港股2020-2023，港股 2020至2024年",  # years after 港股
        "ORDER 300750X and X300750",
    ],
)
def test_numbers_that_are_not_codes(text: str) -> None:
    assert extract_entities(text, [], WL) == []


def test_new_keys_are_bounded_by_the_watchlist() -> None:
    """Every key a watchlist name or code yields is a watchlist ticker; code aliases never become labels."""
    found: set[str] = set()
    for c in WL.companies:
        for alias in (c.name, *c.aliases, *c.exact):
            got = extract_entities(f"消息：{alias}。", [], WL)
            assert got == [c.ticker], (alias, got)
            found.update(got)
    assert all(WL.contains(k) for k in found)
    for alias_code in ("1211.HK", "9988.HK", "0941.HK", "0005.HK", "00700", "600519", "600519.SS"):
        assert not WL.contains(alias_code)
    assert sum(1 for c in WL.companies if c.ticker.endswith((".SH", ".SZ", ".HK"))) >= 60
    assert not WL.contains("600000.SH")  # a code named in text but not listed gets no label of its own


def test_given_numeric_tickers() -> None:
    # A bare number is a code only when it is a listed code: Tokyo's 7203 and KRX's 005930 pass through.
    assert [WL.canonical(t) for t in ("600519", "00700", "0700", "9988", "7203", "005930", "600000")] == [
        "600519.SH", "0700.HK", "0700.HK", "BABA", "7203", "005930", "600000"]  # fmt: skip


def test_code_and_cjk_rules_in_a_custom_watchlist(tmp_path: Path) -> None:
    wl = Watchlist.from_mapping({"companies": [
        {"ticker": "sh600036", "name": "招商银行", "aliases": ["03968.hk"], "exact": ["招行"], "ignore": ["招行长"]},
        {"ticker": "00700.HK", "name": "腾讯控股"},
    ]})  # fmt: skip
    assert [c.ticker for c in wl.companies] == ["600036.SH", "0700.HK"]  # codes are canonical when loaded
    assert extract_entities("招行 3968.HK 招行长 腾讯控股 HK00700", [], wl) == ["600036.SH", "0700.HK"]
    assert extract_entities("招行长说", [], wl) == []
    with pytest.raises(ValueError, match="exact"):
        Watchlist.from_mapping({"companies": [{"ticker": "601398.SH", "name": "工商银行", "aliases": ["工行"]}]})
    with pytest.raises(ValueError, match="names both"):
        Watchlist.from_mapping({"companies": [{"ticker": "0700.HK"}, {"ticker": "BABA", "aliases": ["700.HK"]}]})
    with pytest.raises(ValueError, match="names both"):
        Watchlist.from_mapping({"companies": [{"ticker": "1810.HK", "name": "小米集团", "ignore": ["小米集团"]}]})
    wl = Watchlist.from_mapping({"companies": [{"ticker": "601398.SH", "name": "工商银行", "exact": ["工行"]}]})
    assert extract_entities("工行", [], wl) == ["601398.SH"]  # trusted when listed in exact


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"60[0-5][0-9]{3}|68[89][0-9]{3}|00[0-3][0-9]{3}|30[01][0-9]{3}", fullmatch=True),
       st.sampled_from(["{n}.SH", "{n}.SZ", "{n}.SS", "SH{n}", "sz{n}", "({n})", "代码{n}", "（{n}）"]))  # fmt: skip
def test_any_a_share_code_has_one_canonical_key(num: str, form: str) -> None:
    exchange = "SH" if num[0] == "6" else "SZ"
    text = form.format(n=num)
    if "." in form or form[:2].lower() in ("sh", "sz"):
        mark = form.replace("{n}", "").strip(".").upper()
        exchange = "SH" if mark in ("SH", "SS") else "SZ"
    got = extract_entities(f"看好{text}走势", [], WL)
    want = f"{num}.{exchange}"
    assert got == [WL.canonical(want)]
    assert all(TICKER_RE.fullmatch(k) and k.isascii() for k in got)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 999_999_999), st.sampled_from(["{n}元", "{n}手", "{n}万", "{n}.5", "¥{n}", "{n}%", "{n}年", "1{n}"])
)
def test_amounts_are_never_codes(n: int, form: str) -> None:
    assert extract_entities("成交" + form.format(n=n) + "。", [], WL) == []
