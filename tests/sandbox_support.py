"""What the sandbox tests share: a small live history, a stricter candidate rule set, a labelled
CSV with its mapping, and the ``idgraph`` command run as a user runs it."""

from __future__ import annotations

from pathlib import Path

import orjson
from typer.testing import CliRunner, Result

from cli.main import app
from identity.rules import load_rules



def strict_rules(directory: Path) -> Path:
    """The bundled rules with thresholds no namesake pair reaches: the candidate a sandbox tries."""
    path = directory / "strict.yaml"
    strict = load_rules().model_copy(update=dict(thresholds={"link": 0.999999, "review": 0.99999}))
    path.write_text(strict.to_yaml())
    return path


def event(event_id: str, email: str, name: str, birth_date: str, city: str, minute: int) -> dict[str, object]:
    return {"event_id": event_id, "scenario": "sales.crm", "type": "lead", "occurred_at": f"2026-01-01T00:{minute:02d}:00Z",
            "identifiers": {"email": email}, "traits": {"name": name, "birth_date": birth_date, "city": city}}


# The live rules link a1 and a2 (same name, birth date and city); the strict candidate keeps them apart.
HISTORY = [event("a1", "a@example.com", "Zhang Wei", "1985-04-12", "Shanghai", 0),
           event("a2", "b@example.com", "Zhang Wei", "1985-04-12", "Shanghai", 1),
           event("a3", "c@example.com", "Li Na", "1990-01-01", "Beijing", 2)]


class Idgraph:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.live = tmp / "live.db"
        self.env = {"IDGRAPH_DATA_DIR": str(tmp / "data"), "IDGRAPH_STORE": f"sqlite:///{self.live}"}

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=self.env)

    def sandbox(self, name: str) -> Path:
        return self.tmp / "data" / "sandboxes" / name

    def strict_rules(self) -> Path:
        return strict_rules(self.tmp)


CSV = """id,when,kind,full_name,mail,entity,note
u1,2026-02-01T00:00:00Z,signup,Wang Fang,wf@example.com,e7,first
u2,not a time,signup,Wang Fang,wf@example.com,e7,second
u3,2026-02-01T00:02:00Z,signup,Wang Fang,wf@example.com,e7,third,extra
u4,2026-02-01T00:03:00Z,signup,Wang Fang,wf@example.com,e7,fourth
"""
MAP = ["--map", "event_id=id", "--map", "occurred_at=when", "--map", "type=kind", "--map", "traits.name=full_name",
       "--map", "identifiers.email=mail", "--label", "entity"]


def with_live_history(tmp_path: Path) -> Idgraph:
    """``idgraph`` on a live store holding HISTORY, resolved by ``idgraph resolve``."""
    cli = Idgraph(tmp_path)
    history = tmp_path / "history.jsonl"
    history.write_bytes(b"\n".join(orjson.dumps(e) for e in HISTORY) + b"\n")
    result = cli("resolve", "-i", str(history), "-o", str(tmp_path / "out.csv"), "--no-learn")
    assert result.exit_code == 0, result.output
    return cli
