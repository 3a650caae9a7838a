/* brandguard evidence report: a sortable, filterable table of every scored photo and, for the rows on the
   current page, the evidence cards (loaded page by page from cards-NNNN.js beside this file).
   Everything is built with DOM calls and textContent: no string from the data is parsed as HTML.
   Nothing is fetched from the network. */
(function () {
  "use strict";
  var D = window.BRANDGUARD_REPORT;
  if (!D) { return; }
  var me = document.currentScript && document.currentScript.src;
  var BASE = me ? me.replace(/report\.js(\?.*)?$/, "") : D.files + "/";
  var COLS = D.columns;            // names of the row fields, in order
  var C = {};
  COLS.forEach(function (name, i) { C[name] = i; });
  var SEVERITY = {counterfeit: 0, suspicious: 1, authentic: 2, unknown: 3, error: 4, missing: 5};
  var HEAD = [
    ["row", "#", "num"], ["path", "path", ""], ["verdict", "verdict", ""], ["score", "score", "num"],
    ["brand", "brand", ""], ["product", "product", ""], ["similarity", "similarity", "num"],
    ["channel", "channel", ""], ["note", "note / error", ""]
  ];
  var state = {verdict: D.default_filter, brand: "", channel: "", search: "", sort: "score", dir: -1, page: 0,
               size: 25, token: 0};
  var cards = {};                  // card number -> card data
  var chunks = {};                 // chunk number -> "loading" | "done" | "failed"
  var waiting = [];
  window.BRANDGUARD_CARDS = function (chunk, list) {
    list.forEach(function (c) { cards[c.n] = c; });
    chunks[chunk] = "done";
    var w = waiting; waiting = [];
    w.forEach(function (f) { f(); });
  };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function badge(v) { return el("span", {"class": "badge b-" + v}, v); }
  function fmt(x, d) { return (x === null || x === undefined || x === "") ? "" : Number(x).toFixed(d); }

  // ---------------------------------------------------------------- filters and sorting
  function buildControls() {
    var vsel = document.getElementById("f-verdict");
    D.verdicts.forEach(function (v) {
      vsel.appendChild(el("option", {value: v}, v + " (" + D.counts[v] + ")"));
    });
    vsel.value = state.verdict;
    var bsel = document.getElementById("f-brand");
    D.brands.forEach(function (b) { bsel.appendChild(el("option", {value: b}, b)); });
    var csel = document.getElementById("f-channel");
    D.channels.forEach(function (c) { csel.appendChild(el("option", {value: c}, c)); });
    vsel.addEventListener("change", function () { state.verdict = vsel.value; state.page = 0; render(); });
    bsel.addEventListener("change", function () { state.brand = bsel.value; state.page = 0; render(); });
    csel.addEventListener("change", function () { state.channel = csel.value; state.page = 0; render(); });
    var search = document.getElementById("f-search");
    search.addEventListener("input", function () { state.search = search.value.toLowerCase(); state.page = 0; render(); });
    var size = document.getElementById("f-size");
    size.addEventListener("change", function () { state.size = parseInt(size.value, 10); state.page = 0; render(); });
    state.size = parseInt(size.value, 10);
    var heat = document.getElementById("f-heat");
    heat.addEventListener("change", function () { document.body.classList.toggle("noheat", !heat.checked); });
    document.getElementById("prev").addEventListener("click", function () { state.page -= 1; render(); });
    document.getElementById("next").addEventListener("click", function () { state.page += 1; render(); });
    var tr = document.querySelector("#rows thead tr");
    HEAD.forEach(function (h) {
      var th = el("th", {"data-key": h[0], scope: "col", title: "sort by " + h[1], tabindex: "0"}, h[1]);
      var sortBy = function () {
        if (state.sort === h[0]) { state.dir = -state.dir; } else {
          state.sort = h[0];
          state.dir = (h[2] === "num" && h[0] !== "row") ? -1 : 1;
        }
        state.page = 0; render();
      };
      th.addEventListener("click", sortBy);
      th.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(); }
      });
      tr.appendChild(th);
    });
  }

  function matches(r) {
    var v = r[C.verdict];
    if (state.verdict === "flagged") { if (v !== "counterfeit" && v !== "suspicious") { return false; } }
    else if (state.verdict && v !== state.verdict) { return false; }
    if (state.brand && r[C.brand] !== state.brand) { return false; }
    if (state.channel && r[C.channel] !== state.channel) { return false; }
    if (state.search) {
      var hay = (r[C.path] + "\u0001" + r[C.brand] + "\u0001" + r[C.product] + "\u0001" + r[C.note]).toLowerCase();
      if (hay.indexOf(state.search) < 0) { return false; }
    }
    return true;
  }
  function num(x) { return (x === null || x === "" || x === undefined) ? -Infinity : Number(x); }
  function comparator() {
    var k = state.sort, dir = state.dir;
    if (k === "score") {
      return function (a, b) {  // ties on the calibrated score are ranked by the raw score
        return dir * ((num(a[C.score]) - num(b[C.score])) || (num(a[C.raw]) - num(b[C.raw]))) || (a[C.row] - b[C.row]);
      };
    }
    if (k === "similarity" || k === "row") {
      return function (a, b) { return dir * (num(a[C[k]]) - num(b[C[k]])) || (a[C.row] - b[C.row]); };
    }
    if (k === "verdict") {
      return function (a, b) {
        return dir * (SEVERITY[a[C.verdict]] - SEVERITY[b[C.verdict]]) || (num(b[C.score]) - num(a[C.score]))
          || (a[C.row] - b[C.row]);
      };
    }
    return function (a, b) {
      var x = String(a[C[k]] || ""), y = String(b[C[k]] || "");
      return dir * (x < y ? -1 : x > y ? 1 : 0) || (a[C.row] - b[C.row]);
    };
  }

  // ---------------------------------------------------------------- table
  function render() {
    var rows = D.rows.filter(matches).sort(comparator());
    var pages = Math.max(1, Math.ceil(rows.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var shown = rows.slice(state.page * state.size, (state.page + 1) * state.size);
    document.querySelectorAll("#rows th").forEach(function (th) {
      if (th.getAttribute("data-key") === state.sort) {
        th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      } else { th.removeAttribute("aria-sort"); }
    });
    var body = document.querySelector("#rows tbody");
    body.textContent = "";
    shown.forEach(function (r) {
      var tr = el("tr", {"data-path": r[C.path], "data-verdict": r[C.verdict], "data-score": r[C.score] === null ? "" : r[C.score]});
      if (r[C.card] >= 0) { tr.className = "has-card"; }
      tr.appendChild(el("td", {"class": "num"}, r[C.row]));
      var td = el("td", {"class": "path"});
      if (r[C.card] >= 0) { td.appendChild(el("a", {href: "#card-" + r[C.card]}, r[C.path])); }
      else { td.textContent = r[C.path]; }
      tr.appendChild(td);
      td = el("td"); td.appendChild(badge(r[C.verdict])); tr.appendChild(td);
      tr.appendChild(el("td", {"class": "num"}, r[C.score] === null ? "" : r[C.score_text]));
      tr.appendChild(el("td", null, r[C.brand]));
      tr.appendChild(el("td", null, r[C.product]));
      tr.appendChild(el("td", {"class": "num"}, fmt(r[C.similarity], 3)));
      tr.appendChild(el("td", null, r[C.channel]));
      tr.appendChild(el("td", null, r[C.note]));
      body.appendChild(tr);
    });
    if (!shown.length) {
      var tr0 = el("tr"); tr0.appendChild(el("td", {colspan: HEAD.length, "class": "empty"}, "no row matches"));
      body.appendChild(tr0);
    }
    document.getElementById("match-count").textContent = rows.length + " of " + D.rows.length + " rows match";
    document.getElementById("page-info").textContent = "page " + (state.page + 1) + " of " + pages;
    document.getElementById("prev").disabled = state.page <= 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
    renderCards(shown);
  }

  // ---------------------------------------------------------------- cards
  function loadChunks(needed, done) {
    var missing = needed.filter(function (k) { return chunks[k] !== "done" && chunks[k] !== "failed"; });
    if (!missing.length) { done(); return; }
    waiting.push(function () { loadChunks(needed, done); });
    missing.forEach(function (k) {
      if (chunks[k] === "loading") { return; }
      chunks[k] = "loading";
      var s = document.createElement("script");
      s.src = BASE + "cards-" + ("000" + k).slice(-4) + ".js";
      s.onerror = function () { chunks[k] = "failed"; var w = waiting; waiting = []; w.forEach(function (f) { f(); }); };
      document.body.appendChild(s);
    });
  }

  function renderCards(shown) {
    var token = ++state.token;
    var box = document.getElementById("cards");
    var info = document.getElementById("cards-info");
    var want = shown.filter(function (r) { return r[C.card] >= 0; }).map(function (r) { return r[C.card]; });
    var noCard = shown.filter(function (r) {
      return r[C.card] < 0 && (r[C.verdict] === "counterfeit" || r[C.verdict] === "suspicious");
    }).length;
    box.textContent = "";
    if (!want.length) {
      info.textContent = "No evidence card for the rows on this page" +
        (noCard ? " (" + noCard + " flagged row(s) rank below the report's card limit of " + D.max_cards + ")" : "") + ".";
      return;
    }
    info.textContent = "Loading " + want.length + " card(s)...";
    var needed = [];
    want.forEach(function (n) { var k = Math.floor(n / D.chunk); if (needed.indexOf(k) < 0) { needed.push(k); } });
    loadChunks(needed, function () {
      if (token !== state.token) { return; }
      info.textContent = want.length + " card(s)" +
        (noCard ? "; " + noCard + " flagged row(s) on this page rank below the card limit of " + D.max_cards : "") + ".";
      want.forEach(function (n) { box.appendChild(cards[n] ? card(cards[n]) : el("p", {"class": "warn"}, "card " + n + " could not be loaded")); });
    });
  }

  function placeholder(what, reason) {
    var d = el("div", {"class": "placeholder"});
    d.appendChild(document.createTextNode(what + " unavailable"));
    d.appendChild(el("br"));
    d.appendChild(document.createTextNode(reason));
    return d;
  }
  function figure(img, caption) {
    var f = el("figure");
    f.appendChild(img);
    f.appendChild(el("figcaption", null, caption));
    return f;
  }
  function image(src, w, h, alt, cls) {
    var a = {src: src, width: w, height: h, alt: alt, loading: "lazy"};
    if (cls) { a["class"] = cls; }
    return el("img", a);
  }

  function photoFigure(c) {
    var p = c.photo;
    if (p.missing) { return figure(placeholder("listing photo", p.missing), "listing photo"); }
    var s = el("span", {"class": "stack"});
    s.appendChild(image(p.src, p.w, p.h, "listing photo " + c.path));
    if (p.quad) {
      var svg = svgEl("svg", {width: p.w, height: p.h, viewBox: "0 0 " + p.w + " " + p.h});
      svg.appendChild(svgEl("polygon", {points: p.quad.map(function (q) { return q[0] + "," + q[1]; }).join(" "),
        fill: "none", stroke: "#00e000", "stroke-width": 2}));
      s.appendChild(svg);
    }
    return figure(s, "listing photo as uploaded; green: the outline of " + c.brand + "/" + c.product +
      " found in it (the canonical frame)");
  }

  function legend(c) {
    var L = D.legend, d = el("div", {"class": "legend"});
    d.appendChild(el("div", null, "heat: departure from authentic variation, standard deviations (log scale)"));
    var bar = el("div", {"class": "bar", style: "background:" + L.gradient});
    (c.marks || []).forEach(function (m) {
      bar.appendChild(el("span", {"class": "mark", style: "left:" + m.pos + "%", title: m.label}));
    });
    d.appendChild(bar);
    var ticks = el("div", {"class": "ticks"});
    L.ticks.forEach(function (t) { ticks.appendChild(el("span", {style: "left:" + t.pos + "%"}, t.label)); });
    d.appendChild(ticks);
    (c.marks || []).forEach(function (m) { d.appendChild(el("div", null, "\u25AE " + m.label)); });
    return d;
  }

  function cropFigures(c) {
    var out = [];
    var k = c.crop;
    if (k.missing) { out.push(figure(placeholder("aligned photo", k.missing), "aligned photo")); }
    else {
      var s = el("span", {"class": "stack"});
      s.appendChild(image(k.src, k.w, k.h, "aligned photo " + c.path));
      if (k.heat) { s.appendChild(image(k.heat, k.w, k.h, "heatmap " + c.path, "heat")); }
      var f = figure(s, "the photo in the product's canonical frame, heat overlaid (hover or untick \u2018heat overlay\u2019 to see it clean)");
      f.appendChild(legend(c));
      out.push(f);
    }
    var r = c.ref;
    if (r.missing) { out.push(figure(placeholder("reference", r.missing), "closest authentic reference")); }
    else {
      out.push(figure(image(r.src, r.w, r.h, "reference " + r.path),
        (r.aligned ? "closest authentic reference, same canonical frame and size: " :
                     "closest authentic reference (whole photo: no alignment known): ") + r.path));
    }
    return out;
  }

  function kv(t, k, v, cls) {
    var tr = el("tr"); tr.appendChild(el("td", null, k));
    var td = el("td", cls ? {"class": cls} : null);
    if (v instanceof Node) { td.appendChild(v); } else { td.textContent = v; }
    tr.appendChild(td); t.appendChild(tr);
  }

  function facts(c) {
    var d = el("div", {"class": "facts"});
    c.warnings.forEach(function (w) { d.appendChild(el("div", {"class": "warn"}, "\u26A0 " + w)); });
    c.notes.forEach(function (w) { d.appendChild(el("div", {"class": "warn note"}, "pipeline note: " + w)); });
    var t = el("table");
    kv(t, "path", c.path, "path");
    kv(t, "score", c.score_text + "  (calibrated: higher than " + c.authentic_share + " of authentic photos" +
      (c.thresholds ? "; review \u2265 " + c.thresholds.review + ", takedown \u2265 " + c.thresholds.takedown : "") + ")");
    kv(t, "raw score", c.raw_text);
    kv(t, "fired", c.fired_text);
    kv(t, "brand / product", c.brand + " / " + c.product);
    kv(t, "similarity", c.similarity_text);
    kv(t, "alignment", c.alignment_text);
    kv(t, "reference", c.reference, "path");
    if (c.others.length) { kv(t, "next references", c.others.join("; "), "path"); }
    d.appendChild(t);
    var ch = el("table", {"class": "channels"});
    var hr = el("tr");
    ["channel", "value", "standardised", "review at", "takedown at"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
    ch.appendChild(hr);
    c.channels.forEach(function (x) {
      var tr = el("tr", x.fired ? {"class": "fired", "data-channel": x.name} : {"data-channel": x.name});
      tr.appendChild(el("td", null, x.name + (x.fired ? " \u2190 fired" : "")));
      tr.appendChild(el("td", {"class": "num"}, x.value));
      tr.appendChild(el("td", {"class": "num"}, x.z));
      tr.appendChild(el("td", {"class": "num"}, x.review));
      tr.appendChild(el("td", {"class": "num"}, x.takedown));
      ch.appendChild(tr);
    });
    d.appendChild(el("div", {"class": "meta"}, "channels (value: structure, colour, learned in standard deviations " +
      "of the worst cells; text: OCR distance 0..1. Standardised: on the raw score's scale; the largest is the raw score)"));
    d.appendChild(ch);
    if (c.text.length) {
      var tt = el("table", {"class": "ocr"});
      var th = el("tr");
      ["references read", "this photo reads", "confidence", "distance", "counted"].forEach(function (h) { th.appendChild(el("th", null, h)); });
      tt.appendChild(th);
      c.text.forEach(function (x) {
        var tr = el("tr");
        [x.expected, x.read, x.confidence, x.distance, x.counted].forEach(function (v) { tr.appendChild(el("td", null, v)); });
        tt.appendChild(tr);
      });
      d.appendChild(el("div", {"class": "meta"}, "wordmark text (OCR); a misread counts only where the strokes changed too"));
      d.appendChild(tt);
    } else {
      d.appendChild(el("div", {"class": "meta"}, c.text_status));
    }
    return d;
  }

  function card(c) {
    var s = el("section", {"class": "card", id: "card-" + c.n, "data-verdict": c.verdict, "data-score": c.score,
                           "data-source": c.path, "data-channel": c.fired});
    var h = el("h3");
    h.appendChild(badge(c.verdict));
    h.appendChild(el("span", {"class": "score"}, "score " + c.score_text));
    h.appendChild(el("span", null, c.brand + " / " + c.product));
    h.appendChild(el("span", {"class": "path"}, c.path));
    s.appendChild(h);
    var figs = el("div", {"class": "figs"});
    figs.appendChild(photoFigure(c));
    cropFigures(c).forEach(function (f) { figs.appendChild(f); });
    figs.appendChild(facts(c));
    s.appendChild(figs);
    return s;
  }

  buildControls();
  render();
}());
