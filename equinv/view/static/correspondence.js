/* equinv view, correspondence: hover / click the reference, every target shows its nearest-neighbour match
 * and similarity map. The match is the first cell of highest (exact, integer) dot product: the rule of
 * equinv.evaluate.transfer.transfer_landmarks on the same stored descriptors.
 */
"use strict";
(function () {
  const { META, $, el, rgb, colour, fmt, place, load, int16, cellOf, imageBox } = window.EQV;
  const C = META && META.correspondence;
  const corr = { source: null, query: null, cards: [], result: null };

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
      const { box, canvas } = imageBox(im.file, S, "target " + im.path);
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
    if (!corr.source) return false; // still loading
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

  window.EQV.views.correspondence = {
    setup: setupCorrespondence, key: correspondenceKey, pickLandmark,
    state: () => ({ query: corr.query, result: corr.result }),
  };
})();
