// Drives Debian's chromium (playwright-core, no browser download) through the dashboard of a
// running `cpuver serve` and prints what it saw as one JSON object on stdout; the pytest file
// next to this one asserts on it. Full-page screenshots go to the artifacts directory.
//
//   node dashboard.mjs '{"base": "http://127.0.0.1:PORT", "artifacts": "DIR", "pool": "rack3",
//                        "model": "Haswell", "hover": {"host": "hv3", "version": "Haswell-v1"},
//                        "filter": "haswell", "missingPool": "nope"}'
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
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => problems.push(`request failed: ${request.url()}`));

  // Loads one page, screenshots it whole, and records its status, title, heading and errors.
  async function visit(key, url) {
    problems = [];
    const response = await page.goto(config.base + url, { waitUntil: "load" });
    const screenshot = path.join(config.artifacts, `dashboard-${key}.png`);
    await page.screenshot({ path: screenshot, fullPage: true });
    result.pages[key] = {
      url,
      status: response.status(),
      title: await page.title(),
      h1: (await page.textContent("h1"))?.trim() ?? null,
      stylesheetApplied: await page.evaluate(
        () => getComputedStyle(document.body).backgroundColor !== "rgba(0, 0, 0, 0)",
      ),
      screenshot,
      errors: problems,
    };
    return result.pages[key];
  }

  await visit("overview", "/");
  result.overview = await page.$$eval("tr[data-pool]", (rows) =>
    rows.map((row) => ({
      pool: row.dataset.pool,
      hosts: Number(row.querySelector(".num").textContent),
      href: row.querySelector("a").getAttribute("href"),
    })),
  );

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
    headerSticky: await page.$eval("thead th", (th) => getComputedStyle(th).position),
  };

  const { host, version } = config.hover;
  const cell = `td[data-host=${JSON.stringify(host)}][data-version=${JSON.stringify(version)}]`;
  await page.$eval(cell, (element) => element.scrollIntoView({ block: "center", inline: "center" }));
  await page.hover(cell);
  await page.waitForSelector("#tip:not([hidden])", { timeout: 5000 });
  result.tooltip = { host, version, text: await page.textContent("#tip") };
  result.tooltip.screenshot = path.join(config.artifacts, "dashboard-pool-tooltip.png");
  await page.screenshot({ path: result.tooltip.screenshot });

  await page.fill("#family-filter", config.filter);
  result.filter = {
    text: config.filter,
    visibleFamilies: await page.$$eval("th[data-family]", (ths) =>
      ths.filter((th) => th.offsetParent !== null).map((th) => th.dataset.family),
    ),
    visibleCells: await page.$$eval(
      "td[data-state]",
      (cells) => cells.filter((cell) => cell.offsetParent !== null).length,
    ),
  };
  result.filter.screenshot = path.join(config.artifacts, "dashboard-pool-filtered.png");
  await page.screenshot({ path: result.filter.screenshot, fullPage: true });

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

  await visit("guests", "/guests");
  result.guests = await page.$$eval("tr[data-guest]", (rows) =>
    rows.map((row) => {
      const cells = row.querySelectorAll("td");
      const chips = [...row.querySelectorAll(".chip[data-state]")];
      return {
        guest: row.dataset.guest,
        state: cells[1].textContent,
        cpu: row.querySelector("td[data-cpu]").dataset.cpu,
        machine: cells[4].textContent,
        accel: cells[5].textContent,
        targets: chips.filter((c) => c.dataset.state === "target").map((c) => c.dataset.host),
        blocked: Object.fromEntries(
          chips.filter((c) => c.dataset.state === "blocked").map((c) => [c.dataset.host, c.dataset.missing]),
        ),
      };
    }),
  );
  const blockedChip = await page.$('.chip[data-state="blocked"]');
  if (blockedChip) {
    await blockedChip.hover();
    await page.waitForSelector("#tip:not([hidden])", { timeout: 5000 });
    result.guestTooltip = await page.textContent("#tip");
  }

  const missing = await visit("not-found", `/pools/${encodeURIComponent(config.missingPool)}`);
  missing.message = (await page.textContent(".error"))?.trim() ?? null;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result, null, 2) + "\n");
