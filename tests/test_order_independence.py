"""Property: clustering by exact strong identifiers does not depend on the order events arrive in."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.sqlite import SQLiteStore
from identity.features import prepare
from service.resolver import Resolver
from tests.conftest import make_event

POOL = {
    "phone": ["13800138000", "13900139000", "13700137000"],
    "email": ["a@example.com", "b@example.com", "c@example.com"],
    "crm_id": ["c-1", "c-2", "c-3"],
}

identifier_sets = st.lists(
    st.dictionaries(st.sampled_from(sorted(POOL)), st.integers(0, 2), min_size=1, max_size=3),
    min_size=1, max_size=12,
)


def expected_clusters(events: list[dict[str, int]]) -> set[frozenset[int]]:
    """Connected components of events that share an identifier, by union-find."""
    parent = list(range(len(events)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[str, int], int] = {}
    for i, ids in enumerate(events):
        for key in ids.items():
            if key in owner:
                parent[find(i)] = find(owner[key])
            owner.setdefault(key, i)
    groups: dict[int, set[int]] = {}
    for i in range(len(events)):
        groups.setdefault(find(i), set()).add(i)
    return {frozenset(g) for g in groups.values()}


async def clusters(events: list[dict[str, int]], order: list[int], rules) -> set[frozenset[int]]:
    async with SQLiteStore(":memory:") as store:
        resolver = Resolver(store, rules)
        for i in order:
            identifiers = {t: POOL[t][v] for t, v in events[i].items()}
            await resolver.resolve([prepare(make_event(identifiers, event_id=f"e{i}"), rules)])
        assignments = dict(await store.assignments())
    groups: dict[str, set[int]] = {}
    for i in range(len(events)):
        groups.setdefault(assignments[f"e{i}"], set()).add(i)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=identifier_sets, data=st.data())
async def test_final_clusters_are_the_identifier_components_in_any_arrival_order(events, data, rules):
    order = data.draw(st.permutations(range(len(events))))
    assert await clusters(events, list(order), rules) == expected_clusters(events)
