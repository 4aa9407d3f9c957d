/* equinv view: correspondence, parts and predictions of one exported page (hand-written, no libraries).
 *
 * Frames: points are pixels of an image (0-based pixel centres, x right, y down); an element at point
 * (x, y) of a W x H image sits at left = (x + 0.5) / W, top = (y + 0.5) / H of its box. Descriptors
 * are int16 fixed point on an S x S grid over the evaluated view; a point's cell is
 * round((p + 0.5) * S / W - 0.5) with torch's rounding, and the match is the first cell of highest
 * (exact, integer) dot product: the rule of equinv.evaluate.transfer.transfer_landmarks.
 */
"use strict";
(function () {
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

  const views = [];
  function tab(name, label, show) {
    const b = el("button", { role: "tab", "aria-selected": "false", id: "tab-" + name, onclick: () => select(name) }, label);
    $("tabs").append(b);
    views.push({ name, show, button: b });
  }
  let active = null;
  function select(name) {
    for (const v of views) {
      const on = v.name === name;
      v.button.setAttribute("aria-selected", String(on));
      $("view-" + v.name).hidden = !on;
      if (on) v.show();
    }
    active = name;
  }

  /* ---- correspondence -------------------------------------------------------------------------- */
  const C = META.correspondence;
  const corr = { source: null, desc: null, query: null, cards: [], refBox: null, result: null };

  function imageBox(cls, file, W, S, alt) {
    const box = el("div", { class: "imgbox " + cls });
    box.append(el("img", { src: file, alt: alt, draggable: "false" }));
    const cv = el("canvas", { width: S, height: S });
    box.append(cv);
    return { box, canvas: cv };
  }

  function setupCorrespondence() {
    const W = C.image_size, S = C.grid, ref = C.images[0];
    const refBox = $("ref");
    refBox.append(el("img", { src: ref.file, alt: "reference " + ref.path, draggable: "false" }));
    corr.queryNode = el("div", { class: "query", hidden: "" });
    refBox.append(corr.queryNode);
    corr.lmButtons = [];
    (ref.landmarks || []).forEach((p, k) => {
      if (!ref.visible[k]) return;
      const name = C.names[k] || "landmark " + (k + 1);
      const inside = p[0] > -0.5 && p[1] > -0.5 && p[0] < W - 0.5 && p[1] < W - 0.5;
      const b = place(el("button", { class: "lm", title: name, "aria-label": name, "data-k": k,
        style: { background: rgb(colour(k)) }, onclick: (e) => { e.stopPropagation(); pickLandmark(k); } }), p[0], p[1], W, W);
      if (inside) refBox.append(b); // a landmark outside the view keeps its chip below the image
      const chip = el("button", { "data-k": k, onclick: () => pickLandmark(k) },
        [el("span", { class: "sw", style: { background: rgb(colour(k)) } }), `${k + 1} ${name}`]);
      $("ref-landmarks").append(chip);
      corr.lmButtons.push(b);
    });
    const pointAt = (e) => {
      const r = refBox.getBoundingClientRect();
      return [((e.clientX - r.left) / r.width) * W - 0.5, ((e.clientY - r.top) / r.height) * W - 0.5];
    };
    refBox.addEventListener("pointermove", (e) => {
      if (corr.query && corr.query.pinned) return;
      const [x, y] = pointAt(e);
      setQuery({ x, y, k: -1, pinned: false });
    });
    refBox.addEventListener("click", (e) => {
      const [x, y] = pointAt(e);
      setQuery({ x, y, k: -1, pinned: true });
    });
    C.images.slice(1).forEach((im, j) => {
      const { box, canvas } = imageBox("", im.file, W, S, "target " + im.path);
      const marker = el("div", { class: "marker", hidden: "" });
      box.append(marker);
      const rings = el("div", { class: "rings" });
      box.append(rings);
      const caption = el("div", { class: "caption" }, `#${im.index}`);
      const card = el("div", { class: "card", "data-target": j, title: im.path }, [box, caption]);
      $("targets").append(card);
      corr.cards.push({ card, box, canvas, marker, rings, caption, im });
    });
    for (const s of C.sources) $("source").append(el("option", { value: s.name }, s.name));
    $("source").addEventListener("change", (e) => useSource(e.target.value));
    $("truth").addEventListener("change", drawTruth);
    $("sim-opacity").addEventListener("input", () => corr.cards.forEach((c) => (c.canvas.style.opacity = $("sim-opacity").value)));
    $("truth").disabled = !C.labelled;
    corr.cards.forEach((c) => (c.canvas.style.opacity = $("sim-opacity").value));
    return useSource(C.sources[0].name);
  }

  function useSource(name) {
    const s = C.sources.find((t) => t.name === name);
    $("source").value = name;
    $("status").textContent = "loading " + name + " descriptors...";
    return load("desc_" + name, s.file).then((b64) => {
      if (!s.array) s.array = int16(b64);
      corr.source = s;
      const [B, S, , d] = s.shape;
      const pca = s.dim < s.in_dim ? `${s.in_dim} → ${s.dim} dims by uncentred PCA fitted on these ${B} images ` +
        `(keeps ${fmt(100 * s.pca_energy, 1)} % of the energy)` : `${s.dim} dims (no reduction)`;
      const agree = s.agreement[1] ? `; on the reference landmarks the stored descriptors match the ` +
        `full-precision ones on ${s.agreement[0]} / ${s.agreement[1]} transfers` : "";
      $("source-about").textContent = `${s.name}: ${s.what}; ${pca}; grid ${S} x ${S} over the ` +
        `${C.image_size}-px view; stored as 12-bit fixed point (int16, x${s.scale})${agree}.`;
      if (corr.query) update();
      else $("status").textContent = "hover or click the reference";
    });
  }

  function setQuery(q) {
    corr.query = q;
    if (!corr.pending) {
      corr.pending = true;
      requestAnimationFrame(() => { corr.pending = false; update(); });
    }
  }
  function pickLandmark(k) {
    const p = C.images[0].landmarks[k];
    corr.query = { x: p[0], y: p[1], k, pinned: true };
    update();
  }

  /* best cell of every target for the reference cell (gx, gy), with the similarity maps */
  function match(src, gx, gy) {
    const a = src.array, [B, S, , d] = src.shape, n = S * S;
    const q = a.subarray((gy * S + gx) * d, (gy * S + gx) * d + d);
    const out = [];
    for (let t = 1; t < B; t++) {
      const sims = new Float64Array(n);
      let best = -Infinity, bi = 0, lo = Infinity;
      for (let p = 0, o = t * n * d; p < n; p++, o += d) {
        let s = 0;
        for (let c = 0; c < d; c++) s += q[c] * a[o + c];
        sims[p] = s;
        if (s > best) { best = s; bi = p; }
        if (s < lo) lo = s;
      }
      out.push({ gx: bi % S, gy: Math.floor(bi / S), best: best / (src.scale * src.scale), sims, lo, hi: best });
    }
    return out;
  }

  function update() {
    const q = corr.query, src = corr.source;
    if (!q || !src) return;
    const W = C.image_size, S = src.shape[1];
    const gx = cellOf(q.x, W, S), gy = cellOf(q.y, W, S);
    const res = match(src, gx, gy);
    corr.result = { gx, gy, res };
    place(corr.queryNode, q.x, q.y, W, W);
    corr.queryNode.hidden = false;
    corr.queryNode.classList.toggle("pinned", q.pinned);
    corr.lmButtons.forEach((b) => b.classList.toggle("sel", Number(b.dataset.k) === q.k));
    const lut = META.colormap, errs = [];
    res.forEach((r, j) => {
      const card = corr.cards[j], x = ((r.gx + 0.5) * W) / S - 0.5, y = ((r.gy + 0.5) * W) / S - 0.5;
      const m = card.marker;
      place(m, x, y, W, W);
      m.hidden = false;
      m.dataset.cell = `${r.gx},${r.gy}`;
      m.style.background = q.k >= 0 ? rgb(colour(q.k)) : "#fff";
      const ctx = card.canvas.getContext("2d"), img = ctx.createImageData(S, S), span = r.hi - r.lo || 1;
      for (let p = 0; p < S * S; p++) {
        const v = (r.sims[p] - r.lo) / span, c = lut[Math.round(v * 255)];
        img.data.set([c[0], c[1], c[2], Math.round(255 * v * v)], 4 * p); // squared: dissimilar cells stay clear
      }
      ctx.putImageData(img, 0, 0);
      let cap = `#${card.im.index} sim ${fmt(r.best, 3)}`;
      const t = card.im.landmarks;
      if (q.k >= 0 && t && card.im.visible[q.k]) {
        const e = Math.hypot(x - t[q.k][0], y - t[q.k][1]);
        errs.push(e);
        cap += ` err ${fmt(e, 1)}px`;
      }
      card.caption.textContent = cap;
    });
    const what = q.k >= 0 ? `landmark ${q.k + 1} (${C.names[q.k] || ""})` : `point (${fmt(q.x, 1)}, ${fmt(q.y, 1)})`;
    const mean = errs.length ? `; mean error ${fmt(errs.reduce((a, b) => a + b, 0) / errs.length, 2)} px of the ` +
      `${W}-px view over ${errs.length} targets` : "";
    $("status").textContent = `${src.name}: ${what} → reference cell (${gx}, ${gy})${q.pinned ? " (pinned)" : ""}${mean}`;
    drawTruth();
  }

  function drawTruth() {
    const on = $("truth").checked, W = C.image_size, k = corr.query ? corr.query.k : -1;
    for (const card of corr.cards) {
      card.rings.replaceChildren();
      const t = card.im.landmarks;
      if (!on || !t) continue;
      t.forEach((p, i) => {
        if (!card.im.visible[i]) return;
        const r = place(el("div", { class: "ring" + (i === k ? " sel" : ""), "data-k": i }), p[0], p[1], W, W);
        r.style.borderColor = rgb(colour(i));
        card.rings.append(r);
      });
    }
  }

  function moveQuery(dx, dy) {
    const W = C.image_size, S = corr.source.shape[1], step = W / S;
    const q = corr.query || { x: (W - 1) / 2, y: (W - 1) / 2 };
    const gx = Math.min(S - 1, Math.max(0, cellOf(q.x, W, S) + dx)), gy = Math.min(S - 1, Math.max(0, cellOf(q.y, W, S) + dy));
    corr.query = { x: (gx + 0.5) * step - 0.5, y: (gy + 0.5) * step - 0.5, k: -1, pinned: true };
    update();
  }

  function correspondenceKey(e) {
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (arrows[e.key]) { moveQuery(...arrows[e.key]); return true; }
    if (/^[1-9]$/.test(e.key)) {
      const k = Number(e.key) - 1, ref = C.images[0];
      if (ref.landmarks && ref.visible[k]) pickLandmark(k);
      return true;
    }
    if (e.key === "t" && C.labelled) { $("truth").checked = !$("truth").checked; drawTruth(); return true; }
    if (e.key === "s") {
      const i = C.sources.findIndex((s) => s === corr.source);
      useSource(C.sources[(i + 1) % C.sources.length].name);
      return true;
    }
    if (e.key === "Escape" && corr.query) { corr.query.pinned = false; update(); return true; }
    return false;
  }

  /* ---- parts ----------------------------------------------------------------------------------- */
  const parts = { part: -1, cells: [] };
  function setupParts() {
    const P = C.parts;
    return load("parts", P.file).then((data) => {
      parts.labels = bytes(data.labels);
      parts.strength = bytes(data.strength);
      const sel = $("part-select");
      sel.append(el("option", { value: -1 }, "all parts"));
      for (let k = 0; k < P.dim; k++) {
        sel.append(el("option", { value: k }, `part ${k + 1}`));
        $("part-legend").append(el("button", { "data-k": k, "aria-pressed": "false", onclick: () => setPart(parts.part === k ? -1 : k) },
          [el("span", { class: "sw", style: { background: rgb(colour(k)) } }), `part ${k + 1}`]));
      }
      sel.addEventListener("change", () => setPart(Number(sel.value)));
      $("parts-opacity").addEventListener("input", drawParts);
      $("parts-strength").addEventListener("change", drawParts);
      C.images.forEach((im, i) => {
        const { box, canvas } = imageBox("", im.file, C.image_size, P.grid, im.path);
        canvas.classList.add("pixel");
        const card = el("div", { class: "card", "data-image": i }, [box, el("div", { class: "caption" }, i === 0 ? "reference" : `#${im.index}`)]);
        $("parts-grid").append(card);
        parts.cells.push(canvas);
      });
      $("parts-about").textContent = `NMF parts of ${P.model} (${P.dim} parts): each cell of the ${P.grid} x ${P.grid} ` +
        `grid takes the colour of its largest coefficient; with fading, the opacity follows that coefficient over its fitted range.`;
      drawParts();
    });
  }
  function setPart(k) {
    parts.part = k;
    $("part-select").value = String(k);
    document.querySelectorAll("#part-legend button").forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.k) === k)));
    drawParts();
  }
  function drawParts() {
    const S = C.parts.grid, n = S * S, fade = $("parts-strength").checked, op = Number($("parts-opacity").value);
    parts.cells.forEach((cv, i) => {
      const ctx = cv.getContext("2d"), img = ctx.createImageData(S, S);
      for (let p = 0; p < n; p++) {
        const l = parts.labels[i * n + p];
        if (parts.part >= 0 && l !== parts.part) continue;
        const c = colour(l), a = fade ? parts.strength[i * n + p] : 255;
        img.data.set([c[0], c[1], c[2], Math.round(a * op)], 4 * p);
      }
      ctx.putImageData(img, 0, 0);
    });
  }
  function partsKey(e) {
    const d = C.parts.dim;
    if (e.key === "]") { setPart((parts.part + 1) % d); return true; }
    if (e.key === "[") { setPart(parts.part <= 0 ? d - 1 : parts.part - 1); return true; }
    if (e.key === "a") { setPart(-1); return true; }
    return false;
  }

  /* ---- predictions ----------------------------------------------------------------------------- */
  const pred = { i: 0 };
  function setupPredictions() {
    return load("predictions", META.predictions.file).then((P) => {
      pred.P = P;
      P.items.forEach((it, i) => {
        const li = el("li", { "data-rank": i, "aria-selected": "false", onclick: () => showPrediction(i) },
          [el("img", { src: it.file, alt: "", loading: "lazy" }), `${i + 1}. ${fmt(it.error, 3)}  ${it.name}`]);
        $("pred-list").append(li);
      });
      drawHistogram(P);
      const unit = P.error_unit ? ` (${P.error_unit})` : "";
      $("pred-status").textContent = `${P.model}: ${P.items.length} of ${P.n_total} images shown, sorted by error${unit}`;
      showPrediction(0);
    });
  }
  function drawHistogram(P) {
    const plot = $("hist"), h = P.histogram, W = 300, H = 120, pad = 14;
    plot.setAttribute("viewBox", `0 0 ${W} ${H}`);
    plot.replaceChildren();
    if (!h.counts.length) return;
    const top = Math.max(...h.counts), bw = (W - 2 * pad) / h.counts.length;
    h.counts.forEach((c, b) => {
      const bh = top ? ((H - 2 * pad) * c) / top : 0;
      const r = svg("rect", { x: pad + b * bw, y: H - pad - bh, width: Math.max(1, bw - 1), height: bh, "data-bin": b });
      const title = svg("title");
      title.textContent = `${c} images with error in [${fmt(h.edges[b], 3)}, ${fmt(h.edges[b + 1], 3)}]`;
      r.append(title);
      r.addEventListener("click", () => {
        const i = P.items.findIndex((it) => it.bin === b);
        if (i >= 0) showPrediction(i);
      });
      plot.append(r);
    });
    const label = (x, s, anchor) => {
      const t = svg("text", { x, y: H - 3, "text-anchor": anchor });
      t.textContent = s;
      plot.append(t);
    };
    label(pad, fmt(h.edges[0], 3), "start");
    label(W - pad, fmt(h.edges[h.edges.length - 1], 3), "end");
  }
  function showPrediction(i) {
    const P = pred.P, it = P.items[i];
    if (!it) return;
    pred.i = i;
    document.querySelectorAll("#pred-list li").forEach((li) => li.setAttribute("aria-selected", String(Number(li.dataset.rank) === i)));
    const sel = document.querySelector(`#pred-list li[data-rank="${i}"]`);
    if (sel) sel.scrollIntoView({ block: "nearest" });
    document.querySelectorAll("#hist rect").forEach((r) => r.classList.toggle("sel", Number(r.dataset.bin) === it.bin));
    const box = $("pred-image");
    box.replaceChildren(el("img", { src: it.file, alt: it.path }));
    const lines = svg("svg", { viewBox: `0 0 ${it.w} ${it.h}`, preserveAspectRatio: "none" });
    box.append(lines);
    const body = $("pred-table").querySelector("tbody");
    body.replaceChildren();
    it.points.forEach((p, k) => {
      const c = colour(k), conf = it.confidence ? it.confidence[k] : null, t = it.true ? it.true[k] : null;
      if (t) {
        lines.append(svg("line", { x1: p[0] + 0.5, y1: p[1] + 0.5, x2: t[0] + 0.5, y2: t[1] + 0.5, stroke: rgb(c), "stroke-width": it.w / 240 }));
        box.append(place(el("div", { class: "ring", "data-k": k, style: { borderColor: rgb(c) } }), t[0], t[1], it.w, it.h));
      }
      const dot = place(el("div", { class: "dot", "data-k": k, style: { background: rgb(c, conf === null ? 1 : 0.3 + 0.7 * conf) } }), p[0], p[1], it.w, it.h);
      box.append(dot);
      body.append(el("tr", {}, [el("td", {}, [el("span", { class: "sw", style: { display: "inline-block", width: "10px", height: "10px", background: rgb(c), marginRight: "4px" } }), P.landmarks[k] || `#${k + 1}`]),
        el("td", {}, fmt(conf, 3)), el("td", {}, fmt(it.lm_errors ? it.lm_errors[k] : null, 2))]));
    });
    $("pred-status").textContent = `${i + 1} / ${P.items.length} (of ${P.n_total}): ${it.path}; error ${fmt(it.error, 3)}` +
      (P.error_unit ? ` ${P.error_unit}` : "") + `; filled dots: prediction (opacity = confidence), rings: truth`;
  }
  function predictionsKey(e) {
    if (e.key === "ArrowRight" || e.key === "ArrowDown" || e.key === "j") { showPrediction(pred.i + 1); return true; }
    if (e.key === "ArrowLeft" || e.key === "ArrowUp" || e.key === "k") { showPrediction(pred.i - 1); return true; }
    return false;
  }

  /* ---- start ----------------------------------------------------------------------------------- */
  function about() {
    const bits = [];
    if (META.backbone) bits.push(`backbone ${META.backbone}` + (META.arch ? ` (${META.arch})` : ""));
    if (C) {
      bits.push(`sources: ${C.sources.map((s) => `${s.name} ${s.in_dim}${s.dim < s.in_dim ? "→" + s.dim : ""}-d`).join(", ")}`);
      bits.push(`reference ${C.reference.spec} #${C.reference.index}; targets ${C.targets.spec} (first ${C.targets.shown} of ${C.targets.total})`);
    }
    if (META.predictions) bits.push(`predictions ${META.predictions.source}`);
    bits.push(`equinv ${META.equinv}`);
    $("about").textContent = bits.join(" · ");
  }

  function fatal(err) {
    $("fatal").hidden = false;
    $("fatal").textContent = "equinv view: " + (err && err.message ? err.message : err);
    throw err;
  }

  function start() {
    if (!META) return fatal(new Error("data/meta.js is missing: rerun equinv view"));
    about();
    const ready = [];
    if (C) {
      tab("correspondence", "Correspondence", () => {});
      ready.push(setupCorrespondence());
      if (C.parts) { tab("parts", "Parts", () => {}); ready.push(setupParts()); }
    }
    if (META.predictions) { tab("predictions", "Predictions", () => {}); ready.push(setupPredictions()); }
    select(views[0].name);
    document.addEventListener("keydown", (e) => {
      const t = e.target, input = t.tagName === "INPUT" ? t.type : null;
      // leave keys to form fields that use them: menus, text, and the arrows of a slider
      if (t.tagName === "SELECT" || t.tagName === "TEXTAREA" || (input && !["checkbox", "range"].includes(input))) return;
      if ((input === "range" && e.key.startsWith("Arrow")) || e.ctrlKey || e.metaKey || e.altKey) return;
      const keys = { correspondence: correspondenceKey, parts: partsKey, predictions: predictionsKey };
      if (keys[active] && keys[active](e)) e.preventDefault();
    });
    Promise.all(ready).then(() => { document.body.dataset.ready = "1"; }, fatal);
  }

  /* a small handle for tests and the console */
  window.EQV_VIEW = { cellOf, roundHalfEven, select, pickLandmark, state: () => ({ active, query: corr.query, result: corr.result }) };
  start();
})();
