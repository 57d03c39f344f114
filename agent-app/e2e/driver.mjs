// A JSON-lines driver for Debian's Chromium through playwright-core, for the Python
// end-to-end tests (tests/support/browser.py).
//
//   node agent-app/e2e/driver.mjs
//
// stdin: one command per line, {"id": N, "op": "...", ...params}
// stdout: one reply per command, {"id": N, "ok": true, "result": ...} or
//         {"id": N, "ok": false, "error": "message"}, in completion order (commands run
//         concurrently, so a long waitFor does not hold up a screenshot of another page);
//         plus unsolicited lines {"event": "console", "page": name, "type": ..., "text": ...}
//         for the pages' console messages, uncaught errors, crashes and failed requests.
// The driver never exits on a bad command: it answers with an error. It closes the browser
// and exits when stdin closes.
//
// Selectors are Playwright selectors (CSS by default: [data-testid="x"]). Actions on one
// element (click, fill, press, selectOption, text, attr) are strict: more than one match is
// an error; pick one with `>> nth=0`. `query` and `count` look without waiting.
//
// Each page keeps the text frames its WebSockets received (the last FRAMES_KEPT): `wsFrames`
// returns them, e.g. to count the Socket.IO events a page was sent.
//
// playwright-core resolves from agent-app/node_modules (next to this file), whatever the
// working directory. `npx playwright install` is not used: the browser is /usr/bin/chromium.

import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const EXECUTABLE = process.env.E2E_CHROMIUM || '/usr/bin/chromium';
const DEFAULT_TIMEOUT = 10_000; // ms, for actions that wait for their element
const FRAMES_KEPT = 2000; // received WebSocket text frames kept per page

let browser = null;
const pages = new Map(); // name -> {page, context}
let closing = false;

function write(obj) {
  let line;
  try {
    line = JSON.stringify(obj);
  } catch (e) {
    line = JSON.stringify({ id: obj.id, ok: false, error: `unserialisable result: ${e}` });
  }
  process.stdout.write(line + '\n');
}

function event(page, type, text) {
  write({ event: 'console', page, type, text: String(text) });
}

function need(params, ...keys) {
  for (const key of keys) {
    if (params[key] === undefined || params[key] === null) {
      throw new Error(`missing parameter "${key}"`);
    }
  }
}

function pageOf(params) {
  need(params, 'page');
  const entry = pages.get(params.page);
  if (!entry) {
    throw new Error(`no page named "${params.page}" (open: ${[...pages.keys()].join(', ') || 'none'})`);
  }
  return entry.page;
}

function timeoutOf(params) {
  const t = params.timeout;
  if (t === undefined || t === null) return DEFAULT_TIMEOUT;
  if (typeof t !== 'number' || !(t > 0)) throw new Error('timeout must be a positive number (ms)');
  return t; // never 0: Playwright reads 0 as "no timeout"
}

function launchArgs(wav) {
  const args = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ];
  if (wav) args.push(`--use-file-for-fake-audio-capture=${wav}`);
  return args;
}

const ops = {
  async launch(p) {
    if (browser) throw new Error('the browser is already launched');
    const extra = Array.isArray(p.args) ? p.args.map(String) : [];
    browser = await chromium.launch({
      executablePath: EXECUTABLE,
      headless: p.headless !== false,
      args: [...launchArgs(p.fakeAudioWav), ...extra],
      timeout: timeoutOf({ timeout: p.timeout ?? 30_000 }),
    });
    browser.on('disconnected', () => {
      if (!closing) event('', 'browser', 'the browser disconnected');
    });
    return { version: browser.version() };
  },

  async newPage(p) {
    need(p, 'name');
    if (!browser) throw new Error('launch the browser first');
    if (pages.has(p.name)) throw new Error(`a page named "${p.name}" is already open`);
    const context = await browser.newContext({
      viewport: p.viewport ?? { width: 1280, height: 800 },
      permissions: ['microphone', 'notifications'],
      // a hub on HTTPS with its self-signed certificate (tests only)
      ignoreHTTPSErrors: Boolean(p.ignoreHttpsErrors),
    });
    const page = await context.newPage();
    const name = p.name;
    const frames = [];
    pages.set(name, { page, context, frames });
    page.on('websocket', (ws) => {
      ws.on('framereceived', ({ payload }) => {
        if (typeof payload !== 'string') return;
        frames.push({ at: Date.now(), url: ws.url(), payload });
        if (frames.length > FRAMES_KEPT) frames.splice(0, frames.length - FRAMES_KEPT);
      });
    });
    page.on('console', (msg) => event(name, msg.type(), msg.text()));
    page.on('pageerror', (err) => event(name, 'pageerror', err.stack || err.message));
    page.on('crash', () => event(name, 'crash', 'the page crashed'));
    page.on('requestfailed', (req) =>
      event(name, 'requestfailed', `${req.method()} ${req.url()}: ${req.failure()?.errorText}`));
    if (p.url) await page.goto(p.url, { timeout: timeoutOf({ timeout: p.timeout ?? 30_000 }) });
    return { name };
  },

  async goto(p) {
    need(p, 'url');
    const response = await pageOf(p).goto(p.url, { timeout: timeoutOf({ timeout: p.timeout ?? 30_000 }) });
    return { status: response ? response.status() : null };
  },

  async click(p) {
    need(p, 'selector');
    await pageOf(p).locator(p.selector).click({ timeout: timeoutOf(p) });
    return null;
  },

  async fill(p) {
    need(p, 'selector', 'value');
    await pageOf(p).locator(p.selector).fill(String(p.value), { timeout: timeoutOf(p) });
    return null;
  },

  async press(p) {
    need(p, 'selector', 'key');
    await pageOf(p).locator(p.selector).press(String(p.key), { timeout: timeoutOf(p) });
    return null;
  },

  // A <select>'s option by value (or label): the select's input and change events fire.
  async selectOption(p) {
    need(p, 'selector', 'value');
    return await pageOf(p).locator(p.selector).selectOption(String(p.value), { timeout: timeoutOf(p) });
  },

  async waitFor(p) {
    need(p, 'selector');
    const state = p.state ?? 'visible';
    if (!['attached', 'detached', 'visible', 'hidden'].includes(state)) {
      throw new Error(`state must be attached, detached, visible or hidden, not "${state}"`);
    }
    // first(): waiting for "a match" must not fail because two elements match
    await pageOf(p).locator(p.selector).first().waitFor({ state, timeout: timeoutOf(p) });
    return null;
  },

  async text(p) {
    need(p, 'selector');
    return await pageOf(p).locator(p.selector).textContent({ timeout: timeoutOf(p) });
  },

  async attr(p) {
    need(p, 'selector', 'name');
    return await pageOf(p).locator(p.selector).getAttribute(String(p.name), { timeout: timeoutOf(p) });
  },

  async count(p) {
    need(p, 'selector');
    return await pageOf(p).locator(p.selector).count();
  },

  // Every current match, without waiting: [{text, attrs: {name: value|null}}].
  async query(p) {
    need(p, 'selector');
    const names = Array.isArray(p.attrs) ? p.attrs.map(String) : [];
    return await pageOf(p).locator(p.selector).evaluateAll(
      (els, names) => els.map((el) => ({
        text: el.textContent,
        attrs: Object.fromEntries(names.map((n) => [n, el.getAttribute(n)])),
      })),
      names,
    );
  },

  async evaluate(p) {
    need(p, 'expression');
    const page = pageOf(p);
    if (p.arg !== undefined) {
      // a function expression called with one JSON argument
      return await page.evaluate(
        ({ source, arg }) => (0, eval)(`(${source})`)(arg),
        { source: String(p.expression), arg: p.arg },
      );
    }
    return await page.evaluate(String(p.expression));
  },

  // The text frames the page's WebSockets received so far, oldest first; with `contains`,
  // those that include it: [{at (ms since the epoch), url, payload}].
  async wsFrames(p) {
    pageOf(p);
    const { frames } = pages.get(p.page);
    const part = p.contains === undefined || p.contains === null ? null : String(p.contains);
    return frames.filter((f) => part === null || f.payload.includes(part));
  },

  async screenshot(p) {
    need(p, 'path');
    await pageOf(p).screenshot({ path: String(p.path), fullPage: p.fullPage !== false, timeout: timeoutOf(p) });
    return { path: String(p.path) };
  },

  async setOffline(p) {
    need(p, 'offline');
    pageOf(p);
    await pages.get(p.page).context.setOffline(Boolean(p.offline));
    return null;
  },

  async closePage(p) {
    pageOf(p);
    const { context } = pages.get(p.page);
    pages.delete(p.page);
    await context.close();
    return null;
  },

  async close() {
    await shutdown();
    return null;
  },
};

async function shutdown() {
  closing = true;
  const open = [...pages.values()];
  pages.clear();
  for (const { context } of open) {
    try {
      await context.close();
    } catch {
      // the browser may be gone already
    }
  }
  if (browser) {
    const b = browser;
    browser = null;
    try {
      await b.close();
    } catch {
      // ditto
    }
  }
  closing = false;
}

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    write({ id: null, ok: false, error: `not JSON: ${e.message}` });
    return;
  }
  const id = msg && typeof msg === 'object' ? msg.id ?? null : null;
  try {
    if (!msg || typeof msg !== 'object' || Array.isArray(msg)) throw new Error('a command must be a JSON object');
    const op = ops[msg.op];
    if (typeof msg.op !== 'string' || !Object.hasOwn(ops, msg.op)) {
      throw new Error(`unknown op ${JSON.stringify(msg.op)}; known: ${Object.keys(ops).join(', ')}`);
    }
    const result = await op(msg);
    write({ id, ok: true, result: result === undefined ? null : result });
  } catch (e) {
    write({ id, ok: false, error: (e && (e.message || String(e))) || 'unknown error' });
  }
}

process.on('unhandledRejection', (reason) => event('', 'driver', `unhandled rejection: ${reason}`));
process.on('uncaughtException', (err) => event('', 'driver', `uncaught exception: ${err.stack || err}`));
process.stdout.on('error', () => {}); // the reader went away: nothing left to tell

const pending = new Set();
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  if (!line.trim()) return;
  const task = handle(line).finally(() => pending.delete(task));
  pending.add(task);
});
rl.on('close', async () => {
  await shutdown();
  await Promise.allSettled([...pending]);
  process.stdout.write('', () => process.exit(0));
});
