"""The Cypher lint harness reports what Neo4j itself would reject.

These tests run Neo4j's Cypher parser and semantic analyser (npm package
@neo4j-cypher/language-support, under Node.js); no Neo4j server is involved.
All cases are linted in one node process (one module-scoped call).
"""

from __future__ import annotations

import pytest

from tools.cypher_lint import Diagnostic, lint_statements

UPSERT = """
UNWIND $rows AS row
MERGE (p:Person {id: row.id})
  ON CREATE SET p.created_at = $now
SET p += row.props
WITH p, row
UNWIND row.links AS link
MERGE (t:Touchpoint {kind: link.kind, value: link.value})
MERGE (p)-[r:HAS_TOUCHPOINT]->(t)
  ON CREATE SET r.since = $now
RETURN count(DISTINCT p) AS persons
"""

CASES: dict[str, tuple[str, list[str]]] = {
    "valid_upsert": (UPSERT, ["rows", "now"]),
    "valid_constraint": (
        "CREATE CONSTRAINT person_id IF NOT EXISTS FOR (p:Person) REQUIRE p.id IS UNIQUE",
        [],
    ),
    "valid_backticked_param": ("MATCH (p:Person) WHERE p.id = $`person id` RETURN p", ["person id"]),
    "syntax_error": ("MATCH (n RETURN n", []),
    "syntax_error_line3": ("MATCH (n)\nWHERE n.id = 1\nRETURN n LIMIT", []),
    "undeclared_param": ("MATCH (p:Person) WHERE p.id = $id RETURN p", ["ids"]),
    "undefined_variable": ("MATCH (a) RETURN b", []),
    "undefined_variable_line3": ("MATCH (a:Person)\nWITH a\nRETURN a, c", []),
    "duplicate_column": ("MATCH (a) RETURN a.x AS x, a.y AS x", []),
    "two_statements": ("MATCH (a) RETURN a; MATCH (b) RETURN b", []),
    "console_command": (":param id => 1", []),
    "unused_param": ("MATCH (a) RETURN a", ["never_used"]),
}


@pytest.fixture(scope="module")
def report() -> dict[str, list[Diagnostic]]:
    return lint_statements(CASES)


def errors(report: dict[str, list[Diagnostic]], name: str) -> list[Diagnostic]:
    return [d for d in report[name] if d.is_error]


def test_every_statement_gets_a_result(report):
    assert set(report) == set(CASES)


@pytest.mark.parametrize("name", ["valid_upsert", "valid_constraint", "valid_backticked_param"])
def test_valid_statements_have_no_errors(report, name):
    assert errors(report, name) == []


def test_valid_upsert_has_no_diagnostics_at_all(report):
    # Labels, relationship types and property keys are not declared, so no
    # "not present in the database" warnings either.
    assert report["valid_upsert"] == []


def test_syntax_error_reported_with_position(report):
    (err,) = errors(report, "syntax_error")
    assert "Invalid input 'RETURN'" in err.message
    assert (err.line, err.col) == (1, 10)  # 1-based: the R of RETURN


def test_syntax_error_position_on_later_line(report):
    (err,) = errors(report, "syntax_error_line3")
    assert "expected an expression" in err.message
    assert (err.line, err.col) == (3, 15)  # end of input, after LIMIT


def test_undeclared_parameter_reported(report):
    (err,) = errors(report, "undeclared_param")
    assert err.message == "Parameter $id is not defined."
    assert (err.line, err.col) == (1, 31)
    # The declared-but-unused $ids is only a warning.
    assert any(d.severity == "warning" and "$ids" in d.message for d in report["undeclared_param"])


def test_semantic_error_undefined_variable(report):
    (err,) = errors(report, "undefined_variable")
    assert err.message == "Variable `b` not defined"
    assert (err.line, err.col) == (1, 18)


def test_semantic_error_position_on_later_line(report):
    (err,) = errors(report, "undefined_variable_line3")
    assert err.message == "Variable `c` not defined"
    assert (err.line, err.col) == (3, 11)


def test_other_semantic_error(report):
    (err,) = errors(report, "duplicate_column")
    assert "same name" in err.message


def test_more_than_one_statement_is_an_error(report):
    (err,) = errors(report, "two_statements")
    assert "exactly one Cypher statement" in err.message


def test_console_commands_are_errors(report):
    assert errors(report, "console_command")


def test_unused_parameter_is_only_a_warning(report):
    diags = report["unused_param"]
    assert [d.severity for d in diags] == ["warning"]
    assert "$never_used" in diags[0].message


def test_empty_input_needs_no_node():
    assert lint_statements({}) == {}


def test_params_given_as_a_string_are_rejected():
    with pytest.raises(TypeError):
        lint_statements({"x": ("RETURN $a", "a")})  # type: ignore[dict-item]
