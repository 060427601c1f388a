/* History charts: the server sends already bucketed series (≤ ~360 points), so this
   only hands them to Chart.js (static/vendor/chartjs). Times are shown in the pool's
   time zone; the x axis always spans the whole range asked for. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("history-data").textContent);
  if (typeof Chart === "undefined") { return; }
  var tz = data.timezone;
  var fmt = new Intl.DateTimeFormat(undefined, data.range === "day"
    ? { timeZone: tz, hour: "2-digit", minute: "2-digit", hourCycle: "h23" }
    : { timeZone: tz, month: "short", day: "numeric" });
  var full = new Intl.DateTimeFormat(undefined, {
    timeZone: tz, weekday: "short", month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", hourCycle: "h23"
  });
  function label(seconds) { return fmt.format(new Date(seconds * 1000)); }
  function axis(pad) {
    return {
      type: "linear", min: data.start - (pad || 0), max: data.end + (pad || 0),
      ticks: { callback: function (v) { return label(v); }, maxTicksLimit: 7,
        maxRotation: 0 }
    };
  }
  var common = {
    responsive: true, maintainAspectRatio: false, animation: false, parsing: false,
    normalized: true, interaction: { mode: "nearest", axis: "x", intersect: false },
    plugins: {
      tooltip: { callbacks: { title: function (items) {
        return items.length ? full.format(new Date(items[0].parsed.x * 1000)) : "";
      } } }
    }
  };

  var tEl = document.getElementById("temperature-chart");
  if (tEl) {
    var avg = [], min = [], max = [];
    data.temperature.forEach(function (p) {
      avg.push({ x: p[0], y: p[1] }); min.push({ x: p[0], y: p[2] });
      max.push({ x: p[0], y: p[3] });
    });
    // Few points (a new device): draw them as dots, a line alone would not show.
    var dots = avg.length < 30 ? 3 : 0;
    new Chart(tEl, {
      type: "line",
      data: { datasets: [
        { label: "Max", data: max, borderWidth: 0, pointRadius: 0, fill: "+1",
          backgroundColor: "rgba(10,110,189,.12)" },
        { label: "Min", data: min, borderWidth: 0, pointRadius: 0, fill: false },
        { label: "Average", data: avg, borderColor: "#0a6ebd", borderWidth: 2,
          pointRadius: dots, pointBackgroundColor: "#0a6ebd", tension: 0.2 }
      ] },
      options: Object.assign({}, common, {
        scales: {
          x: axis(),
          y: { title: { display: true, text: "°C" }, grace: 0.5,
            ticks: { callback: function (v) { return Number(v).toFixed(1); } } }
        },
        plugins: Object.assign({}, common.plugins, {
          legend: { labels: { filter: function (i) { return i.text === "Average"; } } }
        })
      })
    });
  }

  var rEl = document.getElementById("runtime-chart");
  if (rEl) {
    var half = data.runtime_size / 2;
    // A day is drawn in minutes per hour, longer ranges in hours per day.
    var scale = data.range === "day" ? 60 : 1;
    var m1 = [], m2 = [];
    data.runtime.forEach(function (p) {
      m1.push({ x: p[0] + half, y: +(p[2] * scale).toFixed(2) });
      m2.push({ x: p[0] + half, y: +(p[3] * scale).toFixed(2) });
    });
    var bar = { stack: "pump", maxBarThickness: 28, barPercentage: 0.9,
      categoryPercentage: 1 };
    new Chart(rEl, {
      type: "bar",
      data: { datasets: [
        Object.assign({ label: data.mode1_name, data: m1, backgroundColor: "#0a6ebd" }, bar),
        Object.assign({ label: data.mode2_name, data: m2, backgroundColor: "#1a8a3a" }, bar)
      ] },
      options: Object.assign({}, common, {
        scales: {
          x: Object.assign(axis(half), { stacked: true }),
          y: { stacked: true, beginAtZero: true,
            title: { display: true, text: scale === 60 ? "minutes" : "hours" } }
        }
      })
    });
  }
})();
