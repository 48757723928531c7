"""Choosing the Neo4j store: the URL names the server, IDGRAPH_NEO4J_* say as whom and where."""

from __future__ import annotations

import pytest

from graph.factory import store_from_url
from graph.neo4j import Neo4jStore
from graph.neo4j_settings import SCHEMES, Neo4jSettings
from graph.sqlite import SQLiteStore
from graph.store import StoreError

PASSWORD = {"IDGRAPH_NEO4J_PASSWORD": "s3cret"}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_driver_scheme_selects_the_neo4j_store(scheme):
    store = store_from_url(f"{scheme}://graph.example:7687", PASSWORD)
    assert isinstance(store, Neo4jStore) and store.kind == "neo4j"
    assert store.settings.url == f"{scheme}://graph.example:7687"


def test_user_and_database_default_to_neo4j():
    settings = Neo4jSettings.from_env("neo4j://localhost:7687", PASSWORD)
    assert (settings.user, settings.password, settings.database) == ("neo4j", "s3cret", "neo4j")


def test_user_and_database_come_from_their_settings():
    env = {**PASSWORD, "IDGRAPH_NEO4J_USER": "idgraph", "IDGRAPH_NEO4J_DATABASE": "identity"}
    settings = Neo4jSettings.from_env("neo4j+s://graph.example", env)
    assert (settings.user, settings.database) == ("idgraph", "identity")


def test_missing_password_is_refused_naming_the_setting():
    with pytest.raises(StoreError, match="IDGRAPH_NEO4J_PASSWORD") as raised:
        store_from_url("neo4j://localhost:7687", {})
    assert "neo4j://localhost:7687" in str(raised.value)


def test_credentials_in_the_url_are_refused():
    with pytest.raises(StoreError, match="not in the store URL"):
        store_from_url("neo4j://neo4j:s3cret@localhost:7687", PASSWORD)


def test_url_without_a_host_is_refused():
    with pytest.raises(StoreError, match="names no host"):
        store_from_url("bolt://", PASSWORD)


def test_password_never_shows_in_the_settings_repr():
    assert "s3cret" not in repr(Neo4jSettings.from_env("neo4j://localhost", PASSWORD))


def test_unknown_scheme_lists_what_is_supported():
    with pytest.raises(StoreError, match=r"sqlite:///path.db or a Neo4j URL \(neo4j://"):
        store_from_url("postgres://localhost/idgraph", {})


def test_sqlite_urls_still_select_the_embedded_store(tmp_path):
    assert isinstance(store_from_url(f"sqlite:///{tmp_path}/g.db", {}), SQLiteStore)
