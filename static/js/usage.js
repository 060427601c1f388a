/* Usage charts: each counter's running total over the days of the billing period,
   with its plan limit as a dashed line (Chart.js, static/vendor/chartjs). The server
   sends the points already summed by day. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("usage-data").textContent);
  if (typeof Chart === "undefined") { return; }
  var DAY = 86400000;
  var start = Date.parse(data.start + "T00:00:00Z");
  var end = Date.parse(data.end + "T00:00:00Z");
  var days = Math.round((end - start) / DAY);
  var fmt = new Intl.DateTimeFormat(undefined, { timeZone: "UTC", month: "short", day: "numeric" });
  document.querySelectorAll("canvas.usage-chart").forEach(function (canvas) {
    var s = data.series[Number(canvas.dataset.index)];
    // Day n of the period is x = n (0-based); each point at the end of its day.
    var points = s.points.map(function (p) {
      return { x: (Date.parse(p[0] + "T00:00:00Z") - start) / DAY + 1, y: p[1] };
    });
    var sets = [{
      label: s.label, data: points, borderColor: "#1a73e8", backgroundColor: "#1a73e8",
      pointRadius: points.length < 15 ? 3 : 0, stepped: false, fill: false
    }];
    if (s.limit !== null) {
      sets.push({
        label: "Limit", data: [{ x: 0, y: s.limit }, { x: days, y: s.limit }],
        borderColor: "#c5221f", borderDash: [6, 4], pointRadius: 0, fill: false
      });
    }
    canvas.chart = new Chart(canvas, {
      type: "line",
      data: { datasets: sets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false, parsing: false,
        scales: {
          x: { type: "linear", min: 0, max: days, ticks: {
            stepSize: 5, maxRotation: 0,
            callback: function (v) { return fmt.format(new Date(start + v * DAY)); } } },
          y: { beginAtZero: true }
        },
        plugins: { legend: { display: s.limit !== null } }
      }
    });
  });
  document.documentElement.dataset.usageCharts = String(data.series.length);
})();
