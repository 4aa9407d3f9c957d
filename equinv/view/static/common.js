/* equinv view, shared helpers (hand-written, no libraries): DOM, colours, data files, the grid rule.
 *
 * Frames: points are pixels of an image (0-based pixel centres, x right, y down); an element at point
 * (x, y) of a W x H image sits at left = (x + 0.5) / W, top = (y + 0.5) / H of its box. Descriptors
 * are int16 fixed point on an S x S grid over the evaluated view; a point's cell is
 * round((p + 0.5) * S / W - 0.5) with torch's rounding (cellOf), as equinv.evaluate.transfer reads it.
 */
"use strict";
window.EQV = (function () {
  const DATA = (window.EQV_DATA = window.EQV_DATA || {});
  const META = DATA.meta;
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "style") Object.assign(e.style, v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of [].concat(children || [])) e.append(c);
    return e;
  }
  const SVG = "http://www.w3.org/2000/svg"; // a namespace name, not a request
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  const rgb = (c, a) => (a === undefined ? `rgb(${c[0]},${c[1]},${c[2]})` : `rgba(${c[0]},${c[1]},${c[2]},${a})`);
  const colour = (k) => META.palette[k % META.palette.length];
  const fmt = (v, n) => (v === null || v === undefined ? "n/a" : Number(v).toFixed(n === undefined ? 2 : n));
  const place = (node, x, y, w, h) => {
    node.style.left = ((x + 0.5) / w) * 100 + "%";
    node.style.top = ((y + 0.5) / h) * 100 + "%";
    return node;
  };

  /* A data file is a script that fills window.EQV_DATA[name]; <script> loads work from file://. */
  function load(name, file) {
    if (DATA[name]) return Promise.resolve(DATA[name]);
    return new Promise((resolve, reject) => {
      const s = el("script", { src: file });
      s.onload = () => (DATA[name] ? resolve(DATA[name]) : reject(new Error(file + " did not define " + name)));
      s.onerror = () => reject(new Error("cannot load " + file));
      document.head.append(s);
    });
  }
  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function int16(b64) {
    const b = bytes(b64);
    const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    if (little) return new Int16Array(b.buffer, 0, b.length >> 1);
    const v = new DataView(b.buffer), out = new Int16Array(b.length >> 1);
    for (let i = 0; i < out.length; i++) out[i] = v.getInt16(2 * i, true);
    return out;
  }
  /* torch.round: half to even; the arithmetic in float32 as transfer_landmarks does it */
  function roundHalfEven(v) {
    const f = Math.floor(v), d = v - f;
    if (d !== 0.5) return d < 0.5 ? f : f + 1;
    return f % 2 === 0 ? f : f + 1;
  }
  function cellOf(p, size, grid) {
    const f = Math.fround;
    const g = f(f(f(f(p) + 0.5) * f(grid / size)) - 0.5);
    return Math.min(grid - 1, Math.max(0, roundHalfEven(g)));
  }

  function imageBox(file, S, alt) {
    const box = el("div", { class: "imgbox" });
    box.append(el("img", { src: file, alt: alt, draggable: "false" }));
    const cv = el("canvas", { width: S, height: S });
    box.append(cv);
    return { box, canvas: cv };
  }

  return { DATA, META, $, el, svg, rgb, colour, fmt, place, load, bytes, int16, roundHalfEven, cellOf, imageBox, views: {} };
})();
