// Small live charts: an inline SVG sparkline of the last samples with the current value.

import { h } from "./ui.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 160;
const HEIGHT = 36;

/**
 * A sparkline of up to `size` samples. `format` renders the current value; `max`
 * (optional) fixes the top of the scale, otherwise it follows the largest sample.
 */
export class Sparkline {
  constructor(label, format, { size = 60, max = null } = {}) {
    this.format = format;
    this.size = size;
    this.max = max;
    this.values = [];
    this.area = document.createElementNS(SVG, "polygon");
    this.area.setAttribute("class", "spark-area");
    this.line = document.createElementNS(SVG, "polyline");
    this.line.setAttribute("class", "spark-line");
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    svg.append(this.area, this.line);
    this.value = h("span", { class: "spark-value" }, "–");
    this.detail = h("span", { class: "spark-detail" });
    this.element = h("figure", { class: "spark" },
      h("figcaption", {}, h("span", { class: "spark-label" }, label), this.value), svg, this.detail);
  }

  /** Adds a sample (null: unknown, drawn as a gap at zero) and redraws. */
  push(value, detail = "") {
    this.values.push(value);
    if (this.values.length > this.size) this.values.shift();
    this.value.textContent = this.format(value);
    this.detail.textContent = detail;
    this.draw();
  }

  clear() {
    this.values = [];
    this.value.textContent = "–";
    this.detail.textContent = "";
    this.draw();
  }

  draw() {
    const known = this.values.filter((v) => v !== null && v !== undefined);
    const top = Math.max(this.max ?? 0, ...known, 1e-9);
    const step = WIDTH / Math.max(this.size - 1, 1);
    const offset = (this.size - this.values.length) * step;
    const points = this.values.map((v, i) => {
      const x = offset + i * step;
      const y = HEIGHT - 1 - ((v ?? 0) / top) * (HEIGHT - 2);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    this.line.setAttribute("points", points.join(" "));
    this.area.setAttribute("points", points.length
      ? `${offset.toFixed(1)},${HEIGHT} ${points.join(" ")} ${WIDTH},${HEIGHT}`
      : "");
  }
}
