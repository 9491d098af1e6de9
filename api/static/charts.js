"use strict";
// Plain SVG charts: horizontal bars and a lift chart with intervals. Each chart also has a table.
const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(width, height, label) {
    return el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label });
  }
  function bars(container, items, label) {
    // items: [{label, value, cls}]
    const rowH = 22, left = 150, width = 640, height = items.length * rowH + 10;
    const max = Math.max(1, ...items.map((i) => i.value));
    const root = svg(width, height, label);
    items.forEach((item, n) => {
      const y = 5 + n * rowH;
      const w = ((width - left - 60) * item.value) / max;
      root.append(el("text", { x: left - 8, y: y + 15, "text-anchor": "end" }, item.label));
      root.append(el("rect", { x: left, y: y + 3, width: Math.max(w, 1), height: rowH - 6, class: `bar ${item.cls || ""}` }));
      root.append(el("text", { x: left + w + 6, y: y + 15 }, String(item.value)));
    });
    container.replaceChildren(root);
  }
  function lift(container, lifts, label) {
    // one row per metric: the interval as a line, the lift as a dot, zero marked
    const rowH = 30, left = 110, width = 640, height = lifts.length * rowH + 30;
    const root = svg(width, height, label);
    const x = (v) => left + ((v + 1) / 2) * (width - left - 20);
    root.append(el("line", { x1: x(0), x2: x(0), y1: 0, y2: height - 20, class: "axis" }));
    [-1, -0.5, 0, 0.5, 1].forEach((t) =>
      root.append(el("text", { x: x(t), y: height - 5, "text-anchor": "middle" }, `${Math.round(t * 100)} pp`)));
    lifts.forEach((l, n) => {
      const y = 15 + n * rowH;
      root.append(el("text", { x: left - 8, y: y + 4, "text-anchor": "end" }, l.metric));
      if (l.lift === null) {
        root.append(el("text", { x: x(0) + 6, y: y + 4 }, "no estimate yet"));
        return;
      }
      root.append(el("line", { x1: x(l.ci_low), x2: x(l.ci_high), y1: y, y2: y, stroke: "#0b5cad", "stroke-width": 3 }));
      root.append(el("circle", { cx: x(l.lift), cy: y, r: 5, fill: "#1a1a1a" }));
    });
    container.replaceChildren(root);
  }
  return { bars, lift };
})();
