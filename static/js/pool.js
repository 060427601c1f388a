/* The live pool page: renders the server's snapshot, keeps a WebSocket to
   /ws/pools/<code>/ for deltas, and sends commands over it. Plain JS, no build step.
   A control shows "pending" until the device confirms; a failure says why. */
(function () {
  "use strict";

  var snap = JSON.parse(document.getElementById("pool-snapshot").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var pool = snap.pool;
  var device = snap.device; // null when the pool has no device
  var canControl = snap.can_control;
  var ws = null;
  var socketOpen = false;
  var retry = 0;
  var stopped = false; // closed for good (access withdrawn, pool gone)
  var refSeq = 0;
  var pending = {}; // ref -> {control, label, timer}
  var codeToRef = {};
  var countdown = null; // {base, at} for the live timer
  var skew = 0; // server clock minus browser clock, ms
  var refreshing = false; // a snapshot asked for after a command: pool part only
  var lastError = ""; // the server's last word not tied to a command

  // --- formatting -----------------------------------------------------------------
  var timeFmt = new Intl.DateTimeFormat(undefined, {
    timeZone: pool.timezone, hour: "2-digit", minute: "2-digit", hourCycle: "h23"
  });
  var dayFmt = new Intl.DateTimeFormat(undefined, {
    timeZone: pool.timezone, weekday: "short", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23"
  });

  function modeName(mode) {
    return mode === 2 ? pool.mode2_name : pool.mode1_name;
  }

  function mmss(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    var h = Math.floor(seconds / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return (h ? h + ":" + pad(m) : m) + ":" + pad(s);
  }

  // v3.1 thresholds: excellent >= -50 dBm, good >= -60, fair >= -70, else weak.
  function wifiQuality(wifi) {
    if (!wifi) { return null; }
    if (wifi.status === "disconnected") { return "disconnected"; }
    if (typeof wifi.rssi !== "number") { return wifi.quality || null; }
    if (wifi.rssi >= -50) { return "excellent"; }
    if (wifi.rssi >= -60) { return "good"; }
    if (wifi.rssi >= -70) { return "fair"; }
    return "weak";
  }

  function ago(iso) { return window.poolsaasAgo(iso, skew); }

  // --- rendering ------------------------------------------------------------------
  function reason() {
    if (!device) { return "This pool has no device yet."; }
    if (!canControl) {
      return "You are a viewer: you can watch this pool but not switch it.";
    }
    if (!socketOpen) { return "Reconnecting to poolsaas… the controls come back when the page is live again."; }
    if (!device.online) {
      return "The device is offline; the controls come back when it reconnects.";
    }
    return "";
  }

  function renderControls() {
    var why = reason();
    var box = $("controls-reason");
    box.textContent = why;
    box.hidden = !why;
    var buttons = document.querySelectorAll("[data-needs-control]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].disabled = !!why;
      if (why) { buttons[i].title = why; } else { buttons[i].removeAttribute("title"); }
    }
  }

  function renderConnection() {
    var d = $("device-conn");
    if (!device) {
      d.textContent = "no device"; d.className = "badge";
    } else if (device.online) {
      d.textContent = "device online"; d.className = "badge ok";
    } else if (!device.last_seen) {
      d.textContent = "never connected"; d.className = "badge";
    } else {
      d.textContent = "device offline"; d.className = "badge bad";
    }
    var p = $("page-conn");
    if (stopped) {
      p.textContent = "disconnected"; p.className = "badge bad";
    } else if (socketOpen) {
      p.textContent = "live"; p.className = "badge ok";
    } else {
      p.textContent = retry ? "reconnecting…" : "connecting…"; p.className = "badge warn";
    }
    var seen = $("last-seen");
    if (seen && device) { seen.textContent = ago(device.last_seen); }
  }

  function renderState() {
    var st = (device && device.state) || {};
    var pump = $("pump");
    if (!pendingFor("pump")) {
      pump.setAttribute("aria-checked", st.pump ? "true" : "false");
      $("pump-label").textContent = st.pump === undefined ? "—" : (st.pump ? "On" : "Off");
    }
    var segs = document.querySelectorAll("[data-valve]");
    for (var i = 0; i < segs.length; i++) {
      var on = String(st.valve) === segs[i].getAttribute("data-valve");
      segs[i].setAttribute("aria-pressed", on ? "true" : "false");
    }
    $("temperature").textContent =
      typeof st.temperature === "number" ? st.temperature.toFixed(1) + " °C" : "—";
    var q = wifiQuality(st.wifi);
    var wifi = $("wifi");
    wifi.textContent = q || "—";
    wifi.className = "badge" + (q ? " q-" + q : "");
    var detail = [];
    if (st.wifi && typeof st.wifi.rssi === "number") { detail.push(st.wifi.rssi + " dBm"); }
    if (st.wifi && st.wifi.ssid) { detail.push(st.wifi.ssid); }
    $("wifi-detail").textContent = detail.join(" · ");
    renderTimer(st.timer);
  }

  function renderTimer(timer) {
    if (timer && timer.active && typeof timer.remaining === "number") {
      // Resync: the device measured `remaining` at `at`; the server said `now`.
      var measured = timer.at ? Date.parse(timer.at) : Date.now() + skew;
      var elapsed = Math.max(0, (Date.now() + skew - measured) / 1000);
      countdown = {
        base: timer.remaining - elapsed, at: performance.now(), mode: timer.mode,
        duration: timer.duration
      };
      $("timer-status").textContent = "Running in " + modeName(timer.mode) +
        (timer.duration ? " · " + Math.round(timer.duration / 60) + " min in total" : "");
    } else {
      countdown = null;
      $("countdown").textContent = "—";
      $("timer-status").textContent = "Not running";
    }
    tick();
  }

  function tick() {
    if (!countdown) { return; }
    var left = countdown.base - (performance.now() - countdown.at) / 1000;
    $("countdown").textContent = mmss(left);
  }

  function renderOverride() {
    var until = pool.override_until ? Date.parse(pool.override_until) : 0;
    var box = $("override");
    if (until && until > Date.now() + skew) {
      $("override-text").textContent =
        "Programs are paused until " + dayFmt.format(new Date(until)) +
        " after a manual action.";
      box.hidden = false;
    } else {
      box.hidden = true;
    }
  }

  // The server names and colours each kind (devices/services/events.py); a
  // command is one entry, sent again with the same code when its status changes.
  function logItem(ev) {
    var li = document.createElement("li");
    if (ev.code) { li.setAttribute("data-event", ev.code); }
    li.setAttribute("data-kind", ev.kind || "");
    var t = document.createElement("time");
    t.dateTime = ev.ts || "";
    var d = ev.ts ? new Date(ev.ts) : null;
    t.textContent = d ? (Date.now() - d.getTime() > 86400000 ? dayFmt.format(d) : timeFmt.format(d)) : "";
    var body = document.createElement("span");
    var kind = document.createElement("span");
    kind.className = "kind" + (ev.tone ? " " + ev.tone : "");
    kind.textContent = ev.label || "Event";
    body.appendChild(kind);
    body.appendChild(document.createTextNode(ev.message || ""));
    if (ev.actor && (ev.message || "").indexOf(ev.actor) < 0) {
      body.appendChild(document.createTextNode(" — " + ev.actor));
    }
    li.appendChild(t);
    li.appendChild(body);
    return li;
  }

  // An event can reach the page twice (in a snapshot and as a delta): show it once,
  // and a known code replaces its entry where it stands.
  var logged = {};
  function logKey(ev) { return ev.code || [ev.ts, ev.kind, ev.message].join("|"); }

  function renderLog(events) {
    var log = $("log");
    log.textContent = "";
    logged = {};
    for (var i = 0; i < events.length; i++) {
      if (logged[logKey(events[i])]) { continue; }
      var li = logItem(events[i]);
      logged[logKey(events[i])] = li;
      log.appendChild(li);
    }
    $("log-empty").hidden = events.length > 0;
  }

  function addLog(ev) {
    var log = $("log");
    var key = logKey(ev);
    var li = logItem(ev);
    var old = logged[key];
    if (old && old.parentNode === log) {
      log.replaceChild(li, old);
    } else {
      log.insertBefore(li, log.firstChild);
    }
    logged[key] = li;
    while (log.children.length > 100) { log.removeChild(log.lastChild); }
    $("log-empty").hidden = true;
  }

  // --- programs and settings on a ps1 device (config/set -> config/applied) -------
  // The rule of devices.services.programs.pool_config_status, applied to the
  // device's live answer (state.config) against the snapshot's target version.
  var config = snap.config; // {status, text, target, applied} or null

  function renderConfig() {
    var box = $("config-status");
    if (!box || !config) { return; }
    var answer = (device && device.state && device.state.config) || null;
    var applied = config.applied;
    if (answer && answer.ok === true && (applied == null || answer.version > applied)) {
      applied = answer.version;
    }
    var status, text;
    if (applied != null && applied >= config.target) {
      status = "applied"; text = "applied (version " + applied + ")";
    } else if (answer && answer.ok === false && answer.version === config.target) {
      status = "rejected"; text = "rejected by the device: " + (answer.error || "rejected");
    } else {
      status = "pending"; text = "pending (version " + config.target + " not confirmed yet)";
    }
    box.setAttribute("data-status", status);
    box.className = "muted small config-" + status;
    $("config-text").textContent = text;
  }

  function applySnapshot(s) {
    pool = s.pool;
    device = s.device;
    config = s.config || null;
    canControl = s.can_control;
    if (s.now) { skew = Date.parse(s.now) - Date.now(); }
    renderLog(s.events || []);
    renderAll();
  }

  function renderAll() {
    renderConnection();
    renderControls();
    renderState();
    renderOverride();
    renderConfig();
  }

  // --- commands -------------------------------------------------------------------
  function feedback(control, text, cls) {
    var el = $(control + "-feedback");
    if (!el) { return; }
    el.textContent = text || "";
    el.className = "feedback" + (cls ? " " + cls : "");
  }

  function pendingFor(control) {
    for (var ref in pending) {
      if (pending[ref].control === control) { return pending[ref]; }
    }
    return null;
  }

  function markPending(control, on) {
    if (control === "pump") { $("pump").classList.toggle("pending", on); }
    if (control === "valve") {
      var segs = document.querySelectorAll("[data-valve]");
      for (var i = 0; i < segs.length; i++) { segs[i].classList.remove("pending"); }
      if (on && pendingFor("valve")) {
        var want = document.querySelector('[data-valve="' + pendingFor("valve").value + '"]');
        if (want) { want.classList.add("pending"); }
      }
    }
  }

  function finish(ref, ok, message) {
    var p = pending[ref];
    if (!p) { return; }
    clearTimeout(p.timer);
    delete pending[ref];
    markPending(p.control, false);
    feedback(p.control, message, ok ? "ok" : "bad");
    if (ok && device) {
      // Confirmed by the device: show it now, the state report may follow later.
      device.state = device.state || {};
      if (p.control === "pump") { device.state.pump = p.value === "ON"; }
      if (p.control === "valve") { device.state.valve = p.value; }
    }
    if (ok) {
      setTimeout(function () {
        var el = $(p.control + "-feedback");
        if (el && el.textContent === message) { feedback(p.control, ""); }
      }, 3000);
    }
    renderState();
  }

  function send(control, op, value, label) {
    if (!socketOpen || reason()) { return; }
    var ref = "r" + (++refSeq);
    pending[ref] = {
      control: control, label: label, value: value,
      // The server times commands out after ~15 s; this only guards a lost answer.
      timer: setTimeout(function () {
        finish(ref, false, label + ": no answer from poolsaas. Check the connection.");
      }, 30000)
    };
    markPending(control, true);
    feedback(control, label + ": waiting for the device…", "pending");
    ws.send(JSON.stringify({ type: "command", op: op, value: value, ref: ref }));
  }

  function onCommand(msg) {
    var ref = msg.ref != null ? msg.ref : codeToRef[msg.code];
    if (msg.ref != null && msg.code) { codeToRef[msg.code] = msg.ref; }
    if (ref == null || !pending[ref]) { return; }
    var p = pending[ref];
    if (msg.status === "done") {
      finish(ref, true, p.label + ": done.");
      // A manual action pauses programs (or resumes them): fetch the pool's
      // override from the server, without touching the live device state.
      refreshing = true;
      ws.send(JSON.stringify({ type: "snapshot" }));
    } else if (msg.status === "failed" || msg.status === "timed_out") {
      finish(ref, false, p.label + " failed: " + (msg.error || "no reason given") + ".");
    } else {
      feedback(p.control, p.label + ": " + (msg.status === "sent" ? "sent, waiting for the device…" : "waiting for the device…"), "pending");
    }
  }

  $("pump").addEventListener("click", function () {
    var on = $("pump").getAttribute("aria-checked") !== "true";
    $("pump").setAttribute("aria-checked", on ? "true" : "false");
    $("pump-label").textContent = on ? "On" : "Off";
    send("pump", "pump", on ? "ON" : "OFF", "Pump " + (on ? "on" : "off"));
  });
  var valveButtons = document.querySelectorAll("[data-valve]");
  for (var i = 0; i < valveButtons.length; i++) {
    valveButtons[i].addEventListener("click", function (e) {
      var mode = parseInt(e.currentTarget.getAttribute("data-valve"), 10);
      send("valve", "valve", mode, "Valve to " + modeName(mode));
    });
  }
  $("timer-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var minutes = parseInt($("timer-minutes").value, 10);
    if (!(minutes >= 1 && minutes <= 1440)) {
      feedback("timer", "Enter 1 to 1440 minutes.", "bad");
      return;
    }
    var mode = parseInt(document.querySelector('input[name="timer-mode"]:checked').value, 10);
    send("timer", "timer", { mode: mode, duration: minutes * 60 },
      "Timer " + minutes + " min in " + modeName(mode));
  });
  $("timer-stop").addEventListener("click", function () {
    var mode = countdown && countdown.mode ? countdown.mode : 1;
    send("timer", "timer", { mode: mode, duration: 0 }, "Timer stop");
  });
  $("override-clear").addEventListener("click", function () {
    send("override", "override_clear", null, "Resume programs");
  });

  // --- the socket -----------------------------------------------------------------
  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
      "/ws/pools/" + pool.code + "/";
    ws = new WebSocket(url);
    ws.onopen = function () { retry = 0; refreshing = false; };
    ws.onmessage = function (e) {
      var msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      // Other parts of the page (static/js/alerts.js) follow the same socket.
      document.dispatchEvent(new CustomEvent("poolsaas:socket", { detail: msg }));
      if (msg.type === "snapshot" && refreshing) {
        refreshing = false;
        pool = msg.pool;
        renderLog(msg.events || []);
        renderOverride();
      } else if (msg.type === "snapshot") {
        socketOpen = true;
        applySnapshot(msg);
      } else if (msg.type === "state") {
        if (msg.now) { skew = Date.parse(msg.now) - Date.now(); }
        if (device) {
          device.state = msg.state;
          if (msg.online !== null && msg.online !== undefined) { device.online = msg.online; }
          if (msg.last_seen) { device.last_seen = msg.last_seen; }
        }
        renderAll();
      } else if (msg.type === "command") {
        onCommand(msg);
      } else if (msg.type === "event") {
        addLog(msg.event);
      } else if (msg.type === "access") {
        canControl = msg.can_control;
        renderControls();
      } else if (msg.type === "error") {
        if (msg.ref != null && pending[msg.ref]) {
          finish(msg.ref, false, msg.message);
        } else {
          lastError = msg.message;
          var box = $("controls-reason");
          box.textContent = msg.message;
          box.hidden = false;
        }
      }
    };
    ws.onclose = function (e) {
      socketOpen = false;
      if (e.code === 4403 || e.code === 4404 || e.code === 4401) {
        stopped = true;
        renderAll();
        var box = $("controls-reason");
        // The server says why just before it closes (role changed, access
        // withdrawn); without that, a generic reason.
        box.textContent = lastError || (e.code === 4403
          ? "Your access to this pool was withdrawn. Reload the page to check."
          : "This pool is no longer available to you.");
        box.className = "notice bad";
        box.hidden = false;
        return;
      }
      renderAll();
      retry += 1;
      // Back off 1, 2, 4 … 30 s, with jitter so a restart is not a stampede.
      var delay = Math.min(30000, 1000 * Math.pow(2, retry - 1)) * (0.75 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  applySnapshot(snap);
  setInterval(function () { tick(); renderConnection(); renderOverride(); }, 1000);
  connect();
})();
