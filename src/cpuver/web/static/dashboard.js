// cpuver dashboard: instant tooltips for titled elements (blocked cells, non-target hosts), the
// model family filter and the toggle hiding families nothing runs. Plain DOM, no framework.
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

// The family filter and the toggle that hides families nothing runs: elements naming a family
// carry data-family and data-col (a class every element of that family has: best-list item,
// headers, cells) and, where it applies, data-runs ("none": no host runs any of its versions).
// One generated CSS rule hides the families left out; it lives in a constructed style sheet (the
// page's Content-Security-Policy refuses <style> elements made by scripts) and wins over every
// display rule of the page's own sheet.
function setUpFamilies(filter, toggle, count) {
  const families = new Map();
  for (const element of document.querySelectorAll("[data-family][data-col]")) {
    families.set(element.dataset.col, {
      name: element.dataset.family.toLowerCase(),
      idle: element.dataset.runs === "none",
    });
  }
  const sheet = new CSSStyleSheet();
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  function update() {
    const text = filter.value.trim().toLowerCase();
    const hideIdle = toggle !== null && toggle.checked;
    const hidden = [...families]
      .filter(([, family]) => (text && !family.name.includes(text)) || (hideIdle && family.idle))
      .map(([col]) => `.${col}`);
    sheet.replaceSync(hidden.length ? `${hidden.join(",")} { display: none !important; }` : "");
    if (count !== null) {
      count.textContent = `${families.size - hidden.length} of ${families.size} families shown`;
    }
  }
  filter.addEventListener("input", update);
  if (toggle !== null) toggle.addEventListener("change", update);
  update(); // a browser may have restored the fields' state
}

document.addEventListener("DOMContentLoaded", () => {
  document.body.append(tip);
  const filter = document.getElementById("family-filter");
  if (filter) {
    setUpFamilies(filter, document.getElementById("hide-idle"), document.getElementById("family-count"));
  }
});
