// The MQTT gateway's example dashboard (/mqtt-demo/): log in, connect with MQTT.js,
// show the v3.1 state of the tenant's devices and switch their pumps.
"use strict";

(function () {
  const form = document.getElementById("demo-login");
  if (!form) return;
  const conn = document.getElementById("demo-conn");
  const rows = document.getElementById("demo-devices");
  const log = document.getElementById("demo-log");
  const subs = document.getElementById("demo-subs");
  const filterForm = document.getElementById("demo-subscribe");
  const devices = new Map(); // root ("<prefix>/<device id>") -> row
  let client = null;

  function note(text) {
    const li = document.createElement("li");
    li.textContent = text;
    log.prepend(li);
    while (log.children.length > 50) log.lastChild.remove();
  }

  function cell(row, field) {
    return row.querySelector(`[data-field="${field}"]`);
  }

  function rowFor(root) {
    let row = devices.get(root);
    if (row) return row;
    row = document.createElement("tr");
    row.dataset.root = root;
    for (const field of ["device", "pump", "valve", "temperature"]) {
      const td = document.createElement("td");
      td.dataset.field = field;
      td.textContent = field === "device" ? root : "–";
      row.append(td);
    }
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "demo-pump";
    button.textContent = "Switch pump";
    button.addEventListener("click", () => {
      // The cell changes only when the device says so (its state topic), never
      // here: a refused publish must leave no false state on the page.
      const topic = `${root}/pump/set`;
      const payload = cell(row, "pump").textContent === "ON" ? "OFF" : "ON";
      note(`published ${topic} ${payload}`);
      // The gateway acknowledges a QoS 1 publish once it has handled it.
      client.publish(topic, payload, { qos: 1 }, (error) => {
        note(error ? `not sent: ${topic} ${error.message}` : `acknowledged ${topic} ${payload}`);
      });
    });
    td.append(button);
    row.append(td);
    rows.append(row);
    devices.set(root, row);
    return row;
  }

  // Subscribe and show what the gateway granted: QoS 0 or 1, or 0x80 (a filter
  // that matches none of this tenant's device topics).
  function subscribe(filters) {
    client.subscribe(filters, { qos: 1 }, (error, requested, packet) => {
      const codes = (packet && packet.granted) || [];
      requested.forEach((sub, i) => {
        const li = document.createElement("li");
        li.dataset.filter = sub.topic;
        const code = codes[i];
        li.dataset.code = String(code);
        li.textContent =
          code === undefined
            ? `${sub.topic}: no answer (${error ? error.message : "?"})`
            : code & 0x80
              ? `${sub.topic}: refused (0x${code.toString(16)})`
              : `${sub.topic}: granted QoS ${code}`;
        subs.append(li);
      });
    });
  }

  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("demo-filter");
    if (client && client.connected && input.value) subscribe([input.value]);
  });

  function onMessage(topic, payload, packet) {
    const text = new TextDecoder().decode(payload);
    note(`${topic} ${text}${packet.retain ? " (retained)" : ""}`);
    const match = /^(.+)\/(pump|valve|temperature)\/state$/.exec(topic);
    if (match) cell(rowFor(match[1]), match[2]).textContent = text;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = document.getElementById("demo-email").value;
    const response = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        email,
        password: document.getElementById("demo-password").value,
      }),
    });
    const login = await response.json();
    if (!response.ok) {
      conn.textContent = `login refused: ${login.detail || response.status}`;
      return;
    }
    // login.brokerUrl is the gateway of the configured site; this page connects to
    // the gateway of the host that served it (the same thing in production).
    const url = location.origin.replace(/^http/, "ws") + "/mqtt";
    if (client) client.end(true);
    client = mqtt.connect(url, {
      clientId: login.clientId,
      username: email,
      password: login.token,
      protocolVersion: 4,
      reconnectPeriod: 2000,
    });
    client.on("connect", () => {
      conn.textContent = "connected";
      subs.replaceChildren();
      subscribe(["+/+/pump/state", "+/+/valve/state", "+/+/temperature/state"]);
    });
    client.on("message", onMessage);
    client.on("close", () => {
      if (conn.textContent === "connected") conn.textContent = "disconnected";
    });
    client.on("error", (error) => {
      conn.textContent = `refused: ${error.message}`;
    });
  });
})();
