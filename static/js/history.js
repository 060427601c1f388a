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
    : (data.range === "week" ? { timeZone: tz, weekday: "short", day: "numeric" }
      : { timeZone: tz, month: "short", day: "numeric" }));
  var full = new Intl.DateTimeFormat(undefined, {
    timeZone: tz, weekday: "short", month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", hourCycle: "h23"
  });
  // A week on a phone-wide chart: the weekday alone, so eight labels fit.
  var narrow = new Intl.DateTimeFormat(undefined, { timeZone: tz, weekday: "short" });
  function label(seconds, scale) {
    var f = data.range === "week" && scale && scale.width < 480 ? narrow : fmt;
    return f.format(new Date(seconds * 1000));
  }
  // Ticks on round local times: every 3 h over a day, each midnight over a week,
  // every 5th midnight over a month (the pool's offset at the range's end); half as
  // many on a phone-wide chart, except a week's days.
  var step = data.range === "day" ? 3 * 3600 : (data.range === "week" ? 86400 : 5 * 86400);
  function roundTicks(scale) {
    var ticks = [];
    var step2 = scale.width < 480 && data.range !== "week" ? step * 2 : step;
    var first = Math.ceil((scale.min + data.offset) / step2) * step2 - data.offset;
    for (var v = first; v <= scale.max; v += step2) { ticks.push({ value: v }); }
    scale.ticks = ticks;
  }
  function axis(pad) {
    return {
      type: "linear", min: data.start - (pad || 0), max: data.end + (pad || 0),
      afterBuildTicks: roundTicks,
      ticks: { callback: function (v) { return label(v, this); }, autoSkip: false,
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
