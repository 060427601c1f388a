/* The firing-alerts panel (alerts/templates/alerts/_firing_panel.html), live: the
   page's own socket script (pool.js, overview.js) re-dispatches every message as a
   "poolsaas:socket" event; a snapshot or hello carries the firing alerts, an "alert"
   message one alert's change (alerts.selectors.alert_as_dict). Plain JS. */
(function () {
  "use strict";
  var panel = document.getElementById("alerts-panel");
  if (!panel) { return; }
  var list = panel.querySelector("[data-alert-list]");
  var empty = panel.querySelector("[data-alert-empty]");
  var count = document.getElementById("alerts-count");
  var showPool = panel.getAttribute("data-show-pool") === "true";
  var canControl = panel.getAttribute("data-can-control") === "true";
  var csrfInput = panel.querySelector("input[name=csrfmiddlewaretoken]");
  var csrf = csrfInput ? csrfInput.value : "";
  var ackUrl = panel.getAttribute("data-ack-url");
  var resolveUrl = panel.getAttribute("data-resolve-url");
  var onlyPool = panel.getAttribute("data-pool") || null;
  var firing = {};
  var initial = document.getElementById("alerts-firing");
  var ago = function (iso) { return window.poolsaasAgo ? window.poolsaasAgo(iso) : iso; };

  function reset(alerts) {
    firing = {};
    (alerts || []).forEach(function (a) {
      if (a.state === "firing") { firing[a.code] = a; }
    });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function time(iso) {
    var t = el("time", "", ago(iso));
    t.dateTime = iso || "";
    t.setAttribute("data-ago", "");
    if (iso) { t.title = new Date(iso).toLocaleString(); }
    return t;
  }

  function num(v, digits) {
    return typeof v === "number" ? (digits ? v.toFixed(digits) : String(v)) : "—";
  }

  function button(url, code, label, action, cls) {
    var f = el("form", "inline");
    f.method = "post";
    f.action = url.replace("CODE", code);
    var t = el("input"); t.type = "hidden"; t.name = "csrfmiddlewaretoken"; t.value = csrf;
    var n = el("input"); n.type = "hidden"; n.name = "next";
    n.value = location.pathname + location.search;
    var b = el("button", cls, label);
    b.type = "submit";
    b.setAttribute("data-action", action);
    f.appendChild(t); f.appendChild(n); f.appendChild(b);
    return f;
  }

  function item(a) {
    var li = el("li", "alert-item");
    li.setAttribute("data-alert", a.code);
    var what = el("div", "alert-what");
    var label = el("a", "badge bad", a.label);
    label.href = "/alerts/" + a.code + "/";
    what.appendChild(label);
    if (showPool) {
      what.appendChild(document.createTextNode(" "));
      var link = el(a.pool ? "a" : "span", "", a.pool_name);
      if (a.pool) { link.href = "/pools/" + a.pool + "/"; }
      what.appendChild(link);
    }
    what.appendChild(document.createTextNode(" "));
    var value = (typeof a.value === "number" ? num(a.value, 1) + " " + a.unit + " · " : "") +
      "threshold " + num(a.threshold) + " " + a.unit;
    what.appendChild(el("span", "alert-value", value));
    li.appendChild(what);
    var meta = el("div", "muted small");
    meta.appendChild(document.createTextNode("Fired "));
    meta.appendChild(time(a.fired_at));
    meta.appendChild(document.createTextNode(" · "));
    var ack = el("span", "alert-ack");
    if (a.acknowledged_by) {
      ack.appendChild(document.createTextNode("Acknowledged by " + a.acknowledged_by + " "));
      ack.appendChild(time(a.acknowledged_at));
    } else {
      ack.textContent = "Not acknowledged";
    }
    meta.appendChild(ack);
    li.appendChild(meta);
    if (canControl) {
      var actions = el("div", "alert-actions");
      if (!a.acknowledged_by) {
        actions.appendChild(button(ackUrl, a.code, "Acknowledge", "acknowledge", "small"));
        actions.appendChild(document.createTextNode(" "));
      }
      actions.appendChild(button(resolveUrl, a.code, "Resolve", "resolve", "secondary small"));
      li.appendChild(actions);
    }
    return li;
  }

  function render() {
    var alerts = Object.keys(firing).map(function (k) { return firing[k]; });
    alerts.sort(function (x, y) { return Date.parse(y.fired_at) - Date.parse(x.fired_at); });
    list.textContent = "";
    alerts.forEach(function (a) { list.appendChild(item(a)); });
    empty.hidden = alerts.length > 0;
    count.textContent = String(alerts.length);
    count.className = "badge" + (alerts.length ? " bad" : "");
    panel.classList.toggle("calm", alerts.length === 0);
  }

  document.addEventListener("poolsaas:socket", function (e) {
    var msg = e.detail || {};
    if ((msg.type === "snapshot" || msg.type === "hello") && msg.alerts) {
      reset(msg.alerts);
      render();
    } else if (msg.type === "alert" && msg.alert && msg.alert.code) {
      var a = msg.alert;
      if (onlyPool && a.pool !== onlyPool) { return; }
      if (a.state === "firing") { firing[a.code] = a; } else { delete firing[a.code]; }
      render();
    }
  });

  setInterval(function () {
    var times = panel.querySelectorAll("time[data-ago]");
    for (var i = 0; i < times.length; i++) {
      times[i].textContent = ago(times[i].getAttribute("datetime"));
    }
  }, 30000);

  reset(initial ? JSON.parse(initial.textContent) : []);
})();
