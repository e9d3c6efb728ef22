// Photos of documents are made smaller on the tablet before they are sent: the van's link to HQ is metered
// (satellite), and a 12-megapixel phone photo is readable at 1600 px.  Only JPEG, PNG and WebP that the
// browser can draw; PDFs and HEIC go as they are, and so does anything the smaller copy would not shrink.
// The administrator may keep the original size (the checkbox).  Without JavaScript the originals are sent.
(function () {
  "use strict";
  var DRAWABLE = ["image/jpeg", "image/png", "image/webp"];

  function shrink(file, maxSide, quality) {
    if (DRAWABLE.indexOf(file.type) === -1 || !window.createImageBitmap) return Promise.resolve(file);
    return createImageBitmap(file).then(function (img) {
      var scale = Math.min(1, maxSide / Math.max(img.width, img.height));
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(img.width * scale));
      canvas.height = Math.max(1, Math.round(img.height * scale));
      var ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff";  // a transparent PNG becomes a JPEG on white, not on black
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      if (img.close) img.close();
      return new Promise(function (resolve) {
        canvas.toBlob(function (blob) {
          if (!blob || blob.size >= file.size) { resolve(file); return; }
          var name = file.name.replace(/\.[^.]*$/, "") + ".jpg";
          resolve(new File([blob], name, { type: "image/jpeg", lastModified: file.lastModified }));
        }, "image/jpeg", quality);
      });
    }, function () { return file; });  // not decodable here: the server checks it as it is
  }

  // Replace the chosen files of every photo input of the form by their smaller copies.
  function prepare(form) {
    var box = form.querySelector("[data-photo-max-side]");
    var keep = form.querySelector("input[name=attach_original]");
    if (!box || (keep && keep.checked) || typeof DataTransfer === "undefined") return Promise.resolve();
    var maxSide = parseInt(box.dataset.photoMaxSide, 10);
    var quality = parseFloat(box.dataset.photoQuality);
    var inputs = Array.prototype.slice.call(form.querySelectorAll("input[type=file][name=attachment]"));
    return Promise.all(inputs.map(function (input) {
      var files = Array.prototype.slice.call(input.files || []);
      if (!files.length) return null;
      return Promise.all(files.map(function (f) { return shrink(f, maxSide, quality); })).then(function (out) {
        var dt = new DataTransfer();
        out.forEach(function (f) { dt.items.add(f); });
        input.files = dt.files;
      });
    }));
  }

  window.moPhotos = { prepare: prepare };
  Array.prototype.forEach.call(document.querySelectorAll("[data-photo-max-side]"), function (box) {
    box.hidden = false;
    var form = box.closest("form");
    if (!form || form.hasAttribute("data-offline-hold")) return;  // that form's own script calls prepare()
    form.addEventListener("submit", function (ev) {
      if (form.dataset.prepared === "1") return;
      ev.preventDefault();
      prepare(form).then(function () { form.dataset.prepared = "1"; form.submit(); });
    });
  });
})();
