"use strict";
// The lead's view: the statistics as numbers and small SVG bar charts.
(() => {
  const { call, element, login } = window.arbiter;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Horizontal bars: one row a label, the bar's length its share of the largest value.
  function bars(target, entries) {
    const rowHeight = 26;
    const width = 360;
    const labelWidth = 110;
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${Math.max(1, entries.length) * rowHeight}`,
      role: "img",
      class: "chart",
    });
    const largest = Math.max(1, ...entries.map(([, value]) => value));
    entries.forEach(([label, value], i) => {
      const y = i * rowHeight;
      const length = ((width - labelWidth - 50) * value) / largest;
      chart.append(svg("text", { x: 0, y: y + 17, class: "axis" }, label));
      chart.append(svg("rect", { x: labelWidth, y: y + 4, width: Math.max(length, 1), height: rowHeight - 8, class: "bar" }));
      chart.append(svg("text", { x: labelWidth + length + 6, y: y + 17, class: "value" }, String(value)));
    });
    if (!entries.length) chart.append(svg("text", { x: 0, y: 17, class: "axis" }, "nothing yet"));
    $(target).replaceChildren(chart);
  }

  function number(value, digits = 3) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  }

  function card(title, value, note) {
    const box = element("div", { class: "card" });
    box.append(element("span", { class: "card-title" }, title), element("strong", {}, value));
    if (note) box.append(element("span", { class: "card-note" }, note));
    return box;
  }

  function show(stats) {
    const rm = stats.reward_model;
    $("cards").replaceChildren(
      card("Annotations", String(stats.annotations), `${stats.safety_flags} flagged unsafe`),
      card("Cohen's kappa", number(stats.agreement.cohen_kappa), `${stats.agreement.annotator_pairs} annotator pairs`),
      card("Krippendorff's alpha", number(stats.agreement.krippendorff_alpha), `${stats.agreement.units} units`),
      card(
        "Reward model agrees",
        rm && rm.agreement !== null ? `${(100 * rm.agreement).toFixed(1)}%` : "–",
        rm ? `${rm.model} v${rm.model_version}, ${rm.comparisons} pairs` : "no model or no preferences yet",
      ),
    );
    bars("chart-tasks", Object.entries(stats.tasks));
    bars("chart-assignments", Object.entries(stats.assignments));
    bars("chart-daily", stats.daily.map((d) => [d.date, d.annotations]));
    bars("chart-annotators", stats.annotators.map((a) => [a.annotator, a.submitted]));
    const rows = stats.annotators.map((a) => {
      const row = element("tr");
      for (const value of [a.annotator, a.submitted, a.skipped, number(a.per_hour, 1), number(a.median_seconds, 1)]) {
        row.append(element("td", {}, String(value)));
      }
      return row;
    });
    document.querySelector("#annotators tbody").replaceChildren(...rows);
    $("overview").hidden = false;
  }

  async function load() {
    const me = await call("GET", "/v1/annotation/me");
    $("who").textContent = `${me.annotator} (${me.role})`;
    return call("GET", "/v1/annotation/stats");
  }

  login(load, show);
})();
