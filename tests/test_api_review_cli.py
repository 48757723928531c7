"""``idgraph review ...``: the review queue from a terminal."""

from typer.testing import CliRunner
import typer

from cli.api import review_app
from tests.api_support import resolve
from tests.conftest import make_event


def test_operator_lists_and_rejects_a_review_from_the_command_line(tmp_path, monkeypatch):
    path = tmp_path / "graph.db"
    resolve(path, make_event(traits={"name": "Zhang Wei", "city": "Shanghai", "birth_date": "1985-04-12"}),
            make_event(traits={"name": "Zhang Wei", "city": "Shanghai"}))
    monkeypatch.setenv("IDGRAPH_STORE", f"sqlite:///{path}")
    app = typer.Typer()
    app.add_typer(review_app, name="review")
    runner = CliRunner()
    listed = runner.invoke(app, ["review", "list"])
    review_id = listed.output.split()[0]
    rejected = runner.invoke(app, ["review", "reject", review_id, "--reason", "different", "--actor", "alice"])
    assert rejected.exit_code == 0, rejected.output
    assert runner.invoke(app, ["review", "list"]).output.strip() == "no open reviews"


def test_a_store_that_cannot_be_opened_is_a_one_line_error_naming_it(tmp_path, monkeypatch):
    broken = tmp_path / "graph.db"
    broken.write_text("not a database")
    monkeypatch.setenv("IDGRAPH_STORE", f"sqlite:///{broken}")
    app = typer.Typer()
    app.add_typer(review_app, name="review")
    listed = CliRunner().invoke(app, ["review", "list"])
    assert listed.exit_code == 2, listed.output
    assert f"cannot open the SQLite store at {broken}" in listed.output
