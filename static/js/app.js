// Behaviour every page shares, bound here rather than in on*= attributes so that
// the Content Security Policy can refuse all inline script.
//   <select data-autosubmit>        submits its form when the choice changes
//   <form data-confirm="Question?"> asks before submitting (also on a submit button)
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.matches && field.matches("select[data-autosubmit]") && field.form) {
      field.form.requestSubmit ? field.form.requestSubmit() : field.form.submit();
    }
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var question = (button && button.getAttribute("data-confirm")) ||
      form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
