/* Forms marked data-confirm="question" ask before they submit (no inline handlers:
   the pages run under a Content Security Policy without inline script). */
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { e.preventDefault(); }
  });
})();
