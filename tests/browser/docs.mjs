// Opens the API docs (/docs) of a running `cpuver serve` in Debian's chromium as a machine
// without internet would: every request to anywhere but the server is refused and recorded.
// Prints what it saw as one JSON object; test_docs_browser.py asserts on it.
//
//   node docs.mjs '{"base": "http://127.0.0.1:PORT", "artifacts": "DIR"}'
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(process.env.CPUVER_BROWSER_DIR || here, "package.json"));
const { chromium } = require("playwright-core");

const config = JSON.parse(process.argv[2]);
mkdirSync(config.artifacts, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CPUVER_CHROMIUM,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { elsewhere: [], problems: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") result.problems.push(m.text()); });
  page.on("pageerror", (e) => result.problems.push(`page error: ${e.message}`));
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(config.base)) return route.continue();
    result.elsewhere.push(url);
    return route.abort();
  });
  const response = await page.goto(config.base + "/docs", { waitUntil: "load" });
  result.status = response.status();
  await page.waitForSelector(".opblock", { timeout: 20000 });
  result.title = (await page.textContent(".info .title"))?.trim() ?? null;
  result.paths = await page.$$eval(".opblock-summary-path", (nodes) =>
    nodes.map((n) => n.getAttribute("data-path") || n.textContent.trim()));
  await page.screenshot({ path: path.join(config.artifacts, "docs.png"), fullPage: false });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
