/* equinv view, parts: NMF part labels over every image, one colour per part, opacity and part selector. */
"use strict";
(function () {
  const { META, $, el, rgb, colour, load, bytes, imageBox } = window.EQV;
  const C = META && META.correspondence;

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
        const { box, canvas } = imageBox(im.file, P.grid, im.path);
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

  window.EQV.views.parts = { setup: setupParts, key: partsKey };
})();
