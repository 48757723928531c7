"""Synthetic person records with known duplicates, generated at run time (never stored).

Four corruption profiles the Febrl sets lack:

- ``typos``: every duplicate differs from its person in exactly one field: a one-letter typo in
  a given or family name, a wrong birth year, month or day, day and month swapped, a postcode
  or street typo.
- ``mentions``: closer to inventor mentions: name, city and employer only, no birth date;
  many mentions per person (a long tail, up to 60), colleagues share an employer and its city,
  names drawn from a pool of 6,000 full names, so over a third of 3,000 people have a namesake.
  A mention may carry a name typo, or the person's other employer (and its city) after a move.
- ``middle_names``: ``mentions`` where a third of the people have a middle name, which each
  mention gives in full, as an initial or not at all (as patents name one inventor).
- ``namesakes``: sparse records (names, birth date, city only) with names drawn from a small
  pool, so many different people share a full name and a city and differ only in birth date.
  Duplicates carry one-field errors as above (name typo or a wrong date part).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import combinations
from typing import Any

GIVEN = ("anna maria ursula monika petra sabine claudia susanne andrea birgit karin stefanie julia laura lea "
         "sophie marie emma hannah lena katharina christina nicole sandra michael thomas andreas stefan peter "
         "klaus wolfgang jürgen frank markus christian uwe bernd ralf tobias jan lukas leon felix jonas paul "
         "maximilian alexander daniel sebastian florian matthias martin dieter helmut gerhard").split()
FAMILY = ("müller schmidt schneider fischer weber meyer wagner becker schulz hoffmann schäfer koch bauer richter "
          "klein wolf schröder neumann schwarz zimmermann braun krüger hofmann hartmann lange schmitt werner "
          "schmitz krause meier lehmann schmid schulze maier köhler herrmann könig walter mayer huber kaiser "
          "fuchs peters lang scholz möller weiß jung hahn schubert vogel friedrich keller günther frank berger "
          "winkler roth beck lorenz baumann franke albrecht schuster simon ludwig böhm winter kraus martin "
          "schumacher krämer vogt stein jäger otto sommer groß seidel heinrich brandt haas schreiber graf").split()
CITIES = ("berlin hamburg münchen köln frankfurt stuttgart düsseldorf leipzig dortmund essen bremen dresden "
          "hannover nürnberg duisburg bochum wuppertal bielefeld bonn münster mannheim karlsruhe augsburg "
          "wiesbaden mönchengladbach gelsenkirchen aachen braunschweig kiel chemnitz").split()
STREETS = ("hauptstraße schulstraße gartenstraße bahnhofstraße dorfstraße bergstraße birkenweg lindenstraße "
           "kirchstraße waldstraße ringstraße schillerstraße goethestraße mühlenweg wiesenweg").split()
_LETTERS = "abcdefghijklmnopqrstuvwxyzäöü"
COMPANIES = tuple(f"{f} {kind}" for f, kind in zip(FAMILY[::2], ("gmbh", "ag", "kg", "werke", "technik", "systeme") * 9))


@dataclass(frozen=True, slots=True)
class Person:
    given: str
    family: str
    born: date
    city: str
    postcode: str
    street: str
    number: int

    def traits(self, sparse: bool = False) -> dict[str, Any]:
        core = {"given_name": self.given, "family_name": self.family, "birth_date": self.born.isoformat(), "city": self.city}
        return core if sparse else {**core, "postcode": self.postcode, "address": f"{self.street} {self.number}"}


def _typo(rng: random.Random, word: str) -> str:
    i = rng.randrange(len(word))
    kind = rng.choice(("substitute", "delete", "insert", "transpose"))
    if kind == "delete" and len(word) > 3:
        return word[:i] + word[i + 1:]
    if kind == "insert":
        return word[:i] + rng.choice(_LETTERS) + word[i:]
    if kind == "transpose" and i < len(word) - 1 and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + rng.choice([c for c in _LETTERS if c != word[i]]) + word[i + 1:]


def _date_error(rng: random.Random, born: date) -> date:
    kind = rng.choice(("year", "month", "day", "swap"))
    if kind == "swap" and born.day <= 12 and born.day != born.month:
        return born.replace(month=born.day, day=born.month)
    if kind == "year":
        return born.replace(year=born.year + rng.choice((-10, -2, -1, 1, 2, 10)), day=min(born.day, 28))
    if kind == "month":
        return born.replace(month=rng.choice([m for m in range(1, 13) if m != born.month]), day=min(born.day, 28))
    return born.replace(day=rng.choice([d for d in range(1, 29) if d != born.day]))


def _corrupt(rng: random.Random, p: Person, sparse: bool) -> Person:
    """The same person with exactly one (shown) field wrong."""
    field = rng.choice(("given", "family", "born", "born") if sparse else ("given", "family", "born", "born", "postcode", "street"))
    if field == "given":
        return Person(_typo(rng, p.given), p.family, p.born, p.city, p.postcode, p.street, p.number)
    if field == "family":
        return Person(p.given, _typo(rng, p.family), p.born, p.city, p.postcode, p.street, p.number)
    if field == "born":
        return Person(p.given, p.family, _date_error(rng, p.born), p.city, p.postcode, p.street, p.number)
    if field == "postcode":
        digits = list(p.postcode)
        i = rng.randrange(len(digits))
        digits[i] = rng.choice([d for d in "0123456789" if d != digits[i]])
        return Person(p.given, p.family, p.born, p.city, "".join(digits), p.street, p.number)
    return Person(p.given, p.family, p.born, p.city, p.postcode, _typo(rng, p.street), p.number)


def _zipf(rng: random.Random, values: tuple[str, ...] | list[str], k: int) -> str:
    pool = values[:k]
    return rng.choices(pool, weights=[1 / (rank + 1) for rank in range(len(pool))])[0]


def _person(rng: random.Random, names: int) -> Person:
    city_index = rng.randrange(len(CITIES))
    return Person(
        given=_zipf(rng, GIVEN, names), family=_zipf(rng, FAMILY, names),
        born=date(1940, 1, 1) + timedelta(days=rng.randrange(65 * 365)),
        city=CITIES[city_index], postcode=f"{10000 + city_index * 2000 + rng.randrange(2000):05d}",
        street=rng.choice(STREETS), number=rng.randrange(1, 200),
    )


def _employer(rng: random.Random) -> tuple[str, str]:
    """A company (few large ones employ most people) and the city it sits in."""
    index = rng.choices(range(len(COMPANIES)), weights=[1 / (rank + 1) for rank in range(len(COMPANIES))])[0]
    return COMPANIES[index], CITIES[index % len(CITIES)]


def _mentions(rng: random.Random, index: int, middles: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """One inventor's mentions: most name them exactly at their employer; some carry a typo,
    some the employer they moved to. With ``middles``, a third of the people have a middle
    name, drawn from its own generator so that the people are those of ``mentions``."""
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    own = random.Random(f"middle-{index}")
    middle = own.choice(GIVEN) if middles and own.random() < 1 / 3 else None
    jobs = [_employer(rng), _employer(rng)]
    count = min(60, int(rng.paretovariate(1.3)))
    mentions = []
    for copy in range(count):
        name = [given, family]
        if copy and rng.random() < 0.2:
            part = rng.randrange(2)
            name[part] = _typo(rng, name[part])
        company, city = jobs[1] if copy and rng.random() < 0.15 else jobs[0]
        if middle is not None:
            name[0] = own.choice((f"{name[0]} {middle}", f"{name[0]} {middle[0]}.", name[0]))
        mentions.append((f"mentions-{index}-{copy}", {"given_name": name[0], "family_name": name[1],
                                                        "city": city, "company": company}))
    return mentions


def generate(profile: str, people: int = 3000, seed: int = 11) -> tuple[list[tuple[str, dict[str, Any]]], set[frozenset[str]]]:
    """Records (id, traits) in arrival order and the true duplicate pairs."""
    rng = random.Random(f"{profile}-{seed}")
    if profile in ("mentions", "middle_names"):
        rng = random.Random(f"mentions-{seed}")  # the same people and order in both
        return _shuffled(rng, [_mentions(rng, index, profile == "middle_names") for index in range(people)])
    sparse = profile == "namesakes"
    names = 12 if sparse else len(FAMILY)
    records: list[tuple[str, dict[str, Any]]] = []
    links: set[frozenset[str]] = set()
    for index in range(people):
        person = _person(rng, names)
        ids = [f"{profile}-{index}-0"]
        records.append((ids[0], person.traits(sparse)))
        for copy in range(1, 1 + rng.choices((0, 1, 2), weights=(4, 4, 2))[0]):
            ids.append(f"{profile}-{index}-{copy}")
            records.append((ids[-1], _corrupt(rng, person, sparse).traits(sparse)))
        links.update(frozenset(p) for p in combinations(ids, 2))
    rng.shuffle(records)
    return records, links


def _shuffled(rng: random.Random, groups: list[list[tuple[str, dict[str, Any]]]]) -> tuple[list[tuple[str, dict[str, Any]]], set[frozenset[str]]]:
    records = [record for group in groups for record in group]
    links = {frozenset((a[0], b[0])) for group in groups for a, b in combinations(group, 2)}
    rng.shuffle(records)
    return records, links
