// The MQTT gateway's example dashboard (/mqtt-demo/): log in, connect with MQTT.js,
// show the v3.1 state of the tenant's devices and switch their pumps.
"use strict";

(function () {
  const form = document.getElementById("demo-login");
  if (!form) return;
  const conn = document.getElementById("demo-conn");
  const rows = document.getElementById("demo-devices");
  const log = document.getElementById("demo-log");
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
      const on = cell(row, "pump").textContent === "ON";
      client.publish(`${root}/pump/set`, on ? "OFF" : "ON", { qos: 1 });
      note(`published ${root}/pump/set ${on ? "OFF" : "ON"}`);
    });
    td.append(button);
    row.append(td);
    rows.append(row);
    devices.set(root, row);
    return row;
  }

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
      client.subscribe(["+/+/pump/state", "+/+/valve/state", "+/+/temperature/state"]);
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
