// Search-as-you-type over the service list and the documents checklist of
// the chosen service.  The plain <select> works without it.
(function () {
  "use strict";
  var search = document.getElementById("service-search");
  var select = document.getElementById("service_code");
  var data = document.getElementById("service-documents");
  var box = document.getElementById("documents");
  if (!select) return;
  var docs = data ? JSON.parse(data.textContent) : {};
  Array.prototype.forEach.call(document.querySelectorAll(".js-only"), function (el) { el.hidden = false; });
  if (search) {
    search.addEventListener("input", function () {
      var q = search.value.trim().toLowerCase();
      var first = null;
      Array.prototype.forEach.call(select.querySelectorAll("optgroup"), function (g) {
        var any = false;
        Array.prototype.forEach.call(g.querySelectorAll("option"), function (o) {
          var hit = !q || o.textContent.toLowerCase().indexOf(q) !== -1;
          o.hidden = !hit;
          o.disabled = !hit;
          if (hit) { any = true; if (!first) first = o; }
        });
        g.hidden = !any;
      });
      if (q && first && (select.selectedIndex <= 0 || select.options[select.selectedIndex].hidden)) {
        select.value = first.value;
        showDocs();
      }
    });
  }
  function showDocs() {
    var list = docs[select.value] || [];
    box.textContent = "";
    if (!list.length) return;
    var h = document.createElement("h2");
    h.textContent = data.dataset.heading;
    // a tick per document: the inventory of what the citizen handed in goes with the application (doc_received_<i>)
    var hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = data.dataset.received || "";
    var ul = document.createElement("div");
    ul.className = "received-docs";
    list.forEach(function (d, i) {
      var label = document.createElement("label");
      var box_ = document.createElement("input");
      box_.type = "checkbox";
      box_.name = "doc_received_" + i;
      box_.value = d;
      label.appendChild(box_);
      label.appendChild(document.createTextNode(" " + d));
      ul.appendChild(label);
    });
    box.appendChild(h);
    box.appendChild(hint);
    box.appendChild(ul);
  }
  select.addEventListener("change", showDocs);
})();
