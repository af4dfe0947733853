// blurbeam review: draw boxes on missed faces, mark false positives, export corrections.json.
// Boxes are kept in the source image's upright pixel frame (the audit's frame): the overlay's
// viewBox is the record's width x height, whatever size the image is shown at.
(function () {
  "use strict";
  var FORMAT = "blurbeam-corrections/1";
  var dataEl = document.getElementById("review-data");
  var site = JSON.parse(dataEl.textContent);
  var storeKey = "blurbeam-review-corrections:" + site.output;

  function loadStore() {
    try {
      return JSON.parse(window.localStorage.getItem(storeKey) || "{}");
    } catch (e) {
      return {};
    }
  }
  function saveStore(store) {
    try {
      window.localStorage.setItem(storeKey, JSON.stringify(store));
    } catch (e) {
      // no storage for this page (some browsers on file://): export holds this page only
    }
  }
  function documentFor(entries) {
    return {
      format: FORMAT,
      output: site.output,
      run_id: site.run_id,
      exported_at: new Date().toISOString(),
      corrections: entries,
    };
  }
  function download(doc) {
    var blob = new Blob([JSON.stringify(doc, null, 2) + "\n"], { type: "application/json" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "corrections.json";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 1000);
  }
  function storedEntries() {
    var store = loadStore();
    return Object.keys(store).sort().map(function (k) {
      return store[k];
    }).filter(function (e) {
      return e.missed_faces.length || e.false_positives.length || e.note;
    });
  }

  window.blurbeamReview = { corrections: function () { return documentFor(storedEntries()); } };

  var exportAll = document.getElementById("export-all");
  if (exportAll) {
    var count = document.getElementById("stored-count");
    if (count) count.textContent = String(storedEntries().length);
    exportAll.addEventListener("click", function () {
      download(documentFor(storedEntries()));
    });
  }

  var image = site.image;
  var svg = document.getElementById("overlay");
  if (!image || !svg) return;
  var NS = "http://www.w3.org/2000/svg";
  var W = image.width, H = image.height;
  var state = loadStore()[image.source_uri] || {};
  var missed = (state.missed_faces || []).slice();
  var fp = {};
  (state.false_positives || []).forEach(function (b) {
    image.faces.forEach(function (f, i) {
      if (Math.abs(f.x - b.x) < 0.5 && Math.abs(f.y - b.y) < 0.5) fp[i] = true;
    });
  });
  var note = document.getElementById("note");
  if (note && state.note) note.value = state.note;

  function entry() {
    var fps = [];
    image.faces.forEach(function (f, i) {
      if (fp[i]) fps.push({ x: f.x, y: f.y, w: f.w, h: f.h });
    });
    return {
      source_uri: image.source_uri,
      source_sha256: image.source_sha256,
      width: W,
      height: H,
      missed_faces: missed.map(function (b) {
        return { x: b.x, y: b.y, w: b.w, h: b.h };
      }),
      false_positives: fps,
      note: note ? note.value : "",
    };
  }
  function persist() {
    var store = loadStore();
    store[image.source_uri] = entry();
    saveStore(store);
  }
  function rect(b, cls) {
    var r = document.createElementNS(NS, "rect");
    r.setAttribute("x", b.x);
    r.setAttribute("y", b.y);
    r.setAttribute("width", b.w);
    r.setAttribute("height", b.h);
    r.setAttribute("class", cls);
    return r;
  }
  function render() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    image.faces.forEach(function (f, i) {
      var r = rect(f, "detector" + (f.source === "reviewer" ? " reviewer" : "") + (fp[i] ? " fp" : ""));
      r.setAttribute("data-face", String(i));
      var t = document.createElementNS(NS, "title");
      t.textContent = (f.source === "reviewer" ? "reviewer box" : "score " + f.score.toFixed(3)) +
        (fp[i] ? " (marked false positive)" : " (click to mark as false positive)");
      r.appendChild(t);
      svg.appendChild(r);
    });
    missed.forEach(function (b) {
      svg.appendChild(rect(b, "reviewer"));
    });
    var list = document.getElementById("missed-list");
    if (list) {
      list.textContent = "";
      missed.forEach(function (b, i) {
        var li = document.createElement("li");
        li.textContent = "x " + Math.round(b.x) + ", y " + Math.round(b.y) + ", " +
          Math.round(b.w) + " x " + Math.round(b.h) + " px ";
        var del = document.createElement("button");
        del.textContent = "remove";
        del.addEventListener("click", function () {
          missed.splice(i, 1);
          persist();
          render();
        });
        li.appendChild(del);
        list.appendChild(li);
      });
    }
    var nfp = document.getElementById("fp-count");
    if (nfp) nfp.textContent = String(Object.keys(fp).filter(function (k) { return fp[k]; }).length);
  }
  function toImage(ev) {
    var r = svg.getBoundingClientRect();
    var x = ((ev.clientX - r.left) * W) / r.width;
    var y = ((ev.clientY - r.top) * H) / r.height;
    return { x: Math.max(0, Math.min(W, x)), y: Math.max(0, Math.min(H, y)) };
  }

  var start = null, drawing = null;
  svg.addEventListener("mousedown", function (ev) {
    if (ev.button !== 0) return;
    var face = ev.target.getAttribute && ev.target.getAttribute("data-face");
    if (face !== null && face !== undefined && image.faces[+face].source !== "reviewer") {
      fp[+face] = !fp[+face];
      persist();
      render();
      ev.preventDefault();
      return;
    }
    start = toImage(ev);
    drawing = rect({ x: start.x, y: start.y, w: 0, h: 0 }, "drawing");
    svg.appendChild(drawing);
    ev.preventDefault();
  });
  window.addEventListener("mousemove", function (ev) {
    if (!start) return;
    var p = toImage(ev);
    drawing.setAttribute("x", Math.min(start.x, p.x));
    drawing.setAttribute("y", Math.min(start.y, p.y));
    drawing.setAttribute("width", Math.abs(p.x - start.x));
    drawing.setAttribute("height", Math.abs(p.y - start.y));
  });
  window.addEventListener("mouseup", function (ev) {
    if (!start) return;
    var p = toImage(ev);
    var b = {
      x: Math.min(start.x, p.x),
      y: Math.min(start.y, p.y),
      w: Math.abs(p.x - start.x),
      h: Math.abs(p.y - start.y),
    };
    start = null;
    if (b.w >= 2 && b.h >= 2) {
      missed.push(b);
      persist();
    }
    render();
  });
  if (note) note.addEventListener("input", persist);
  var exportOne = document.getElementById("export");
  if (exportOne) {
    exportOne.addEventListener("click", function () {
      persist();
      var entries = storedEntries();
      if (!entries.some(function (e) { return e.source_uri === image.source_uri; })) {
        entries.push(entry());
      }
      download(documentFor(entries));
    });
  }
  var clear = document.getElementById("clear");
  if (clear) {
    clear.addEventListener("click", function () {
      missed = [];
      fp = {};
      if (note) note.value = "";
      var store = loadStore();
      delete store[image.source_uri];
      saveStore(store);
      render();
    });
  }
  var toggle = document.getElementById("toggle-original");
  if (toggle) {
    var img = document.getElementById("photo");
    toggle.addEventListener("click", function () {
      var showingOriginal = img.getAttribute("src") === image.original;
      img.setAttribute("src", showingOriginal ? image.anonymized : image.original);
      toggle.textContent = showingOriginal ? "show original (identifiable)" : "show anonymized";
    });
  }
  render();
})();
