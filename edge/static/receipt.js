// Print buttons: switch the paper layout, then open the print dialog.
(function () {
  "use strict";
  Array.prototype.forEach.call(document.querySelectorAll("[data-print]"), function (a) {
    a.addEventListener("click", function (ev) {
      ev.preventDefault();
      document.body.className = a.id === "print-80" ? "paper-receipt80" : "paper-a4";
      window.print();
    });
  });
})();
