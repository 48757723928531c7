"""Every Cypher statement the Neo4j store runs passes Neo4j's own parser and semantic analyser.

The analyser is the npm package @neo4j-cypher/language-support run under Node.js
(tools/cypher_lint; it installs itself on first use). No server is involved, so this runs in
every test run: a typo, an undefined variable, a deprecated construct or a parameter the
statement does not declare fails here rather than against a live database.
"""

from __future__ import annotations

import re

import pytest

from graph import cypher
from graph.cypher import STATEMENTS, Statement
from tools.cypher_lint import Diagnostic, lint_statements

_PARAMETER = re.compile(r"\$(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*))")


def parameters_used(text: str) -> set[str]:
    return {quoted or plain for quoted, plain in _PARAMETER.findall(text)}


@pytest.fixture(scope="module")
def diagnostics() -> dict[str, list[Diagnostic]]:
    return lint_statements({name: (s.text, s.params) for name, s in STATEMENTS.items()})


def test_every_statement_in_the_module_is_registered_under_its_own_name():
    defined = [v for v in vars(cypher).values() if isinstance(v, Statement)] + list(cypher.SCHEMA)
    assert {s.name for s in defined} == set(STATEMENTS)
    assert all(STATEMENTS[s.name] is s for s in defined)


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_statement_is_clean_for_neo4j(diagnostics, name):
    statement = STATEMENTS[name]
    found = [str(d) for d in diagnostics[name]]
    assert found == [], f"{name}:\n" + "\n".join(found) + f"\n---\n{statement.text}"


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_statement_declares_exactly_the_parameters_it_uses(name):
    statement = STATEMENTS[name]
    assert sorted(statement.params) == sorted(parameters_used(statement.text))
    assert len(set(statement.params)) == len(statement.params)


def test_parameter_scan_sees_plain_and_quoted_names():
    assert parameters_used("MATCH (p {id: $id}) WHERE p.x IN $`some list` RETURN $id") == {"id", "some list"}
