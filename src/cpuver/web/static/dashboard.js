// cpuver dashboard: instant tooltips for titled elements (blocked cells, non-target hosts) and
// the model family filter. Plain DOM, no framework.
"use strict";

// One tooltip element (#tip) for the page. A title moves to data-tip on first hover, so the
// browser's own delayed tooltip does not show as well; a blocked heatmap cell has no title (a
// big pool would repeat every missing feature twice): its text comes from its data attributes.
const tip = document.createElement("div");
tip.id = "tip";
tip.className = "tip";
tip.setAttribute("role", "tooltip");
tip.hidden = true;

let tipped = null;

// Below the element, or above it when the viewport has no room left below.
function place() {
  const box = tipped.getBoundingClientRect();
  const view = document.documentElement;
  const left = Math.min(box.left, view.clientWidth - tip.offsetWidth - 8);
  const below = box.bottom + 6 + tip.offsetHeight <= view.clientHeight;
  const top = below ? box.bottom + 6 : box.top - 6 - tip.offsetHeight;
  tip.style.left = `${Math.max(4, left) + window.scrollX}px`;
  tip.style.top = `${top + window.scrollY}px`;
}

function showTip(element) {
  if (element.title) {
    element.dataset.tip = element.title;
    element.removeAttribute("title");
  }
  const data = element.dataset;
  tip.textContent = data.tip ?? `${data.version} on ${data.host}\nlacks: ${data.missing}`;
  tip.hidden = false;
  tipped = element;
  place();
}

document.addEventListener("mouseover", (event) => {
  const element = event.target.closest('[title], [data-tip], td[data-state="blocked"]');
  if (element) showTip(element);
  else tip.hidden = true;
});
// Scrolling a table moves the hovered element: the tooltip follows it.
document.addEventListener("scroll", () => { if (!tip.hidden) place(); }, true);

// The family filter: elements naming a family carry data-family and data-col (a class every
// cell of that family has); one generated CSS rule hides the families that do not match. The
// rule lives in a constructed style sheet: the page's Content-Security-Policy refuses <style>
// elements made by scripts.
function setUpFilter(input) {
  const families = [...document.querySelectorAll("[data-family][data-col]")];
  const sheet = new CSSStyleSheet();
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  input.addEventListener("input", () => {
    const text = input.value.trim().toLowerCase();
    const hidden = families
      .filter((element) => text && !element.dataset.family.toLowerCase().includes(text))
      .map((element) => `.${element.dataset.col}`);
    sheet.replaceSync(hidden.length ? `${hidden.join(",")} { display: none; }` : "");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.body.append(tip);
  const filter = document.getElementById("family-filter");
  if (filter) setUpFilter(filter);
});
