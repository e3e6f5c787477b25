// The dashboard's progressive enhancements: every page works without this script.
// - charts: each table[data-chart] is drawn with Chart.js into its .canvas-box;
// - the timeline: with data-live, job events (Server-Sent Events) refresh its rows;
// - copy buttons: [data-copy] copies the named input's value.
"use strict";

(function () {
  var PALETTE = ["#0b57d0", "#b3261e", "#0b7a3b", "#8a5a00"];

  function number(text) {
    var value = parseFloat(text);
    return isNaN(value) ? null : value;
  }

  function drawCharts() {
    if (typeof window.Chart !== "function") {
      return;
    }
    document.querySelectorAll("table[data-chart]").forEach(function (table) {
      var box = document.querySelector('[data-chart-for="' + table.id + '"]');
      if (!box) {
        return;
      }
      var heads = Array.prototype.slice.call(table.querySelectorAll("thead th")).slice(1);
      var rows = Array.prototype.slice.call(table.querySelectorAll("tbody tr"));
      var labels = rows.map(function (row) { return row.cells[0].textContent.trim(); });
      var kind = table.dataset.chart === "line" ? "line" : "bar";
      var datasets = heads.map(function (head, i) {
        var colour = PALETTE[i % PALETTE.length];
        return {
          label: head.textContent.trim(),
          data: rows.map(function (row) { return number(row.cells[i + 1].textContent); }),
          borderColor: colour,
          backgroundColor: kind === "bar" ? colour + "cc" : colour,
          spanGaps: true,
          tension: 0.2
        };
      });
      var canvas = document.createElement("canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", table.dataset.title + ", " + table.dataset.unit +
        ", as a chart; the table below holds the same figures");
      box.appendChild(canvas);
      new window.Chart(canvas, {
        type: kind,
        data: { labels: labels, datasets: datasets },
        options: {
          animation: false,
          maintainAspectRatio: false,
          scales: { y: { beginAtZero: true, title: { display: true, text: table.dataset.unit } } },
          plugins: { legend: { display: datasets.length > 1 } }
        }
      });
    });
  }

  function liveTimeline() {
    var table = document.querySelector("table[data-live]");
    if (!table || typeof window.EventSource !== "function") {
      return;
    }
    var status = document.getElementById("live-status");
    var pending = null;
    function refresh() {
      pending = null;
      fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("timeline-rows");
          var rows = document.getElementById("timeline-rows");
          if (fresh && rows) {
            rows.replaceWith(fresh);
            if (status) {
              status.textContent = "Updated at " + new Date().toLocaleTimeString() + ". New jobs appear here as they start.";
            }
          }
        })
        .catch(function () {
          if (status) {
            status.textContent = "Could not refresh the timeline; reload the page to see new jobs.";
          }
        });
    }
    var source = new EventSource(table.dataset.live);
    source.onmessage = function () {};
    ["job:queued", "job:started", "job:completed"].forEach(function (type) {
      source.addEventListener(type, function () {
        // Several events at once refresh once.
        if (pending === null) {
          pending = window.setTimeout(refresh, 500);
        }
      });
    });
  }

  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      var input = document.getElementById(button.dataset.copy);
      var said = document.querySelector('[data-copied="' + button.dataset.copy + '"]');
      if (!input || !navigator.clipboard) {
        return;
      }
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(input.value).then(function () {
          if (said) {
            said.textContent = "Copied.";
          }
        }, function () {
          input.select();
        });
      });
    });
  }

  function start() {
    drawCharts();
    liveTimeline();
    copyButtons();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
