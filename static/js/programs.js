/* The programs editor: copy one day to others, tidy typed times to HH:MM (24 h), and
   keep each program's one-line summary current. The form works without it. */
(function () {
  "use strict";
  var form = document.getElementById("programs-form");
  if (!form) { return; }

  function field(slot, day, part) {
    return form.elements["s" + slot + "_d" + day + "_" + part];
  }

  // "930", "9:30", "09.30" -> "09:30"; the server does the same and validates.
  function tidy(input) {
    var m = /^\s*(\d{1,2})[:.hH]?(\d{2})\s*$/.exec(input.value);
    if (m) { input.value = (m[1].length < 2 ? "0" : "") + m[1] + ":" + m[2]; }
  }

  function summarise(slot) {
    var box = document.getElementById("program-" + slot);
    var badge = box && box.querySelector("[data-summary]");
    if (!badge) { return; }
    var days = 0;
    for (var d = 0; d < 7; d++) {
      if (field(slot, d, "start").value || field(slot, d, "stop").value) { days++; }
    }
    var on = form.elements["s" + slot + "_enabled"].checked;
    badge.textContent = (on ? "on" : "off") + " · " + days + " day" + (days === 1 ? "" : "s");
    badge.className = "badge" + (on ? " ok" : "");
  }

  function copy(slot, how) {
    var targets = how === "weekdays" ? [1, 2, 3, 4] : [0, 1, 2, 3, 4, 5, 6];
    ["start", "stop", "mode"].forEach(function (part) {
      var value = how === "clear" ? "" : field(slot, 0, part).value;
      targets.forEach(function (d) {
        if (how !== "clear" && d === 0) { return; }
        var el = field(slot, d, part);
        if (part === "mode" && how === "clear") { el.selectedIndex = 0; }
        else { el.value = value; }
      });
    });
    summarise(slot);
  }

  form.addEventListener("click", function (e) {
    var button = e.target.closest("[data-copy]");
    if (!button) { return; }
    copy(button.getAttribute("data-slot"), button.getAttribute("data-copy"));
  });
  form.addEventListener("change", function (e) {
    var box = e.target.closest("[data-slot]");
    if (e.target.type === "text") { tidy(e.target); }
    if (box) { summarise(box.getAttribute("data-slot")); }
  });
})();
