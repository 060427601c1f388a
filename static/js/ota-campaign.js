/* A campaign's progress page, live: the tenant's socket (/ws/tenant/) carries an
   "ota" message per device update of the tenant's campaigns; a row of this page is
   updated in place at once, and the counts and abort status are fetched again
   (debounced) from the page's live URL, which is also read after every (re)connect
   so that nothing missed while away stays stale, and every 20 s as a fallback for a
   message the socket missed. Plain JS, text only. */
(function () {
  "use strict";
  var root = document.getElementById("campaign");
  if (!root) { return; }
  var code = root.getAttribute("data-campaign");
  var liveUrl = root.getAttribute("data-live-url");
  var conn = document.getElementById("page-conn");
  var stateBadge = document.getElementById("campaign-state");
  var retry = 0;
  var pending = null;
  var FALLBACK_MS = 20000;
  var LABELS = {
    queued: "Queued", awaiting_consent: "Awaiting consent", offered: "Offered",
    downloading: "Downloading", downloaded: "Downloaded", verified: "Verified",
    applying: "Applying", succeeded: "Succeeded", failed: "Failed",
    rolled_back: "Rolled back", timed_out: "Timed out", skipped: "Skipped"
  };

  function setConn(text, cls) {
    conn.textContent = text;
    conn.className = "badge" + (cls ? " " + cls : "");
  }

  function flash(cell) {
    cell.classList.remove("flash");
    void cell.offsetWidth;
    cell.classList.add("flash");
  }

  function updateRow(u) {
    var row = root.querySelector('tr[data-device="' + u.device + '"]');
    if (!row) { return false; }
    var state = row.querySelector('[data-field="state"]');
    var badge = document.createElement("span");
    badge.className = "badge st-" + u.state;
    badge.textContent = u.label || LABELS[u.state] || u.state;
    if (state.textContent.trim() !== badge.textContent) {
      state.textContent = "";
      state.appendChild(badge);
      flash(state);
    }
    var bar = row.querySelector('[data-field="percent"] progress');
    var percent = Math.max(0, Math.min(100, Number(u.percent) || 0));
    if (bar) {
      bar.value = percent;
      bar.textContent = percent + " %";
      bar.setAttribute("aria-label", percent + " %");
    }
    if (typeof u.reason === "string") {
      row.querySelector('[data-field="reason"]').textContent = u.reason;
    }
    var corrupted = row.querySelector('[data-field="corrupted_chunks"]');
    if (corrupted && typeof u.corrupted_chunks === "number") {
      corrupted.textContent = String(u.corrupted_chunks);
    }
    return true;
  }

  function render(data) {
    if (stateBadge && data.state && stateBadge.getAttribute("data-state") !== data.state) {
      // Another state (paused elsewhere, aborted, completed): the buttons change
      // with it, so the page is read again.
      location.reload();
      return;
    }
    var counts = data.counts || {};
    Object.keys(counts).forEach(function (s) {
      var li = root.querySelector('[data-count="' + s + '"]');
      if (li) {
        li.querySelector(".n").textContent = String(counts[s]);
        li.classList.toggle("zero", !counts[s]);
      }
    });
    var total = document.getElementById("count-total");
    if (total && typeof counts.total === "number") { total.textContent = String(counts.total); }
    var abort = document.getElementById("abort");
    var a = data.abort;
    if (abort && a) {
      abort.textContent = a.aborted
        ? "aborted: " + a.failed + " of " + a.done + " finished devices failed (" +
          a.share_percent + " %, threshold " + a.threshold_percent + " %)"
        : "at " + a.threshold_percent + " % failures once " + a.after +
          " devices finished; now " + a.failed + " of " + a.done + " failed" +
          (a.done ? " (" + a.share_percent + " %)" : "");
    }
    var missing = false;
    (data.updates || []).forEach(function (u) { if (!updateRow(u)) { missing = true; } });
    if (missing && !root.querySelector("tr[data-device]")) { location.reload(); }
  }

  function refresh() {
    pending = null;
    fetch(liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { render(data); } })
      .catch(function () {});
  }
  function refreshSoon() {
    if (!pending) { pending = setTimeout(refresh, 500); }
  }
  // A fallback, not the live path: a message the socket never got (a Redis restart
  // forgets subscriptions until the socket reconnects; pub/sub keeps nothing for a
  // subscriber that was not there) is caught by reading the page again now and then.
  setInterval(function () {
    if (!document.hidden) { refreshSoon(); }
  }, FALLBACK_MS);

  function connect() {
    var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") +
      location.host + "/ws/tenant/");
    ws.onmessage = function (e) {
      var msg;
      try { msg = JSON.parse(e.data); } catch (err) { return; }
      if (msg.type === "hello") {
        retry = 0;
        setConn("live", "ok");
        refresh();
      } else if (msg.type === "ota" && msg.update && msg.update.campaign === code) {
        updateRow(msg.update);
        refreshSoon();
      }
    };
    ws.onclose = function (e) {
      if (e.code === 4403 || e.code === 4401) {
        setConn("stopped: reload", "bad");
        return;
      }
      setConn("reconnecting…", "warn");
      retry += 1;
      setTimeout(connect, Math.min(30000, 1000 * Math.pow(2, retry - 1)) * (0.75 + Math.random() / 2));
    };
  }
  connect();
})();
