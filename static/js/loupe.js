// Loupe's small enhancements; every page works without them.
// - [data-dropzone]: files dropped on the zone go into its <input type=file multiple>.
// - form[data-confirm]: ask before submitting.
// - [data-copy-target]: copy a field's text to the clipboard.
(function () {
  "use strict";

  function describe(files) {
    var bytes = 0;
    for (var i = 0; i < files.length; i++) bytes += files[i].size;
    var size = bytes < 1048576 ? (bytes / 1024).toFixed(0) + " KB" : (bytes / 1048576).toFixed(1) + " MB";
    if (files.length === 1) return files[0].name + " (" + size + ")";
    return files.length + " files selected (" + size + ")";
  }

  function showSelection(zone, input) {
    var out = zone.querySelector("[data-dropzone-selection]");
    if (out) out.textContent = input.files.length ? describe(input.files) : "";
  }

  function addFiles(input, files) {
    // A new drop adds to what was chosen before rather than replacing it.
    var transfer = new DataTransfer();
    var seen = {};
    var all = Array.prototype.slice.call(input.files).concat(Array.prototype.slice.call(files));
    all.forEach(function (file) {
      var key = file.name + ":" + file.size + ":" + file.lastModified;
      if (seen[key]) return;
      seen[key] = true;
      transfer.items.add(file);
    });
    input.files = transfer.files;
  }

  function zoneOf(event) {
    return event.target instanceof Element ? event.target.closest("[data-dropzone]") : null;
  }

  document.addEventListener("dragover", function (event) {
    var zone = zoneOf(event);
    if (!zone) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("dropzone--over");
  });

  document.addEventListener("dragleave", function (event) {
    var zone = zoneOf(event);
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("dropzone--over");
  });

  document.addEventListener("drop", function (event) {
    var zone = zoneOf(event);
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("dropzone--over");
    var input = zone.querySelector("input[type=file]");
    if (!input || !event.dataTransfer.files.length) return;
    addFiles(input, event.dataTransfer.files);
    showSelection(zone, input);
  });

  document.addEventListener("change", function (event) {
    var input = event.target;
    if (!(input instanceof HTMLInputElement) || input.type !== "file") return;
    var zone = input.closest("[data-dropzone]");
    if (zone) showSelection(zone, input);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
      return;
    }
    if (form.classList && form.classList.contains("upload-form")) {
      var button = form.querySelector("button[type=submit]");
      if (button) {
        button.disabled = true;
        button.textContent = "Uploading…";
      }
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element ? event.target.closest("[data-copy-target]") : null;
    if (!button) return;
    var field = document.getElementById(button.getAttribute("data-copy-target"));
    if (!field) return;
    field.select();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  });

  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("[data-select-on-focus]")) event.target.select();
  });

  // A page restored from the back-forward cache must not keep a disabled upload button.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll(".upload-form button[type=submit]").forEach(function (button) {
      button.disabled = false;
      button.textContent = "Upload";
    });
  });
})();
