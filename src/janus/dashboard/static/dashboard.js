// Janus dashboard: live refresh of the page's numbers. Polls the page's JSON twin (body
// data-live) and writes every value with textContent: nothing from Redis becomes markup.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-live");
  if (!url) {
    return;
  }
  var every = parseInt(body.getAttribute("data-refresh-ms") || "2000", 10);
  var state = document.getElementById("live-state");
  var shownKeys = body.getAttribute("data-keys");

  function setText(el, text) {
    if (el.textContent !== text) {
      el.textContent = text;
    }
  }

  function cell(value) {
    var td = document.createElement("td");
    if (value !== null && typeof value === "object") {
      var a = document.createElement("a");
      a.setAttribute("href", value.href);
      a.textContent = value.text;
      td.appendChild(a);
    } else {
      td.textContent = String(value);
    }
    return td;
  }

  function apply(data) {
    if (shownKeys !== null && data.keys && JSON.stringify(data.keys) !== shownKeys) {
      window.location.reload(); // a dependency came or went: draw the page again
      return;
    }
    var values = data.values || {};
    document.querySelectorAll("[data-k]").forEach(function (el) {
      var k = el.getAttribute("data-k");
      if (Object.prototype.hasOwnProperty.call(values, k)) {
        setText(el, values[k]);
      }
    });
    var levels = data.levels || {};
    document.querySelectorAll("[data-level]").forEach(function (el) {
      var level = levels[el.getAttribute("data-level")];
      if (level) {
        el.classList.remove("level-ok", "level-warn", "level-bad");
        el.classList.add("level-" + level);
      }
    });
    var lists = data.lists || {};
    document.querySelectorAll("tbody[data-list]").forEach(function (tbody) {
      var rows = lists[tbody.getAttribute("data-list")];
      if (!rows || !rows.length) {
        return; // keep the "nothing yet" row
      }
      var fresh = document.createDocumentFragment();
      rows.forEach(function (row) {
        var tr = document.createElement("tr");
        row.forEach(function (value) {
          tr.appendChild(cell(value));
        });
        fresh.appendChild(tr);
      });
      tbody.replaceChildren(fresh);
    });
    var chart = data.chart;
    if (chart) {
      var started = document.getElementById("chart-started");
      var failed = document.getElementById("chart-failed");
      var rate = document.getElementById("chart-rate");
      if (started) started.setAttribute("points", chart.started);
      if (failed) failed.setAttribute("points", chart.failed);
      if (rate) {
        rate.setAttribute("y1", chart.rate_y || "0");
        rate.setAttribute("y2", chart.rate_y || "0");
        rate.setAttribute("visibility", chart.rate_y ? "visible" : "hidden");
      }
    }
    if (state) {
      setText(state, "live · Redis time " + data.now);
      state.classList.remove("stale");
    }
  }

  function fail(message) {
    if (state) {
      setText(state, "NOT LIVE: " + message);
      state.classList.add("stale");
    }
  }

  function tick() {
    if (document.hidden) {
      window.setTimeout(tick, every); // no reads for a tab nobody looks at
      return;
    }
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().then(function (data) {
          if (!r.ok) {
            throw new Error(r.status === 401 ? "signed out" : data.error || "HTTP " + r.status);
          }
          return data;
        });
      })
      .then(apply)
      .catch(function (e) {
        fail(e.message || String(e));
      })
      .finally(function () {
        window.setTimeout(tick, every);
      });
  }

  window.setTimeout(tick, every);
})();
