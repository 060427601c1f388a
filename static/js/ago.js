/* Relative times, worded one way on every page (the server's `ago` filter,
   devices/templatetags/devices_ui.py, says the same): "just now", "5 min ago",
   "3 h ago", "2 d ago". */
(function () {
  "use strict";
  window.poolsaasAgo = function (iso, skewMs) {
    if (!iso) { return "never"; }
    var s = Math.max(0, (Date.now() + (skewMs || 0) - Date.parse(iso)) / 1000);
    if (s < 60) { return "just now"; }
    if (s < 3600) { return Math.floor(s / 60) + " min ago"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h ago"; }
    return Math.floor(s / 86400) + " d ago";
  };
})();
