/* equinv view, start: tabs, the page's statement, keyboard dispatch (the views live in their own files). */
"use strict";
(function () {
  const { META, $, el } = window.EQV;
  const C = META && META.correspondence;
  const V = window.EQV.views;

  const views = [];
  function tab(name, label) {
    const b = el("button", { role: "tab", "aria-selected": "false", id: "tab-" + name, onclick: () => select(name) }, label);
    $("tabs").append(b);
    views.push({ name, button: b });
  }
  let active = null;
  function select(name) {
    for (const v of views) {
      const on = v.name === name;
      v.button.setAttribute("aria-selected", String(on));
      $("view-" + v.name).hidden = !on;
    }
    active = name;
  }

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
      tab("correspondence", "Correspondence");
      ready.push(V.correspondence.setup());
      if (C.parts) { tab("parts", "Parts"); ready.push(V.parts.setup()); }
    }
    if (META.predictions) { tab("predictions", "Predictions"); ready.push(V.predictions.setup()); }
    select(views[0].name);
    document.addEventListener("keydown", (e) => {
      const t = e.target, input = t.tagName === "INPUT" ? t.type : null;
      // leave keys to form fields that use them: menus, text, and the arrows of a slider
      if (t.tagName === "SELECT" || t.tagName === "TEXTAREA" || (input && !["checkbox", "range"].includes(input))) return;
      if ((input === "range" && e.key.startsWith("Arrow")) || e.ctrlKey || e.metaKey || e.altKey) return;
      if (V[active] && V[active].key(e)) e.preventDefault();
    });
    Promise.all(ready).then(() => { document.body.dataset.ready = "1"; }, fatal);
  }

  /* a small handle for tests and the console */
  window.EQV_VIEW = {
    cellOf: window.EQV.cellOf, roundHalfEven: window.EQV.roundHalfEven, select,
    pickLandmark: (k) => V.correspondence.pickLandmark(k),
    state: () => Object.assign({ active }, V.correspondence.state()),
  };
  start();
})();
