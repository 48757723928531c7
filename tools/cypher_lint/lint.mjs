#!/usr/bin/env node
// Cypher lint harness for idgraph: checks statements with Neo4j's own Cypher
// parser (the ANTLR grammar) and semantic analyser (Neo4j's Java front end,
// compiled to JavaScript) as shipped in @neo4j-cypher/language-support.
// No Neo4j server is involved.
//
// stdin : JSON array  [{"name": str, "query": str, "params": [str, ...]}, ...]
// stdout: JSON array  [{"name": str, "diagnostics": [{"severity", "message", "line", "col"}]}]
//         in input order. severity is "error" | "warning" | "information" | "hint";
//         line and col are 1-based (as in Neo4j's own "line 1, column 10" messages).
// exit  : 0 whenever the linter ran, whatever it found (the caller judges the
//         diagnostics); 2 for bad input; 3 when the self-check below fails.
//
// How the DbSchema is declared, per statement:
//   * parameters: every name the caller lists is declared (value null; the
//     linter only checks `!== undefined`). Any other `$param` in the query is
//     reported as an Error ("Parameter $x is not defined.").
//   * labels / relationshipTypes / propertyKeys / functions / procedures are
//     deliberately NOT declared. The linter only runs its "X is not present in
//     the database" checks when those keys are present, so leaving them out
//     means those database-dependent warnings never fire: there is no database
//     here, and idgraph's statements create the labels they use. The semantic
//     analyser may still emit genuine Warnings (deprecations etc.); callers
//     should treat only severity "error" as failure.
//     Consequence: a call to a misspelt function (e.g. `toLowr(x)`) is NOT
//     reported, since function existence is only checked against a declared
//     function catalogue.
//   * consoleCommandsEnabled: false, so a browser/cypher-shell console command
//     such as `:param` or `:use` is an Error: drivers cannot run them.
//
// Two checks are added by this harness itself:
//   * a query string holding more than one statement is an Error, since a
//     driver's session.run / tx.run takes exactly one;
//   * a declared parameter that the query never references is a Warning.
//
// The library's wrapper swallows any exception from the semantic analyser and
// then silently reports nothing. So at start-up the harness lints known-bad
// queries and exits 3 if the expected syntax and semantic errors are missing,
// rather than letting every statement pass vacuously (e.g. on a Node.js
// version the analyser does not run on: the package declares node >=24.11.1,
// but it runs on node 20, which this self-check verifies on every run).

import process from 'node:process';

// Keep stdout for our JSON only: route any library logging to stderr.
for (const level of ['log', 'info', 'debug', 'warn']) {
  console[level] = (...args) => console.error(...args);
}

// Dynamic import, so that the console redirection above happens first.
const { lintCypherQuery, parseStatementsStrs, parseParameters } = await import(
  '@neo4j-cypher/language-support'
);

const SEVERITY = { 1: 'error', 2: 'warning', 3: 'information', 4: 'hint' };
const LINT_OPTIONS = { consoleCommandsEnabled: false };

function fail(code, message) {
  process.stderr.write(`cypher_lint: ${message}\n`);
  process.exitCode = code;
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function stripBackticks(name) {
  return name.startsWith('`') && name.endsWith('`') ? name.slice(1, -1) : name;
}

function lintOne(query, params) {
  const parameters = Object.fromEntries(params.map((p) => [p, null]));
  const { diagnostics } = lintCypherQuery(query, { parameters }, LINT_OPTIONS);
  const out = diagnostics.map((d) => ({
    severity: SEVERITY[d.severity] ?? 'error',
    message: d.message,
    line: d.range.start.line + 1,
    col: d.range.start.character + 1,
  }));

  const statements = parseStatementsStrs(query);
  if (statements.length > 1) {
    out.push({
      severity: 'error',
      message: `Expected exactly one Cypher statement, found ${statements.length}: a driver runs one statement per call.`,
      line: 1,
      col: 1,
    });
  }

  const used = new Set(
    parseParameters(query, false).map((p) => stripBackticks(p)),
  );
  for (const p of params) {
    if (!used.has(p)) {
      out.push({
        severity: 'warning',
        message: `Declared parameter $${p} is not used by the query.`,
        line: 1,
        col: 1,
      });
    }
  }
  return out;
}

function selfCheck() {
  const checks = [
    ['MATCH (n RETURN n', /Invalid input/],
    ['MATCH (a) RETURN b', /Variable `b` not defined/],
    ['RETURN $p', /Parameter \$p is not defined/],
  ];
  for (const [query, expected] of checks) {
    const found = lintOne(query, []).some(
      (d) => d.severity === 'error' && expected.test(d.message),
    );
    if (!found) {
      return `self-check failed: linting ${JSON.stringify(query)} did not report ${expected} ` +
        `(node ${process.version}); the Cypher parser or semantic analyser is not working.`;
    }
  }
  return null;
}

function validate(input) {
  if (!Array.isArray(input)) return 'input must be a JSON array';
  for (const [i, item] of input.entries()) {
    if (item === null || typeof item !== 'object') return `item ${i} is not an object`;
    if (typeof item.name !== 'string') return `item ${i}: "name" must be a string`;
    if (typeof item.query !== 'string') return `item ${i} (${item.name}): "query" must be a string`;
    const params = item.params ?? [];
    if (!Array.isArray(params) || !params.every((p) => typeof p === 'string')) {
      return `item ${i} (${item.name}): "params" must be an array of strings`;
    }
  }
  return null;
}

async function main() {
  let input;
  try {
    input = JSON.parse(await readStdin());
  } catch (e) {
    return fail(2, `stdin is not valid JSON: ${e.message}`);
  }
  const problem = validate(input);
  if (problem) return fail(2, problem);

  const broken = selfCheck();
  if (broken) return fail(3, broken);

  const results = input.map(({ name, query, params }) => ({
    name,
    diagnostics: lintOne(query, params ?? []),
  }));
  // No process.exit(): let node flush stdout (it may be a pipe) and exit 0.
  process.stdout.write(JSON.stringify(results) + '\n');
}

await main();
