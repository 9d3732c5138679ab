#!/usr/bin/env node
// client.js runs the real snowflake-sdk driver as a scripted test client.
//
// The Go side (internal/testenv/nodeclient.go) starts it and writes steps to
// its stdin, one JSON object per line; the client runs them strictly in order
// and writes one JSON result line per step to stdout. The Go side may write
// all steps at once (a batch) or one at a time, waiting for each result (an
// interactive session, e.g. to force a session expiry between two
// statements). End of stdin ends the run: the client exits after the last
// step, without logging out unless a "destroy" step asked for it.
//
// By hand: node client.js scenario.json, where the file holds
// {"steps":[...]} or a bare array of steps.
//
// Steps (field "op"):
//   configure  {options}: snowflake.configure() options, merged over the
//              harness defaults (logLevel WARN, OCSP fail-open).
//   connect    {connection}: createConnection() options, passed through
//              verbatim (account, accessUrl or host/port/protocol,
//              authenticator, username, password, token, role, ...).
//   execute    {sqlText, binds, fetchAsString, buffered, output, keep,
//              requestId, parameters, asyncExec, describeOnly, timeoutMs}:
//              one statement. Rows are read with streamResult + streamRows()
//              unless buffered:true, which takes the driver's own path of
//              handing every row to the complete callback. output "rows"
//              (default) returns every row; "digest" returns the row count,
//              a SHA-256 over every value (see RowDigest) and the first and
//              last `keep` rows, so large results need not cross the pipe.
//              A multi-statement (parameters MULTI_STATEMENT_COUNT) answers
//              with the first child's fields and every child in "results".
//              cancelAfterMs calls statement.cancel() that long after the
//              start; its outcome is in "cancel".
//   fetchResult {queryId, fetchAsString, buffered, output, keep}: the result
//              of an earlier (e.g. asyncExec) statement through
//              connection.getResultsFromQueryId.
//   sleep      {ms}
//   destroy    {}: log out (connection.destroy).
//
// Every result line carries {"step","op","ok","ms"} and either the op's
// fields or "error":{name,code,sqlState,message,data,status,isFatal,cause}.
// Driver log output goes to stderr, never stdout.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const readline = require('readline');

// stdout carries only result lines: anything the driver or its dependencies
// print goes to stderr.
const writeOut = process.stdout.write.bind(process.stdout);
for (const m of ['log', 'info', 'warn', 'error', 'debug', 'trace']) {
  console[m] = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
}

const snowflake = require('snowflake-sdk');

const DEFAULT_STEP_TIMEOUT_MS = 120000;

// stderrLogger is the driver's custom logger: level-filtered by the driver,
// written to stderr so the Go side can show it when a test fails.
const stderrLogger = {};
for (const level of ['error', 'warn', 'info', 'debug', 'trace']) {
  stderrLogger[level] = (msg) => process.stderr.write(`snowflake-sdk ${level}: ${msg}\n`);
}

const harnessDefaults = {
  // SNOWGATE_NODE_LOG (e.g. DEBUG, TRACE) raises the driver's log level for
  // a debugging run; testenv.NodeClient passes it through.
  logLevel: process.env.SNOWGATE_NODE_LOG || 'WARN',
  customLogger: stderrLogger,
  // A deployed appliance cannot give agents an OCSP responder for every
  // private certificate; fail-open is the driver default. Trust itself comes
  // only from NODE_EXTRA_CA_CERTS: insecureConnect is never used.
  ocspFailOpen: true,
};

let connection = null;
let configured = false;

function configure(options) {
  const merged = Object.assign({}, harnessDefaults, options || {});
  snowflake.configure(merged);
  configured = true;
}

// errorJSON turns a driver error (or anything thrown) into plain JSON.
function errorJSON(err) {
  if (err === null || err === undefined) {
    return { name: 'Error', code: 'HARNESS_UNKNOWN', message: 'unknown error' };
  }
  const out = {
    name: err.name || 'Error',
    code: err.code === undefined || err.code === null ? '' : String(err.code),
    message: err.message === undefined ? String(err) : String(err.message),
  };
  if (err.sqlState) out.sqlState = String(err.sqlState);
  if (err.data !== undefined && err.data !== null) {
    try {
      out.data = JSON.parse(safeStringify(err.data));
    } catch (e) {
      out.data = String(err.data);
    }
  }
  const status = err.response && (err.response.status || err.response.statusCode);
  if (status) out.status = status;
  if (err.isFatal !== undefined) out.isFatal = !!err.isFatal;
  if (err.cause) out.cause = String(err.cause.message || err.cause);
  return out;
}

// jsonValue makes a driver cell value JSON-safe without losing information:
// BigInt and Buffer become strings (decimal, hex), dates their ISO/driver text.
function jsonValue(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return v.toString();
  if (Buffer.isBuffer(v)) return v.toString('hex');
  if (typeof v === 'number') return Number.isFinite(v) ? v : String(v);
  if (typeof v === 'object') {
    if (typeof v.toJSON === 'function') return v.toJSON();
    try {
      return JSON.parse(safeStringify(v));
    } catch (e) {
      return String(v);
    }
  }
  return v;
}

function safeStringify(v) {
  return JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? x.toString() : x));
}

// cellText is the text a cell contributes to the digest: strings as they are,
// everything else as its JSON value's text.
function cellText(v) {
  const j = jsonValue(v);
  if (j === null) return null;
  return typeof j === 'string' ? j : JSON.stringify(j);
}

// RowDigest hashes rows in a framing that cannot be ambiguous: per cell "-"
// for NULL or "<byte length>:<text>", cells separated by "," and rows ended
// by ";" (testenv.NodeRowsDigest computes the same in Go).
class RowDigest {
  constructor(keep) {
    this.hash = crypto.createHash('sha256');
    this.count = 0;
    this.keep = keep;
    this.first = [];
    this.last = [];
  }
  add(row) {
    const parts = [];
    for (const v of row) {
      const t = cellText(v);
      parts.push(t === null ? '-' : `${Buffer.byteLength(t, 'utf8')}:${t}`);
    }
    this.hash.update(parts.join(',') + ';', 'utf8');
    this.count++;
    if (this.keep > 0) {
      const jr = row.map(jsonValue);
      if (this.first.length < this.keep) this.first.push(jr);
      this.last.push(jr);
      if (this.last.length > this.keep) this.last.shift();
    }
  }
  result() {
    return { count: this.count, sha256: this.hash.digest('hex'), first: this.first, last: this.last };
  }
}

// attempt calls a statement accessor; some throw in some states (e.g. the
// columns of an asyncExec statement, whose result is only a query id).
function attempt(fn) {
  try {
    return fn();
  } catch (e) {
    return undefined;
  }
}

function columnsJSON(statement) {
  const cols = attempt(() => statement.getColumns());
  if (!Array.isArray(cols)) return undefined;
  return cols.map((c) => ({
    name: c.getName(),
    type: c.getType(),
    nullable: c.isNullable(),
    scale: c.getScale(),
    precision: c.getPrecision(),
  }));
}

function statementJSON(statement) {
  const out = {};
  if (!statement) return out;
  const qid = attempt(() => statement.getQueryId());
  if (qid) out.queryId = qid;
  const rid = attempt(() => statement.getRequestId());
  if (rid) out.requestId = rid;
  const cols = columnsJSON(statement);
  if (cols) out.columns = cols;
  const n = attempt(() => statement.getNumRows());
  if (n !== undefined && n !== null) out.numRows = n;
  const u = attempt(() => statement.getNumUpdatedRows());
  if (u !== undefined && u !== null) out.numUpdatedRows = u;
  return out;
}

// collectRows reads a row stream into either a row list or a digest.
function collectRows(stream, step) {
  return new Promise((resolve, reject) => {
    const digest = step.output === 'digest' ? new RowDigest(step.keep || 0) : null;
    const rows = [];
    stream.on('data', (row) => {
      if (digest) digest.add(row);
      else rows.push(row.map(jsonValue));
    });
    stream.on('end', () => resolve(digest ? { digest: digest.result() } : { rows }));
    stream.on('error', (err) => reject(err));
  });
}

// resultOf turns one completed statement into its part of a result line.
// Rows are read with streamRows() (the driver downloads chunks as the stream
// is consumed) unless the driver already handed them over (buffered).
function resultOf(err, statement, rows, step) {
  const base = statementJSON(statement);
  if (err) return Promise.resolve(Object.assign(base, { ok: false, error: errorJSON(err) }));
  if (step.asyncExec) return Promise.resolve(Object.assign(base, { ok: true }));
  if (step.buffered) {
    const out = Object.assign(base, { ok: true });
    if (Array.isArray(rows)) {
      if (step.output === 'digest') {
        const d = new RowDigest(step.keep || 0);
        for (const r of rows) d.add(r);
        out.digest = d.result();
      } else {
        out.rows = rows.map((r) => r.map(jsonValue));
      }
    }
    return Promise.resolve(out);
  }
  const rowOptions = {};
  if (step.fetchAsString) rowOptions.fetchAsString = step.fetchAsString;
  let stream;
  try {
    stream = statement.streamRows(rowOptions);
  } catch (e) {
    return Promise.resolve(Object.assign(base, { ok: false, error: errorJSON(e) }));
  }
  return collectRows(stream, step).then(
    (r) => Object.assign(statementJSON(statement), { ok: true }, r),
    (e) => Object.assign(statementJSON(statement), { ok: false, error: errorJSON(e) }),
  );
}

// statementOptions builds execute/fetchResult options whose complete
// callback collects every result: one for a plain statement, one per child
// for a multi-statement (statement.hasNext()/NextResult()). The promise
// resolves to the first result, with all of them in "results" when there
// were several.
function statementOptions(step, resolve) {
  const parts = [];
  const finish = (part, statement) => {
    parts.push(part);
    if (part.ok && statement && attempt(() => statement.hasNext())) {
      statement.NextResult();
      return;
    }
    const out = Object.assign({}, parts[0]);
    if (parts.length > 1) {
      out.results = parts;
      out.ok = parts.every((x) => x.ok);
      if (!out.ok && !out.error) out.error = parts.find((x) => !x.ok).error;
    }
    resolve(out);
  };
  const options = {
    rowMode: 'array',
    streamResult: !step.buffered,
    // Never throw back into the driver: it would treat that as a failed
    // request and retry it.
    complete: (err, statement, rows) => {
      Promise.resolve()
        .then(() => resultOf(err, statement, rows, step))
        .catch((e) => Object.assign(statementJSON(statement), { ok: false, error: errorJSON(e) }))
        .then((part) => finish(part, statement));
    },
  };
  for (const k of ['sqlText', 'binds', 'requestId', 'parameters', 'asyncExec', 'describeOnly', 'fetchAsString', 'queryId']) {
    if (step[k] !== undefined) options[k] = step[k];
  }
  return options;
}

function execute(step) {
  if (!connection) throw harnessError('HARNESS_NOT_CONNECTED', 'execute before connect');
  return new Promise((resolve) => {
    let cancelResult;
    const done = (out) => {
      if (cancelResult) out.cancel = cancelResult;
      resolve(out);
    };
    let statement;
    try {
      statement = connection.execute(statementOptions(step, done));
    } catch (e) {
      resolve({ ok: false, error: errorJSON(e) });
      return;
    }
    if (step.cancelAfterMs) {
      // statement.cancel() from another timer while the statement runs, as
      // an application does on a user's request.
      setTimeout(() => {
        statement.cancel((err) => {
          cancelResult = err ? { ok: false, error: errorJSON(err) } : { ok: true };
        });
      }, step.cancelAfterMs);
    }
  });
}

// fetchResult reads the result of an earlier statement by its query id
// (connection.getResultsFromQueryId: monitoring polls, then the result).
async function fetchResult(step) {
  if (!connection) throw harnessError('HARNESS_NOT_CONNECTED', 'fetchResult before connect');
  return new Promise((resolve) => {
    connection.getResultsFromQueryId(statementOptions(step, resolve)).catch((e) => resolve({ ok: false, error: errorJSON(e) }));
  });
}

function harnessError(code, message) {
  const e = new Error(message);
  e.name = 'HarnessError';
  e.code = code;
  return e;
}

async function connect(step) {
  if (!configured) configure({});
  if (connection) throw harnessError('HARNESS_ALREADY_CONNECTED', 'connect twice in one run');
  const options = Object.assign({}, step.connection || {});
  let conn;
  try {
    conn = snowflake.createConnection(options);
  } catch (e) {
    return { ok: false, error: errorJSON(e) };
  }
  return new Promise((resolve) => {
    conn.connectAsync((err, c) => {
      if (err) {
        resolve({ ok: false, error: errorJSON(err) });
        return;
      }
      connection = c;
      resolve({ ok: true, connectionId: c.getId() });
    }).catch((e) => resolve({ ok: false, error: errorJSON(e) }));
  });
}

function destroy() {
  if (!connection) return Promise.resolve({ ok: true, skipped: true });
  return new Promise((resolve) => {
    connection.destroy((err) => {
      connection = null;
      resolve(err ? { ok: false, error: errorJSON(err) } : { ok: true });
    });
  });
}

async function runOp(step) {
  switch (step.op) {
    case 'configure':
      configure(step.options);
      return { ok: true };
    case 'connect':
      return connect(step);
    case 'execute':
      return execute(step);
    case 'fetchResult':
      return fetchResult(step);
    case 'sleep':
      await new Promise((r) => setTimeout(r, step.ms || 0));
      return { ok: true };
    case 'destroy':
      return destroy();
    default:
      throw harnessError('HARNESS_BAD_STEP', `unknown op ${JSON.stringify(step.op)}`);
  }
}

function emit(obj) {
  return new Promise((resolve) => writeOut(safeStringify(obj) + '\n', resolve));
}

let stepIndex = 0;

// runStep runs one step under its deadline. A step that never completes
// (a driver hang) yields a structured HARNESS_TIMEOUT error and ends the run:
// the driver is in an unknown state and later steps would mean nothing.
async function runStep(step) {
  const index = stepIndex++;
  const started = Date.now();
  const timeoutMs = step.timeoutMs || DEFAULT_STEP_TIMEOUT_MS;
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(
      () => resolve({ timedOut: true, ok: false, error: errorJSON(harnessError('HARNESS_TIMEOUT', `step ${index} (${step.op}) did not complete within ${timeoutMs} ms`)) }),
      timeoutMs,
    );
  });
  let res;
  try {
    res = await Promise.race([runOp(step), timeout]);
  } catch (e) {
    res = { ok: false, error: errorJSON(e) };
  }
  clearTimeout(timer);
  const out = Object.assign({ step: index, op: step.op, ok: false, ms: Date.now() - started }, res);
  delete out.timedOut;
  await emit(out);
  if (res.timedOut) process.exit(3);
}

function parseStep(text) {
  try {
    const step = JSON.parse(text);
    if (step === null || typeof step !== 'object' || Array.isArray(step)) {
      throw new Error('a step must be a JSON object');
    }
    return step;
  } catch (e) {
    return { op: 'invalid', parseError: e.message };
  }
}

async function runStepOrReject(step) {
  if (step.op === 'invalid') {
    await emit({ step: stepIndex++, op: 'invalid', ok: false, ms: 0, error: errorJSON(harnessError('HARNESS_BAD_STEP', step.parseError)) });
    return;
  }
  await runStep(step);
}

async function main() {
  process.on('uncaughtException', (e) => {
    writeOut(safeStringify({ step: stepIndex, op: 'fatal', ok: false, error: errorJSON(e) }) + '\n', () => process.exit(2));
  });
  if (process.argv[2]) {
    const doc = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
    const steps = Array.isArray(doc) ? doc : doc.steps || [];
    for (const s of steps) await runStepOrReject(s);
  } else {
    const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
    for await (const line of rl) {
      if (line.trim() === '') continue;
      await runStepOrReject(parseStep(line));
    }
  }
  // The driver keeps sockets and timers alive; the run is over.
  process.exit(0);
}

if (require.main === module) {
  main();
} else {
  // For the harness's own test of the digest framing.
  module.exports = { RowDigest };
}
