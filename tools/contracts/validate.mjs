// Validates the generated contracts with the official tooling: schemas/asyncapi.json with
// @asyncapi/parser (its AsyncAPI 3 schema and its recommended Spectral ruleset), and every JSON
// Schema under schemas/ with Ajv's draft 2020-12 meta-schema in strict mode. Prints every
// diagnostic; exits 1 when any has error severity.
import { readFile, readdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Parser, DiagnosticSeverity } from "@asyncapi/parser";
import Ajv2020 from "ajv/dist/2020.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const schemasDir = path.join(root, "schemas");
const severityNames = {
  [DiagnosticSeverity.Error]: "error",
  [DiagnosticSeverity.Warning]: "warning",
  [DiagnosticSeverity.Information]: "info",
  [DiagnosticSeverity.Hint]: "hint",
};

let errors = 0;

async function validateAsyncApi() {
  const file = path.join(schemasDir, "asyncapi.json");
  const text = await readFile(file, "utf8");
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(text, { source: file });
  for (const diagnostic of diagnostics) {
    const severity = severityNames[diagnostic.severity] ?? String(diagnostic.severity);
    const where = diagnostic.path.length > 0 ? `#/${diagnostic.path.join("/")}` : "#";
    const line = diagnostic.range ? `:${diagnostic.range.start.line + 1}` : "";
    console.log(`schemas/asyncapi.json${line}: ${severity} [${diagnostic.code}] ${where}: ${diagnostic.message}`);
    if (diagnostic.severity === DiagnosticSeverity.Error) errors += 1;
  }
  if (document === undefined && errors === 0) {
    console.log("schemas/asyncapi.json: error: the parser returned no document");
    errors += 1;
  }
  if (document !== undefined) {
    console.log(
      `schemas/asyncapi.json: AsyncAPI ${document.version()}, ${document.channels().length} channels, ` +
        `${document.operations().length} operations, ${document.messages().length} messages`,
    );
  }
}

// The JSON Schemas: the envelope and the events, generated and released. Other documents in
// schemas/ (AsyncAPI, OpenAPI) are not JSON Schemas.
async function jsonSchemaFiles() {
  const files = [path.join(schemasDir, "envelope.json")];
  for (const folder of ["events", "released"]) {
    const entries = await readdir(path.join(schemasDir, folder), { withFileTypes: true, recursive: true });
    files.push(
      ...entries
        .filter((entry) => entry.isFile() && entry.name.endsWith(".json"))
        .map((entry) => path.join(entry.parentPath ?? entry.path, entry.name)),
    );
  }
  return files.sort();
}

async function validateJsonSchemas() {
  // Formats are annotations here (schemars writes `uint32`, `int64`, ...): checking the
  // schemas themselves, not data.
  const ajv = new Ajv2020({ strict: true, validateFormats: false, allErrors: true });
  const files = await jsonSchemaFiles();
  for (const file of files) {
    const shown = path.relative(root, file);
    try {
      ajv.compile(JSON.parse(await readFile(file, "utf8")));
    } catch (error) {
      console.log(`${shown}: error: ${error.message}`);
      errors += 1;
    }
  }
  console.log(`schemas/{envelope,events,released}: ${files.length} JSON Schemas compiled (draft 2020-12, strict)`);
}

await validateAsyncApi();
await validateJsonSchemas();
if (errors > 0) {
  console.log(`${errors} error(s)`);
  process.exit(1);
}
