"""Lint Cypher statements with Neo4j's own parser and semantic analyser.

No Neo4j server is needed: ``lint.mjs`` (beside this file) runs the
``@neo4j-cypher/language-support`` npm package under Node.js, which bundles
Neo4j's Cypher grammar and its semantic analysis (the Java front end compiled
to JavaScript). This is test/CI tooling; it imports nothing heavy (no neo4j).

Usage::

    from tools.cypher_lint import lint_statements

    report = lint_statements({"upsert": ("UNWIND $rows AS row MERGE ...", ["rows"])})
    errors = {name: [d for d in ds if d.is_error] for name, ds in report.items()}

On first use ``npm ci`` installs the pinned packages (``package-lock.json``)
into ``node_modules`` here; it needs ``node`` and ``npm`` on PATH and the npm
registry reachable. Treat only ``severity == "error"`` as failure: warnings are
informational (see the comment at the top of ``lint.mjs``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CypherLintError", "Diagnostic", "lint_statements", "ensure_installed"]

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "lint.mjs"
# Present once `npm ci` has succeeded (npm creates node_modules early, so a bare
# node_modules directory may be a half-finished install); its version is
# compared with package-lock.json's.
_INSTALLED_MARKER = HERE / "node_modules" / "@neo4j-cypher" / "language-support" / "package.json"

NPM_CI_TIMEOUT_S = 600
LINT_TIMEOUT_S = 300


class CypherLintError(RuntimeError):
    """The linter could not run (node/npm missing, install failed, script crashed)."""


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" | "warning" | "information" | "hint"
    message: str
    line: int  # 1-based, within the statement
    col: int  # 1-based

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return f"{self.line}:{self.col}: {self.severity}: {self.message}"


def _which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise CypherLintError(
            f"`{tool}` was not found on PATH. The Cypher lint harness runs Neo4j's "
            "Cypher parser under Node.js: install Node.js (>= 20) with npm, "
            "e.g. `apt-get install nodejs npm`."
        )
    return path


def _installed() -> bool:
    """True when node_modules holds the language-support version the lockfile pins."""
    try:
        installed = json.loads(_INSTALLED_MARKER.read_text())["version"]
        locked = json.loads((HERE / "package-lock.json").read_text())["packages"][
            "node_modules/@neo4j-cypher/language-support"
        ]["version"]
    except (OSError, ValueError, KeyError):
        return False
    return installed == locked


def ensure_installed() -> None:
    """Run ``npm ci`` in this folder unless its pinned node packages are installed.

    Also reinstalls when node_modules is half-installed or holds another version
    than package-lock.json pins (``npm ci`` replaces node_modules whole).
    """
    if _installed():
        return
    npm = _which("npm")
    _which("node")
    # Serialise concurrent first uses (e.g. pytest-xdist workers): lock a file
    # outside the repository so no stray file appears in the work tree.
    digest = hashlib.sha256(str(HERE).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"idgraph-cypher-lint-{digest}.lock"
    with open(lock_path, "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        if _installed():
            return
        # The package declares engines node >=24.11.1 but works on node 20
        # (lint.mjs verifies that on every run), so don't let a user's
        # engine-strict setting turn the mismatch warning into a failure.
        cmd = [npm, "ci", "--no-audit", "--no-fund", "--engine-strict=false"]
        try:
            proc = subprocess.run(
                cmd,
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_S,
                env={**os.environ, "npm_config_update_notifier": "false"},
            )
        except subprocess.TimeoutExpired as e:
            raise CypherLintError(f"`npm ci` in {HERE} timed out after {NPM_CI_TIMEOUT_S}s") from e
        if proc.returncode != 0 or not _installed():
            raise CypherLintError(
                f"`{' '.join(cmd)}` in {HERE} failed (exit {proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )


def lint_statements(
    statements: Mapping[str, tuple[str, Sequence[str]]],
) -> dict[str, list[Diagnostic]]:
    """Lint each named ``(query, parameter_names)`` pair; one node process for all.

    Every name in ``parameter_names`` is declared to the linter, so ``$name``
    is accepted; any other ``$param`` in the query is an error. Returns the
    diagnostics per statement name (an empty list when the statement is clean).
    """
    payload = []
    for name, (query, params) in statements.items():
        if isinstance(params, (str, bytes)):
            raise TypeError(f"{name}: parameter names must be a sequence of str, not a string")
        payload.append({"name": str(name), "query": query, "params": [str(p) for p in params]})
    if not payload:
        return {}

    ensure_installed()
    node = _which("node")
    try:
        proc = subprocess.run(
            [node, str(SCRIPT)],
            cwd=HERE,
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=LINT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        raise CypherLintError(f"lint.mjs timed out after {LINT_TIMEOUT_S}s") from e
    if proc.returncode != 0:
        raise CypherLintError(f"lint.mjs failed (exit {proc.returncode}):\n{proc.stderr}")
    try:
        results = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise CypherLintError(
            f"lint.mjs printed no valid JSON: {e}\nstdout:\n{proc.stdout[:2000]}\nstderr:\n{proc.stderr}"
        ) from e

    return {
        item["name"]: [
            Diagnostic(
                severity=d["severity"], message=d["message"], line=int(d["line"]), col=int(d["col"])
            )
            for d in item["diagnostics"]
        ]
        for item in results
    }
