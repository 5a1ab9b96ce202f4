// Drives Debian's chromium (playwright-core, no browser download) through the dashboard of a
// running `cpuver serve` and prints what it saw as one JSON object on stdout; the pytest file
// next to this one asserts on it. Full-page screenshots go to the artifacts directory.
//
//   node dashboard.mjs '{"base": "http://127.0.0.1:PORT", "artifacts": "DIR", "pool": "rack3",
//                        "model": "Haswell", "hover": {"host": "hv3", "version": "Haswell-v1"},
//                        "filter": "haswell", "guest": "web1", "pendingGuest": "web2",
//                        "host": "hv3", "hostileHost": "hv-odd",
//                        "missing": {"pool": "/pools/rack4", ...}}'
//
// Environment: CPUVER_CHROMIUM (the browser binary), CPUVER_BROWSER_DIR (where node_modules
// with playwright-core is; default: this directory).
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(process.env.CPUVER_BROWSER_DIR || here, "package.json"));
const { chromium } = require("playwright-core");

// The machine has no network: anything that makes chromium reach out would hang or log errors.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const config = JSON.parse(process.argv[2]);
mkdirSync(config.artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CPUVER_CHROMIUM,
  args: CHROMIUM_ARGS,
});
const result = { pages: {} };
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  let problems = [];
  let dialogs = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => problems.push(`request failed: ${request.url()}`));
  page.on("dialog", async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.dismiss();
  });

  const shot = (name, fullPage = true) => {
    const file = path.join(config.artifacts, `dashboard-${name}.png`);
    return page.screenshot({ path: file, fullPage }).then(() => file);
  };

  // Records the page now shown: status, title, heading, errors since the last visit.
  async function record(key, response, screenshot = true) {
    result.pages[key] = {
      url: new URL(page.url()).pathname + new URL(page.url()).search,
      status: response ? response.status() : null,
      title: await page.title(),
      h1: (await page.textContent("h1"))?.trim() ?? null,
      stylesheetApplied: await page.evaluate(
        () => getComputedStyle(document.body).backgroundColor !== "rgba(0, 0, 0, 0)",
      ),
      // The page as the browser parsed it: scripts and elements a value could have injected.
      scripts: await page.$$eval("script", (scripts) => scripts.map((s) => s.getAttribute("src"))),
      images: await page.$$eval("img", (images) => images.length),
      screenshot: screenshot ? await shot(key) : null,
      errors: problems,
    };
    problems = [];
    return result.pages[key];
  }

  // Loads one page, screenshots it whole, and records it.
  async function visit(key, url) {
    problems = [];
    const response = await page.goto(config.base + url, { waitUntil: "load" });
    return record(key, response);
  }

  // Follows a link by clicking it, as a user would, and records the page it leads to.
  async function follow(key, selector, screenshot = false) {
    problems = [];
    const [response] = await Promise.all([page.waitForNavigation(), page.click(selector)]);
    return record(key, response, screenshot);
  }

  const visible = (selector) =>
    page.$$eval(selector, (elements) =>
      elements.filter((element) => element.checkVisibility()).map((element) => element.dataset),
    );

  // -- overview
  await visit("overview", "/");
  result.overview = await page.$$eval("tr[data-pool]", (rows) =>
    rows.map((row) => ({
      pool: row.dataset.pool,
      hosts: Number(row.querySelector(".num").textContent),
      href: row.querySelector("a").getAttribute("href"),
    })),
  );

  // -- pool: heatmap, tooltip, filter, toggle, and a host's row header leading to its page
  const poolUrl = `/pools/${encodeURIComponent(config.pool)}`;
  await visit("pool", poolUrl);
  result.heatmap = {
    cells: await page.$$eval("td[data-state]", (cells) =>
      cells.map((cell) => ({
        host: cell.dataset.host,
        version: cell.dataset.version,
        state: cell.dataset.state,
        missing: cell.dataset.missing,
        background: getComputedStyle(cell).backgroundColor,
      })),
    ),
    best: Object.fromEntries(
      await page.$$eval("li[data-best]", (items) =>
        items.map((item) => [item.dataset.family, item.dataset.best || null]),
      ),
    ),
    runs: Object.fromEntries(
      await page.$$eval("th[data-family]", (ths) => ths.map((th) => [th.dataset.family, th.dataset.runs])),
    ),
    headerSticky: await page.$eval("thead th", (th) => getComputedStyle(th).position),
  };

  const { host, version } = config.hover;
  const cell = `td[data-host=${JSON.stringify(host)}][data-version=${JSON.stringify(version)}]`;
  await page.$eval(cell, (element) => element.scrollIntoView({ block: "center", inline: "center" }));
  await page.hover(cell);
  await page.waitForSelector("#tip:not([hidden])", { timeout: 5000 });
  result.tooltip = { host, version, text: await page.textContent("#tip") };
  result.tooltip.screenshot = await shot("pool-tooltip", false);

  // What each section of the pool page shows: the best list and the heatmap's headers and cells.
  const sections = async () => ({
    bestList: (await visible("li[data-best]")).map((d) => d.family),
    headers: (await visible("th[data-family]")).map((d) => d.family),
    versionHeaders: (await visible("th[data-version]")).length,
    cells: (await visible("td[data-state]")).length,
    count: (await page.textContent("#family-count"))?.trim() ?? null,
  });
  await page.fill("#family-filter", config.filter);
  result.filter = { text: config.filter, ...(await sections()) };
  result.filter.screenshot = await shot("pool-filtered");

  await page.fill("#family-filter", "");
  result.unfiltered = await sections();
  await page.check("#hide-idle");
  result.toggle = {
    label: (await page.textContent("label.toggle"))?.trim() ?? null,
    ...(await sections()),
  };
  result.toggle.screenshot = await shot("pool-toggled");
  await page.uncheck("#hide-idle");
  result.untoggled = await sections();

  await follow("host-from-pool", `tr[data-host=${JSON.stringify(config.host)}] th a`);

  // -- models
  await visit("models", "/models");
  result.models = await page.$$eval("tr[data-family]", (rows) => rows.map((r) => r.dataset.family));

  await visit("model", `/models/${encodeURIComponent(config.model)}`);
  result.timeline = await page.$$eval("li[data-version]", (items) =>
    items.map((item) => ({
      version: item.dataset.version,
      since: item.querySelector(".since").textContent,
      changes: [...item.querySelectorAll(".chip")].map((chip) => chip.textContent),
    })),
  );

  // -- guests: one line per guest; its hosts open below the counts
  await visit("guests", "/guests");
  const guestRows = () =>
    page.$$eval("tr[data-guest]", (rows) =>
      rows.map((row) => {
        const cells = row.querySelectorAll("td");
        const details = row.querySelector("details.targets");
        const chips = [...row.querySelectorAll(".chip[data-state]")];
        const shown = (chip) => chip.checkVisibility();
        return {
          guest: row.dataset.guest,
          state: cells[1].textContent,
          cpu: row.querySelector("td[data-cpu]").dataset.cpu,
          machine: cells[4].textContent,
          accel: cells[5].textContent,
          pending: cells[7].textContent.trim(),
          summary: details?.querySelector("summary").textContent.trim() ?? null,
          counts: details ? [Number(details.dataset.targets), Number(details.dataset.blocked)] : null,
          height: row.getBoundingClientRect().height,
          lineHeight: parseFloat(getComputedStyle(cells[0]).lineHeight),
          visibleChips: chips.filter(shown).length,
          targets: chips.filter((c) => c.dataset.state === "target").map((c) => c.dataset.host),
          blocked: Object.fromEntries(
            chips.filter((c) => c.dataset.state === "blocked").map((c) => [c.dataset.host, c.dataset.missing]),
          ),
          more: row.querySelector("a.more")?.textContent.trim() ?? null,
        };
      }),
    );
  result.guests = await guestRows();
  const guestRow = `tr[data-guest=${JSON.stringify(config.guest)}]`;
  await page.click(`${guestRow} summary`);
  result.guestsOpened = await guestRows();
  result.guestsOpenedScreenshot = await shot("guests-expanded");
  const blockedChip = await page.$(`${guestRow} .chip[data-state="blocked"]`);
  if (blockedChip) {
    await blockedChip.hover();
    await page.waitForSelector("#tip:not([hidden])", { timeout: 5000 });
    result.guestTooltip = await page.textContent("#tip");
  }
  await follow("guest", `${guestRow} a[data-guest-link]`, true);

  // -- a guest: pin, history, targets
  const guestPage = async () => ({
    pin: await page.$eval("[data-pin]", (element) => element.dataset.pin),
    fingerprint: await page.$eval("[data-fingerprint]", (element) => element.dataset.fingerprint),
    pending: await page.$eval("#pending", (element) => element.dataset.pending).catch(() => null),
    history: await page.$$eval("#history tbody tr", (rows) =>
      rows.map((row) => [...row.querySelectorAll("td")].map((td) => td.textContent.trim())),
    ),
    targets: Object.fromEntries(
      await page.$$eval("tr[data-target]", (rows) =>
        rows.map((row) => [row.dataset.target, [row.dataset.state, row.dataset.missing]]),
      ),
    ),
  });
  result.guestPage = await guestPage();
  await visit("guest-pending", `/guests/${encodeURIComponent(config.pendingGuest)}`);
  result.pendingGuestPage = await guestPage();

  // -- a host: current snapshot, snapshots over time with their changes, what it runs
  await visit("host", `/hosts/${encodeURIComponent(config.host)}`);
  const hostPage = async () => ({
    facts: Object.fromEntries(
      await page.$$eval("[data-fact]", (elements) =>
        elements.map((element) => [element.dataset.fact, element.textContent.trim()]),
      ),
    ),
    vulnerabilities: Object.fromEntries(
      await page.$$eval("[data-vulnerability] td", (cells) =>
        cells.map((cell) => [cell.parentElement.dataset.vulnerability, cell.textContent]),
      ),
    ),
    snapshots: await page.$$eval("li[data-snapshot]", (items) =>
      items.map((item) => ({
        number: item.dataset.snapshot,
        changes: [...item.querySelectorAll("li[data-change]")].map((li) => ({
          kind: li.dataset.change,
          text: li.firstChild.textContent.trim(),
          versions: [...li.querySelectorAll("[data-version]")].map((chip) => chip.dataset.version),
        })),
      })),
    ),
    runs: Object.fromEntries(
      await page.$$eval(".runs-list .chip[data-state]", (chips) =>
        chips.map((chip) => [chip.dataset.version, chip.dataset.state]),
      ),
    ),
    families: await visible(".runs-list li[data-family]"),
  });
  result.hostPage = await hostPage();
  await page.check("#hide-idle");
  result.hostPage.toggled = (await visible(".runs-list li[data-family]")).map((d) => d.family);
  await page.uncheck("#hide-idle");

  await visit("host-hostile", `/hosts/${encodeURIComponent(config.hostileHost)}`);
  result.hostileHostPage = await hostPage();

  // -- names that do not exist: a 404 suggesting the nearest, whose link leads there
  result.notFound = {};
  for (const [kind, url] of Object.entries(config.missing)) {
    const seen = await visit(kind === "pool" ? "not-found" : `not-found-${kind}`, url);
    seen.message = (await page.textContent(".error"))?.trim() ?? null;
    seen.suggestions = await page.$$eval("[data-suggestion]", (links) =>
      links.map((link) => [link.dataset.suggestion, link.getAttribute("href")]),
    );
    // The document's own 404 is the one console error such a page has.
    seen.errors = seen.errors.filter((error) => !error.includes("404"));
    result.notFound[kind] = seen;
    if (kind === "pool") result.notFound.followed = await follow("suggested", "[data-suggestion]");
  }
  result.dialogs = dialogs;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result, null, 2) + "\n");
