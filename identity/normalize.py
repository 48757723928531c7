"""Canonical forms for identifiers (exact matching) and weak traits (fuzzy matching).

Two records can only be linked on an identifier if both sides spell it the same
way, so every identifier is reduced to one canonical string before it touches the
graph. Weak traits (names, addresses, companies, dates) are reduced to forms that
make the fuzzy matcher's job cheap: scripts, case, accents and abbreviations are
folded away so that only real differences are left to score.

Everything here runs once per event on the hot path: expensive tables are built
lazily once (``lru_cache``) and per-value work is a few C-level string passes.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from types import MappingProxyType

import jellyfish
import opencc
import phonenumbers
from pydantic import ConfigDict
from pypinyin import Style, lazy_pinyin


class InvalidIdentifier(ValueError):
    """An identifier value that cannot be canonicalised; ``str(exc)`` is the human reason."""


@dataclass(frozen=True)
class NormalizationRules:
    """Per-deployment choices that change what counts as "the same" identifier."""

    #: Read from the rule file's ``normalization`` section (identity/rules.py): no unknown keys.
    __pydantic_config__ = ConfigDict(extra="forbid")

    #: phonenumbers region for numbers written without ``+country``.
    default_region: str = "CN"
    #: Providers that deliver ``local+tag@domain`` to ``local@domain``: the tag is dropped.
    #: Yahoo is absent on purpose: its disposable addresses use ``-``, and ``-`` is also
    #: an ordinary character in Yahoo local parts, so it cannot be stripped safely.
    email_plus_alias_domains: frozenset[str] = frozenset(
        {
            "gmail.com",
            "googlemail.com",
            "outlook.com",
            "hotmail.com",
            "live.com",
            "icloud.com",
            "me.com",
            "protonmail.com",
            "fastmail.com",
        }
    )
    #: Providers that ignore dots in the local part: the dots are dropped.
    email_dot_alias_domains: frozenset[str] = frozenset({"gmail.com", "googlemail.com"})


@dataclass(frozen=True, slots=True)
class NameForm:
    """A person's name reduced for matching; see :func:`normalize_name`."""

    text: str
    latin: str
    tokens: tuple[str, ...]
    phonetic: tuple[str, ...]


# --- strong identifiers ------------------------------------------------------

#: Two mailbox domains that are one mailbox system; rules are checked on the folded domain.
_EMAIL_DOMAIN_ALIASES = MappingProxyType({"googlemail.com": "gmail.com"})
_EMAIL = re.compile(r"[^@\s]+@(?:[^@\s.]+\.)+[^@\s.]+")
_OPENID = re.compile(r"[A-Za-z0-9_-]{6,128}")
_CN_RESIDENT_ID = re.compile(r"[0-9]{17}[0-9X]")
#: ISO 7064 MOD 11-2 as used by GB 11643: weight of position i is 2**(17 - i) mod 11.
_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK = "10X98765432"


def normalize_identifier(type_: str, raw: str, rules: NormalizationRules) -> str:
    """The canonical spelling of one identifier; raise :class:`InvalidIdentifier` if it has none."""
    value = raw.strip()
    if not value:
        raise InvalidIdentifier("empty value")
    match type_:
        case "phone":
            return _phone(value, rules.default_region)
        case "email":
            return _email(value, rules)
        case "wechat_openid":
            # openids are opaque and case-sensitive: any change would make a different id
            if not _OPENID.fullmatch(value):
                raise InvalidIdentifier("not a valid WeChat openid (6-128 of A-Z a-z 0-9 _ -)")
            return value
        case "device_id":
            return value.lower()
        case "crm_id":
            return value.upper()
        case "national_id":
            return _national_id(value)
        case _ if ":" in type_:
            # custom types are opaque to us: fold only compatibility forms (full-width etc.)
            custom = unicodedata.normalize("NFKC", value).strip()
            if not custom:
                raise InvalidIdentifier("empty value")
            return custom
        case _:
            raise InvalidIdentifier(f"unknown identifier type {type_!r}")


@lru_cache(maxsize=65536)
def _phone(value: str, default_region: str) -> str:
    # Cached: parsing with phonenumbers is the costliest normaliser, and one customer's phone
    # comes back with each of their events. A refusal raises, and exceptions are not cached.
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentifier(_phone_reason(_claimed_region(value, default_region))) from None
    if not phonenumbers.is_valid_number(number):
        # a number without +country gets the default region's code, so this names the right one
        code = number.country_code
        if code is None or code == phonenumbers.country_code_for_region(default_region):
            region = default_region
        else:
            region = phonenumbers.region_code_for_country_code(code)
        raise InvalidIdentifier(_phone_reason(region))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _claimed_region(value: str, default_region: str) -> str | None:
    """The region an unparsable number claims: its +country if it has one (None if unknown)."""
    if not value.startswith(("+", "\uff0b")):
        return default_region
    digits = "".join(ch for ch in unicodedata.normalize("NFKC", value) if ch.isascii() and ch.isdigit())
    # country calling codes are prefix-free, so the first known prefix is the code
    for length in (1, 2, 3):
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(digits[:length] or 0))
        if regions:
            return regions[0]
    return None


def _phone_reason(region: str | None) -> str:
    if region is None or region == phonenumbers.UNKNOWN_REGION:
        return "not a valid number: unknown country code"
    return f"not a valid number for region {region}"


def _email(value: str, rules: NormalizationRules) -> str:
    address = unicodedata.normalize("NFKC", value).lower()
    if not _EMAIL.fullmatch(address):
        raise InvalidIdentifier("not a valid email address")
    local, domain = address.split("@")
    domain = _EMAIL_DOMAIN_ALIASES.get(domain, domain)
    if domain in rules.email_plus_alias_domains:
        local = local.split("+", 1)[0]
    if domain in rules.email_dot_alias_domains:
        local = local.replace(".", "")
    if not local:
        # e.g. '+tag@gmail.com': the provider itself would refuse it
        raise InvalidIdentifier("not a valid email address")
    return f"{local}@{domain}"


def _national_id(value: str) -> str:
    # NFKC because Chinese forms are often filled in with full-width digits and 'Ｘ'
    number = re.sub(r"[\s-]", "", unicodedata.normalize("NFKC", value)).upper()
    if not number:
        raise InvalidIdentifier("empty value")
    if _CN_RESIDENT_ID.fullmatch(number) and number[17] != _cn_id_check_char(number[:17]):
        raise InvalidIdentifier("check digit does not match")
    return number


def _cn_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of a mainland China resident ID body."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _CN_ID_WEIGHTS, strict=True))
    return _CN_ID_CHECK[total % 11]


# --- shared text folding -----------------------------------------------------

_HAN_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAN = re.compile(f"[{_HAN_CLASS}]")
_HAN_RUN = re.compile(f"[{_HAN_CLASS}]+")
_CJK_CLASS = _HAN_CLASS + "\u3040-\u30ff"
# Chinese and Japanese are written without spaces, so a space there is noise; a space
# between a CJK character and a digit too ('建国路 88 号' is '建国路88号').
_CJK_GAP = re.compile(f"(?<=[{_CJK_CLASS}]) (?=[{_CJK_CLASS}0-9])|(?<=[0-9]) (?=[{_CJK_CLASS}])")
#: Latin letters that do not decompose into base + mark but are still "accented" to users.
_LATIN_EXTRAS = MappingProxyType(
    {"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)
#: Deleted rather than turned into a space so "O'Brien" stays one word.
_APOSTROPHES = "'\u2018\u2019\u02bc`"


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    # 't2s.json' rather than 't2s': older opencc releases only accept the file name
    return opencc.OpenCC("t2s.json")


@lru_cache(maxsize=1)
def _fold_table() -> dict[int, str | None]:
    """One ``str.translate`` table for every per-character rule, so folding is a single C pass."""
    table: dict[int, str | None] = {}
    for cp in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(cp))
        if category[0] in "PS" or category == "Cc":
            table[cp] = " "
        elif category == "Cf":
            table[cp] = None  # zero-width joiners/spaces would silently split or glue words
    for cp in range(0x0300, 0x0370):
        table[cp] = None  # combining marks NFKC could not compose onto their letter
    for cp in (*range(0x80, 0x250), *range(0x1E00, 0x1F00)):
        base = "".join(c for c in unicodedata.normalize("NFKD", chr(cp)) if not unicodedata.combining(c))
        # only Latin letters: NFKD would also break Hangul into jamo and kana from their dakuten
        if base != chr(cp) and base.isascii() and base.isalpha():
            table[cp] = base
    table.update({ord(k): v for k, v in _LATIN_EXTRAS.items()})
    table.update({ord(k.upper()): v for k, v in _LATIN_EXTRAS.items() if k.upper() != k})
    table.update(dict.fromkeys(map(ord, _APOSTROPHES)))
    return table


def normalize_text(raw: str) -> str:
    """NFKC, casefold, traditional to simplified Chinese, accents folded, punctuation removed."""
    text = " ".join(unicodedata.normalize("NFKC", raw).casefold().translate(_fold_table()).split())
    if text.isascii():  # the common case needs no script handling
        return text
    if _HAN.search(text):
        text = _t2s().convert(text)
    return _CJK_GAP.sub("", text)


# --- names -------------------------------------------------------------------

#: Compound (two-character) surnames, which GB/T 28039 writes as one word: 'Ouyang Xiu'.
_COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 诸葛 上官 东方 皇甫 令狐 慕容 尉迟 公孙 夏侯 长孙 宇文 司徒 轩辕 端木 澹台 呼延 "
    "南宫 万俟 西门 独孤 赫连 钟离 闻人 公冶 太史 申屠 濮阳 单于 拓跋 百里 东郭 司空".split()
)
#: Surnames read differently from the character's most common reading ('单' is dan, but Shan).
_SURNAME_READINGS = MappingProxyType({
    "单": "shan", "曾": "zeng", "解": "xie", "仇": "qiu", "区": "ou", "朴": "piao", "查": "zha",
    "盖": "ge", "覃": "qin", "缪": "miao", "重": "chong", "种": "chong", "秘": "bi", "繁": "po",
    "召": "shao", "员": "yun", "翟": "zhai", "折": "she", "隗": "wei", "薄": "bo", "藏": "zang",
    "阚": "kan", "蕃": "pi", "能": "nai", "佴": "nai", "都": "du",
    "万俟": "moqi", "单于": "chanyu", "尉迟": "yuchi", "澹台": "tantai",
})  # fmt: skip
_LONGEST_CHINESE_NAME = 4


# Names repeat (a common family name on every tenth record), and romanising one is the
# dearest step of preparing an event: each distinct spelling is worked out once.
@lru_cache(maxsize=65536)
def normalize_name(raw: str) -> NameForm | None:
    """A person's name in comparable forms, or None when nothing of it remains.

    Chinese is romanised the way Chinese names are written in Latin script (GB/T 28039:
    surname apart, given name joined), so '张伟明' and 'Weiming Zhang' share their tokens.
    """
    text = normalize_text(raw)
    if not text:
        return None
    latin = " ".join(_HAN_RUN.sub(_romanise_match, text).split()) if _HAN.search(text) else text
    tokens = tuple(sorted(latin.split()))
    return NameForm(text, latin, tokens, tuple(sorted(map(_phonetic_code, tokens))))


def _romanise_match(match: re.Match[str]) -> str:
    return f" {_romanise_han(match.group())} "


@lru_cache(maxsize=65536)
def _romanise_han(run: str) -> str:
    """Pinyin for one run of Han characters, read as a Chinese personal name."""
    if len(run) == 1 or len(run) > _LONGEST_CHINESE_NAME:
        # too long to be a Chinese name (a transliterated one): one token per syllable
        return " ".join(map(_syllable, run))
    split = 2 if len(run) > 2 and run[:2] in _COMPOUND_SURNAMES else 1
    surname = _SURNAME_READINGS.get(run[:split]) or "".join(map(_syllable, run[:split]))
    return f"{surname} {''.join(map(_syllable, run[split:]))}"


@lru_cache(maxsize=16384)
def _syllable(char: str) -> str:
    """Toneless pinyin of one character, its most common reading, with ü folded to u.

    Read per character, not per phrase: the same character must romanise the same way
    in every record, whatever happens to follow it.
    """
    return lazy_pinyin(char, style=Style.NORMAL, v_to_u=True)[0].translate(_fold_table())


@lru_cache(maxsize=65536)
def _phonetic_code(token: str) -> str:
    """A blocking key for one romanised name token, whichever script the name came in.

    Every token gets the same code, pinyin included, so '张伟明' and 'Zhang Weiming' block
    together and so do 'Ann' and 'Anne'. Metaphone rather than NYSIIS: it drops non-initial
    vowels, and most typos in names are vowel slips, swaps and doubled letters. Over all
    single-edit typos of 85 common English names, 70% kept their Metaphone code against
    55% for NYSIIS, with the same number of distinct codes.
    """
    return jellyfish.metaphone(token) or token  # empty for non-Latin scripts


# --- addresses and companies -------------------------------------------------

_ADDRESS_ABBREVIATIONS = MappingProxyType({
    "st": "street", "str": "street", "rd": "road", "ave": "avenue", "av": "avenue",
    "dr": "drive", "cres": "crescent", "pl": "place", "ct": "court", "crt": "court",
    "hwy": "highway", "apt": "apartment", "blvd": "boulevard", "ln": "lane", "sq": "square",
    "tce": "terrace", "terr": "terrace", "pde": "parade", "cl": "close", "cct": "circuit",
    "pkwy": "parkway", "fwy": "freeway", "esp": "esplanade", "gdns": "gardens", "hts": "heights",
    "mt": "mount", "ste": "suite", "fl": "floor", "flr": "floor", "bldg": "building",
    "rm": "room", "nth": "north", "sth": "south",
})  # fmt: skip
#: Latin legal-form words dropped from the end of a company name.
_LEGAL_SUFFIXES = frozenset(
    "ltd limited co company inc incorporated corp corporation llc llp lp plc gmbh ag kg "
    "sa sas sarl srl spa bv nv pty pte bhd sdn kk oy ab".split()
)
#: Chinese legal forms, longest first so '股份有限公司' is not cut at '有限公司'. 集团 (group)
#: is kept: a group and its operating company are different legal entities and customers.
_LEGAL_SUFFIXES_ZH = ("股份有限公司", "有限责任公司", "有限公司", "股份公司", "有限合伙")


def normalize_address(raw: str) -> str | None:
    """An address with case, script, punctuation and street-type abbreviations folded."""
    words = normalize_text(raw).split()
    return " ".join(_ADDRESS_ABBREVIATIONS.get(word, word) for word in words) or None


def normalize_company(raw: str) -> str | None:
    """A company name without its legal form, so 'Acme Ltd' and 'ACME Limited' agree."""
    text = normalize_text(unicodedata.normalize("NFKC", raw).replace("&", " and "))
    words = _strip_legal_suffixes(_join_initials(text.split()))
    return " ".join(words) or None


def _join_initials(words: list[str]) -> list[str]:
    """Glue runs of single letters back together: punctuation removal turns 'S.A.' into 's a'."""
    joined: list[str] = []
    in_run = False  # whether joined[-1] is made only of single letters
    for word in words:
        single = len(word) == 1 and word.isalpha()
        if single and in_run:
            joined[-1] += word
        else:
            joined.append(word)
        in_run = single
    return joined


def _strip_legal_suffixes(words: list[str]) -> list[str]:
    """Drop trailing legal forms ('co ltd', '有限公司'), never the whole name."""
    while words:
        last = words[-1]
        if last in _LEGAL_SUFFIXES and len(words) > 1:
            words = words[:-1]
            if words[-1] == "and" and len(words) > 1:  # the '&' of 'Smith & Co.'
                words = words[:-1]
            continue
        suffix = next((s for s in _LEGAL_SUFFIXES_ZH if last.endswith(s) and last != s), None)
        if suffix is None:
            return words
        words = [*words[:-1], last[: -len(suffix)]]
    return words


# --- dates -------------------------------------------------------------------

# Only year-first shapes: day/month order is unknowable in '11.12.1990', and accepting
# only the dates that happen to be unambiguous would make one source half-valid.
_DATE_SHAPES = (
    re.compile(r"(?P<y>[0-9]{4})(?P<m>[0-9]{2})(?P<d>[0-9]{2})"),
    re.compile(r"(?P<y>[0-9]{4})(?P<sep>[-/.])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})"),
    re.compile(r"(?P<y>[0-9]{4})\s*年\s*(?P<m>[0-9]{1,2})\s*月\s*(?P<d>[0-9]{1,2})\s*日?"),
)


def normalize_date(raw: str) -> str:
    """ISO ``YYYY-MM-DD`` for an unambiguous, real calendar date; ValueError otherwise."""
    text = unicodedata.normalize("NFKC", raw).strip()
    for shape in _DATE_SHAPES:
        if found := shape.fullmatch(text):
            try:
                return date(int(found["y"]), int(found["m"]), int(found["d"])).isoformat()
            except ValueError:
                break
    # The value itself stays out of the message: reasons end up in decision records and logs.
    raise ValueError("not a date: expected year first, e.g. 1985-04-12, 1985/4/12 or 19850412")
