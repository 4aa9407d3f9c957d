/* equinv view, predictions: an equinv predict output, worst first, with a histogram of errors. */
"use strict";
(function () {
  const { META, $, el, svg, rgb, colour, fmt, place, load } = window.EQV;

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

  window.EQV.views.predictions = { setup: setupPredictions, key: predictionsKey };
})();
