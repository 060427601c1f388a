/* The pools overview, live: /ws/tenant/ sends one message per pool change; the rows
   of this page update in place (other pages' pools are ignored). */
(function () {
  "use strict";
  var table = document.getElementById("overview");
  if (!table) { return; }
  var status = document.getElementById("overview-conn");
  var retry = 0;

  function badge(text, cls) {
    var s = document.createElement("span");
    s.className = "badge" + (cls ? " " + cls : "");
    s.textContent = text;
    return s;
  }
  function put(cell, node, quiet) {
    if (!cell) { return; }
    var text = typeof node === "string" ? node : node.textContent;
    if (quiet && cell.textContent.trim() === text) { return; }
    cell.textContent = "";
    if (typeof node === "string") { cell.textContent = node; } else { cell.appendChild(node); }
    cell.classList.remove("flash");
    void cell.offsetWidth; // restart the highlight
    cell.classList.add("flash");
  }
  var ago = window.poolsaasAgo;

  function update(msg, quiet) {
    var row = table.querySelector('tr[data-pool="' + msg.pool + '"]');
    if (!row) { return; }
    var cell = function (f) { return row.querySelector('[data-field="' + f + '"]'); };
    var set = function (f, node) { put(cell(f), node, quiet); };
    var st = msg.state || {};
    if (msg.online !== null && msg.online !== undefined) {
      set("online", msg.online ? badge("online", "ok") : badge("offline", "bad"));
    }
    if (typeof st.temperature === "number") {
      set("temperature", st.temperature.toFixed(1) + " °C");
    }
    if (typeof st.pump === "boolean") {
      set("pump", st.pump ? badge("on", "ok") : badge("off"));
    }
    if (st.valve === 1 || st.valve === 2) {
      set("valve", row.getAttribute(st.valve === 1 ? "data-mode1" : "data-mode2"));
    }
    var seen = msg.last_seen || st.updated_at;
    if (seen) {
      cell("last_seen").setAttribute("data-ts", seen);
      set("last_seen", ago(seen));
    }
    var alert;
    if (msg.online === false) { alert = badge("offline", "bad"); }
    else if (st.wifi && typeof st.wifi.rssi === "number" && st.wifi.rssi < -70) {
      alert = badge("weak Wi-Fi", "warn");
    } else if (msg.online === true) { alert = "—"; }
    if (alert) { set("alerts", alert); }
  }

  setInterval(function () {
    var cells = table.querySelectorAll('[data-field="last_seen"][data-ts]');
    for (var i = 0; i < cells.length; i++) {
      var ts = cells[i].getAttribute("data-ts");
      if (ts) { cells[i].textContent = ago(ts); }
    }
  }, 30000);

  function connect() {
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") +
      location.host + "/ws/tenant/");
    ws.onmessage = function (e) {
      var msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      // Other parts of the page (static/js/alerts.js) follow the same socket.
      document.dispatchEvent(new CustomEvent("poolsaas:socket", { detail: msg }));
      if (msg.type === "hello") {
        retry = 0;
        status.textContent = "Live: rows update as devices report.";
        // Catch up on what changed while the page loaded or the socket was away.
        var codes = [];
        var rows = table.querySelectorAll("tr[data-pool]");
        for (var i = 0; i < rows.length; i++) { codes.push(rows[i].getAttribute("data-pool")); }
        ws.send(JSON.stringify({ type: "snapshot", pools: codes }));
      } else if (msg.type === "pools") {
        msg.pools.forEach(function (p) { update(p, true); });
      } else if (msg.type === "pool") { update(msg); }
    };
    ws.onclose = function (e) {
      if (e.code === 4403 || e.code === 4401) {
        status.textContent = "Live updates stopped: your access changed. Reload the page.";
        return;
      }
      status.textContent = "Live updates paused; reconnecting…";
      retry += 1;
      setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, retry - 1)) * (0.75 + Math.random() / 2));
    };
  }
  connect();
})();
