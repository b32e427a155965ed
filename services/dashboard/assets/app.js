// The live page: one server-sent event a second carries the whole view
// (see fleet_dashboard::view::View); this script only renders it.
(function () {
  "use strict";
  var statusEl = document.getElementById("status");
  var lastUpdate = 0;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function sparkline(points) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 60 20");
    svg.setAttribute("preserveAspectRatio", "none");
    var max = Math.max.apply(null, points.concat([1]));
    var offset = 60 - points.length;
    var coords = points.map(function (v, i) {
      return (offset + i) + "," + (19 - (v / max) * 18).toFixed(2);
    });
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", coords.join(" "));
    svg.appendChild(line);
    return svg;
  }

  function tile(t) {
    var cls = t.open_hosts === 0 ? "" : (t.open_hosts === t.hosts ? " open" : " partial");
    var d = el("div", { "class": "tile" + cls, "id": "tile-" + t.name, "data-circuit": t.circuit });
    d.appendChild(el("div", { "class": "name" }, t.name));
    d.appendChild(el("div", { "class": "circuit" }, "circuit " + t.circuit));
    var dl = el("dl");
    [["rate", t.rate.toFixed(1) + "/s"], ["errors", t.error_percent.toFixed(1) + " %"],
     ["p50", t.p50_ms + " ms"], ["p99", t.p99_ms + " ms"],
     ["short-circuited", t.short_circuited], ["timeouts", t.timeouts],
     ["rejected", t.rejected], ["hosts", t.hosts]].forEach(function (kv) {
      dl.appendChild(el("dt", null, kv[0]));
      dl.appendChild(el("dd", null, kv[1]));
    });
    d.appendChild(dl);
    d.appendChild(sparkline(t.sparkline));
    return d;
  }

  function rows(tableId, data, cells) {
    var body = document.querySelector("#" + tableId + " tbody");
    body.textContent = "";
    data.forEach(function (r) {
      var tr = el("tr");
      cells(r).forEach(function (c) {
        var td = el("td", c[1] ? { "class": c[1] } : null, c[0]);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    if (data.length === 0) {
      var tr = el("tr");
      tr.appendChild(el("td", { "colspan": "7", "class": "empty" }, "none"));
      body.appendChild(tr);
    }
  }

  function render(v) {
    var tiles = document.getElementById("tiles");
    tiles.textContent = "";
    if (v.tiles.length === 0) { tiles.appendChild(el("p", { "class": "empty" }, "no dependency calls reported yet")); }
    v.tiles.forEach(function (t) { tiles.appendChild(tile(t)); });
    rows("pools", v.pools, function (p) { return [[p.name], [p.active], [p.limit], [p.rejected, p.rejected ? "bad" : ""]]; });
    rows("versions", v.catalog_versions, function (s) { return [[s.version], [s.instances], [s.rate.toFixed(1)], [s.percent.toFixed(1) + " %"]]; });
    var r = v.catalog_routes;
    document.getElementById("routes").textContent = r
      ? "route table in force: " + Object.keys(r.weights).map(function (k) { return k + " = " + r.weights[k]; }).join(", ") + (r.sticky ? " (sticky by user)" : "")
      : "route table in force: none (every eligible version)";
    rows("instances", v.instances, function (i) {
      return [[i.service], [i.version], [i.instance_id], [i.health, i.health === "ready" ? "ok" : "bad"],
              [i.streaming ? "yes" : "no", i.streaming ? "ok" : "bad"], [i.restarts, i.restarts ? "bad" : ""],
              [i.served_per_s === null ? "–" : i.served_per_s.toFixed(1)]];
    });
    var faults = [];
    v.faults.forEach(function (f) {
      f.rules.forEach(function (rule) { faults.push({ who: f.service + " " + f.version + " " + f.instance_id, rule: rule }); });
    });
    rows("faults", faults, function (f) { return [[f.who], [JSON.stringify(f.rule.spec || f.rule), "bad"]]; });
    lastUpdate = Date.now();
    document.body.setAttribute("data-updated", String(v.time_ms));
    statusEl.className = "status";
    statusEl.textContent = v.instances.length + " instances · " + v.source +
      (v.discovery_error ? " · " + v.discovery_error : "") + " · " + new Date(v.time_ms).toLocaleTimeString();
  }

  // A dashboard with a viewer token is opened as /?access_token=…: the
  // streams and links carry it on (EventSource cannot send headers).
  var token = new URLSearchParams(window.location.search).get("access_token");
  var withToken = function (path) {
    return token ? path + (path.indexOf("?") < 0 ? "?" : "&") + "access_token=" + encodeURIComponent(token) : path;
  };
  document.querySelectorAll("a[data-data-link]").forEach(function (a) {
    a.setAttribute("href", withToken(a.getAttribute("href")));
  });
  var source = new EventSource(withToken("/dashboard.stream"));
  source.onmessage = function (e) {
    try { render(JSON.parse(e.data)); } catch (err) { statusEl.textContent = "bad update: " + err; }
  };
  setInterval(function () {
    if (Date.now() - lastUpdate > 3000) {
      statusEl.className = "status stale";
      statusEl.textContent = "no update for " + Math.round((Date.now() - lastUpdate) / 1000) + " s — reconnecting…";
    }
  }, 1000);
})();
