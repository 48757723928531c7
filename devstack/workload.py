"""A realistic synthetic workload: customers seen through several scenarios, imperfectly.

Each customer has a Chinese or English name, a phone, an email, a WeChat id, a city and a
birth date; scenarios see only some of them, sometimes in traditional characters, in
pinyin or with a typo, and some touchpoints carry two identifiers at once, which forces
profiles that started apart to merge. Seeded, so every run is the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import phonenumbers

_SURNAMES = [("张", "張", "Zhang"), ("王", "王", "Wang"), ("李", "李", "Li"), ("刘", "劉", "Liu"), ("陈", "陳", "Chen"),
             ("杨", "楊", "Yang"), ("黄", "黃", "Huang"), ("赵", "趙", "Zhao"), ("吴", "吳", "Wu"), ("周", "周", "Zhou")]
_GIVEN = [("伟", "偉", "Wei"), ("芳", "芳", "Fang"), ("娜", "娜", "Na"), ("敏", "敏", "Min"), ("静", "靜", "Jing"),
          ("丽", "麗", "Li"), ("强", "強", "Qiang"), ("磊", "磊", "Lei"), ("军", "軍", "Jun"), ("洋", "洋", "Yang"),
          ("勇", "勇", "Yong"), ("艳", "艷", "Yan"), ("杰", "傑", "Jie"), ("涛", "濤", "Tao"), ("明", "明", "Ming")]
_FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
          "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen"]
_LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
         "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Taylor", "Moore", "Jackson", "Martin", "Lee"]
_CITIES_CN = ["上海", "北京", "深圳", "广州", "杭州", "成都"]
_CITIES_EN = ["London", "Manchester", "Madrid", "Berlin", "Paris", "Dublin"]
SCENARIOS = {
    "battery-recycling.site-intake": ("recycling_requested", ("phone",)),
    "sales.crm": ("lead_created", ("email", "crm_id")),
    "service.hotline": ("call_logged", ("phone", "email")),
    "marketing.wechat": ("followed_account", ("wechat_openid",)),
    "store-inspection.app": ("visit_recorded", ("device_id",)),
}


@dataclass(frozen=True, slots=True)
class Customer:
    key: int
    names: tuple[str, ...]  # spellings a scenario may use: simplified, traditional, pinyin, ...
    phone: str
    email: str
    wechat_openid: str
    crm_id: str
    device_id: str
    city: str
    birth_date: str


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 4 or not text.isascii():
        return text
    i = rng.randrange(1, len(text) - 1)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def _uk_mobile(rng: random.Random) -> str:
    """A number in an allocated UK mobile range: not every 07xxx block is, and invalid ones are refused."""
    while True:
        number = f"+4474{rng.randrange(10**8):08d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(number)):
            return number


def make_customer(rng: random.Random, key: int) -> Customer:
    chinese = rng.random() < 0.6
    if chinese:
        (s, st, sp), (g, gt, gp) = rng.choice(_SURNAMES), rng.choice(_GIVEN)
        names = (s + g, st + gt, f"{sp} {gp}")
        city, phone = rng.choice(_CITIES_CN), f"13{rng.randrange(100000000, 999999999)}"
    else:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        names = (f"{first} {last}", f"{first} {last}", _typo(rng, f"{first} {last}"))
        city, phone = rng.choice(_CITIES_EN), _uk_mobile(rng)
    birth = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 20000))
    return Customer(
        key=key, names=names, phone=phone, email=f"customer{key}.{rng.randrange(1000, 9999)}@example.com",
        wechat_openid=f"oWx{key:06d}{rng.randrange(10**9):09d}abcdefghij"[:28], crm_id=f"C-{key:06d}",
        device_id=f"{rng.randrange(16**12):012x}", city=city, birth_date=birth.strftime("%Y-%m-%d"),
    )


def _touchpoint(rng: random.Random, customer: Customer, index: int, start: datetime) -> dict[str, Any]:
    scenario = rng.choice(sorted(SCENARIOS))
    event_type, id_types = SCENARIOS[scenario]
    identifiers = {t: getattr(customer, t) for t in id_types}
    if rng.random() < 0.15:  # the customer hands over a second identifier: bridges profiles
        extra = rng.choice(["phone", "email", "wechat_openid"])
        identifiers[extra] = getattr(customer, extra)
    traits: dict[str, Any] = {"name": rng.choice(customer.names)}
    if rng.random() < 0.7:
        traits["city"] = customer.city
    if rng.random() < 0.5:
        traits["birth_date"] = customer.birth_date
    return {
        "event_id": f"wl-{index:07d}",
        "scenario": scenario,
        "type": event_type,
        "occurred_at": (start + timedelta(seconds=index)).isoformat(),
        "identifiers": identifiers,
        "traits": traits,
        "payload": {"customer_ref": customer.key},
    }


def synthetic_events(customers: int, events: int, seed: int = 7) -> Iterator[tuple[int, dict[str, Any]]]:
    """(true customer key, event) pairs; every customer appears at least once when events >= customers."""
    rng = random.Random(seed)
    population = [make_customer(rng, key) for key in range(customers)]
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for index in range(events):
        customer = population[index] if index < customers else rng.choice(population)
        yield customer.key, _touchpoint(rng, customer, index, start)
