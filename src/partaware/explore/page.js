// partaware explore: the page's behaviour. Data: the JSON in #explore-data (see explore/export.py
// for the token layout). Everything runs from this file: no server, no network.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("explore-data").textContent);
  var N = DATA.images.length;
  var decoded = {};            // "model|block" -> Float32Array of unit tokens (n, h*w, d)
  var state = {block: null, query: null, partQuery: null};

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { e.appendChild(c); });
    return e;
  }

  // IEEE half -> float (exact: every float16 value is a float32 value)
  function halfToFloat(h) {
    var s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return s * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * (1 + f / 1024) * Math.pow(2, e - 15);
  }

  // float16 tokens -> float32 tokens of unit length, as export.unit_tokens does in Python
  function unitTokens(block) {
    var bin = atob(block.tokens), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var view = new DataView(bytes.buffer), n = bytes.length / 2, d = block.d;
    var out = new Float32Array(n);
    for (i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
    for (var o = 0; o < n; o += d) {
      var s = 0;
      for (var j = 0; j < d; j++) s += out[o + j] * out[o + j];
      var norm = Math.max(Math.fround(Math.sqrt(s)), Math.fround(1e-12));
      for (j = 0; j < d; j++) out[o + j] = out[o + j] / norm;
    }
    return out;
  }

  function blockOf(model) {
    return model.blocks.filter(function (b) { return b.name === state.block; })[0] || model.blocks[model.blocks.length - 1];
  }

  function tokensOf(model, block) {
    var key = model.name + "|" + block.name;
    if (!decoded[key]) decoded[key] = unitTokens(block);
    return decoded[key];
  }

  // cosine similarity of token t of image i with every token of every image: (n, h*w) in float32
  function similarities(model, block, i, t) {
    var x = tokensOf(model, block), d = block.d, T = block.h * block.w;
    var q = x.subarray((i * T + t) * d, (i * T + t + 1) * d), out = new Float32Array(N * T);
    for (var r = 0; r < N * T; r++) {
      var s = 0, o = r * d;
      for (var j = 0; j < d; j++) s += q[j] * x[o + j];
      out[r] = s;
    }
    return out;
  }

  // a perceptual dark-to-bright colour ramp (magma-like) for values in [0, 1]
  var RAMP = [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]];
  function ramp(v) {
    v = Math.min(1, Math.max(0, v)) * (RAMP.length - 1);
    var k = Math.min(RAMP.length - 2, Math.floor(v)), f = v - k, a = RAMP[k], b = RAMP[k + 1];
    return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
  }

  function heatCanvas(values, h, w, lo, hi) {
    var c = el("canvas", {width: w, height: h, cls: "heat"}), ctx = c.getContext("2d");
    var img = ctx.createImageData(w, h);
    for (var t = 0; t < h * w; t++) {
      var rgb = ramp((values[t] - lo) / Math.max(hi - lo, 1e-12));
      img.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * t);
    }
    ctx.putImageData(img, 0, 0);
    return c;
  }

  function marker(cls, fx, fy) {
    var m = el("div", {cls: cls});
    m.style.left = (100 * fx) + "%";
    m.style.top = (100 * fy) + "%";
    return m;
  }

  function tile(i, extra) {
    var t = el("div", {cls: "tile", "data-image": DATA.images[i].key, "data-index": String(i)},
               [el("img", {src: DATA.images[i].src, alt: DATA.images[i].key, draggable: "false"})]);
    t.addEventListener("click", function (ev) {
      var r = t.getBoundingClientRect();
      query(i, (ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height);
    });
    (extra || []).forEach(function (c) { t.appendChild(c); });
    return t;
  }

  function query(i, fx, fy) {
    state.query = {image: i, fx: Math.min(Math.max(fx, 0), 0.999999), fy: Math.min(Math.max(fy, 0), 0.999999)};
    render();
  }

  function renderGallery() {
    var g = document.getElementById("gallery");
    g.textContent = "";
    DATA.images.forEach(function (im, i) {
      var q = state.query, extra = [el("div", {cls: "caption", text: im.key})];
      if (q && q.image === i) extra.push(marker("cross", q.fx, q.fy));
      var t = tile(i, extra);
      if (q && q.image === i) t.classList.add("query");
      g.appendChild(t);
    });
  }

  function renderCompare() {
    var box = document.getElementById("compare"), q = state.query;
    box.textContent = "";
    if (!q) {
      box.appendChild(el("p", {cls: "hint", text: "Click any point of any image to see where each encoder matches it."}));
      return;
    }
    document.getElementById("status").setAttribute("data-query", DATA.images[q.image].key);
    DATA.models.forEach(function (model) {
      var b = blockOf(model), T = b.h * b.w;
      var t = Math.floor(q.fy * b.h) * b.w + Math.floor(q.fx * b.w);
      var sims = similarities(model, b, q.image, t), lo = Infinity, hi = -Infinity;
      for (var r = 0; r < N * T; r++) {
        if (Math.floor(r / T) === q.image) continue;
        lo = Math.min(lo, sims[r]); hi = Math.max(hi, sims[r]);
      }
      var grid = el("div", {cls: "grid"});
      for (var j = 0; j < N; j++) {
        if (j === q.image) continue;
        var vals = sims.subarray(j * T, (j + 1) * T), best = 0;
        for (var k = 1; k < T; k++) if (vals[k] > vals[best]) best = k;
        var bx = (best % b.w + 0.5) / b.w, by = (Math.floor(best / b.w) + 0.5) / b.h;
        var cell = tile(j, [heatCanvas(vals, b.h, b.w, lo, hi), marker("best", bx, by),
                            el("div", {cls: "caption", text: DATA.images[j].key + "  " + vals[best].toFixed(3)})]);
        cell.classList.add("match");
        cell.setAttribute("data-model", model.name);
        cell.setAttribute("data-best", String(best));
        cell.setAttribute("data-sim", String(vals[best]));
        grid.appendChild(cell);
      }
      var head = el("h3", {text: model.name});
      var sub = el("div", {cls: "sub", text: b.label + ", " + b.h + " x " + b.w + " tokens of " + b.d +
                           " dims; query token " + t + "; colour: min to max over the other images (" +
                           lo.toFixed(3) + " to " + hi.toFixed(3) + "); ring: each image's best match"});
      var col = el("div", {cls: "model", "data-model": model.name, "data-query-token": String(t)}, [head, sub, grid]);
      box.appendChild(col);
    });
  }

  function renderPca() {
    var box = document.getElementById("pca");
    box.textContent = "";
    DATA.models.forEach(function (model) {
      var b = blockOf(model), row = el("div", {cls: "grid"});
      model.pca[b.name].forEach(function (src, i) {
        var t = tile(i, [el("img", {src: src, cls: "pcs", alt: "PCA"})]);
        row.appendChild(t);
      });
      box.appendChild(el("div", {cls: "model wide"}, [el("h3", {text: model.name + ": " + b.label}), row]));
    });
  }

  function renderParts() {
    var box = document.getElementById("parts"), P = DATA.parts;
    box.textContent = "";
    if (!P) {
      document.getElementById("parts-section").hidden = true;
      return;
    }
    var list = el("div", {cls: "queries"});
    P.queries.forEach(function (q, qi) {
      var b = el("button", {cls: "pq" + (state.partQuery === qi ? " on" : ""), "data-row": String(q.row),
                            title: q.part + " of " +
                            DATA.images[q.image].key}, [el("img", {src: P.thumbs[q.thumb], alt: q.part}),
                                                          el("span", {text: q.part})]);
      b.addEventListener("click", function () { state.partQuery = qi; renderParts(); });
      list.appendChild(b);
    });
    box.appendChild(list);
    if (state.partQuery === null) return;
    var q = P.queries[state.partQuery];
    var qimg = tile(q.image, [marker("box", q.box[0], q.box[1])]);
    var m = qimg.lastChild;
    m.style.width = (100 * (q.box[2] - q.box[0])) + "%";
    m.style.height = (100 * (q.box[3] - q.box[1])) + "%";
    var rows = el("div", {cls: "nbrows"});
    DATA.models.forEach(function (model) {
      var nbs = q.neighbours[model.name] || [], same = nbs.filter(function (n) { return n[2]; }).length;
      var row = el("div", {cls: "nbrow", "data-model": model.name},
                   [el("div", {cls: "nbname", text: model.name + ": " + same + "/" + nbs.length + " same part"})]);
      nbs.forEach(function (n) {
        row.appendChild(el("figure", {cls: n[2] ? "same" : "other", title: n[1] + ", cosine " + n[3],
                                      "data-row": String(n[4])},
                           [el("img", {src: P.thumbs[n[0]], alt: n[1]}), el("figcaption", {text: n[1]})]));
      });
      rows.appendChild(row);
    });
    box.appendChild(el("div", {cls: "partview"}, [qimg, rows]));
  }

  function render() {
    renderGallery();
    renderCompare();
    renderPca();
  }

  function init() {
    var names = DATA.models[0].blocks.map(function (b) { return b.name; });
    state.block = names[names.length - 1];
    var sel = document.getElementById("block");
    DATA.models[0].blocks.forEach(function (b) { sel.appendChild(el("option", {value: b.name, text: b.label})); });
    sel.value = state.block;
    sel.addEventListener("change", function () { state.block = sel.value; render(); });
    var notes = document.getElementById("notes");
    DATA.notes.forEach(function (n) { notes.appendChild(el("li", {text: n})); });
    if (DATA.left_out.length) {
      notes.appendChild(el("li", {text: DATA.left_out.length + " image(s) left out: " + DATA.left_out.map(
        function (x) { return x.key + " (" + x.reason + ")"; }).join("; ")}));
    }
    document.getElementById("summary").textContent = N + " images of " + DATA.dataset + " (" + DATA.store +
      " stores, " + DATA.input_size + " px input), " + DATA.models.length + " encoders: " +
      DATA.models.map(function (m) { return m.name; }).join(", ");
    render();
    renderParts();
    document.body.setAttribute("data-ready", "1");
  }

  init();
})();
