// Loupe's small enhancements; every page works without them.
// - [data-dropzone]: files dropped on the zone go into its <input type=file multiple>.
// - form[data-confirm]: ask before submitting.
// - [data-copy-target]: copy a field's text to the clipboard.
// - dialog[data-confirm-dialog]: opens when htmx puts a confirmation in it.
// - button[data-busy-label]: disabled and relabelled while its form's request runs.
// - details[data-site-menu]: the header's project links, open on wide screens only.
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
    // htmx prevented the default of its own forms; its request events mark those busy.
    if (event.defaultPrevented || !form.querySelectorAll) return;
    // After this tick: a button disabled now would drop its name=value from the post.
    window.setTimeout(function () { formBusy(form, true); }, 0);
  });

  function formBusy(form, busy) {
    form.querySelectorAll("button[data-busy-label]").forEach(function (button) {
      if (busy) {
        if (!button.hasAttribute("data-idle-label")) button.setAttribute("data-idle-label", button.textContent);
        var spinner = document.createElement("span");
        spinner.className = "spinner";
        spinner.setAttribute("aria-hidden", "true");
        button.replaceChildren(spinner, document.createTextNode(button.getAttribute("data-busy-label")));
        button.disabled = true;
        button.setAttribute("aria-busy", "true");
      } else if (button.hasAttribute("data-idle-label")) {
        button.textContent = button.getAttribute("data-idle-label");
        button.removeAttribute("data-idle-label");
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    });
  }

  function htmxForm(event) {
    var elt = event.detail && event.detail.elt;
    return elt instanceof HTMLFormElement ? elt : null;
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = htmxForm(event);
    if (form) formBusy(form, true);
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = htmxForm(event);
    if (form) formBusy(form, false);
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

  // A confirmation fetched into a <dialog data-confirm-dialog> opens it as a modal.
  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail && event.detail.elt;
    var dialog = elt && elt.closest ? elt.closest("dialog[data-confirm-dialog]") : null;
    if (dialog && !dialog.open) dialog.showModal();
  });

  // Its Cancel is a link back (without JavaScript); here it only closes the dialog.
  document.addEventListener("click", function (event) {
    var cancel = event.target instanceof Element ? event.target.closest("[data-dialog-close]") : null;
    var dialog = cancel ? cancel.closest("dialog[open]") : null;
    if (!dialog) return;
    event.preventDefault();
    dialog.close();
  });

  // A page restored from the back-forward cache must not keep a busy button.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form").forEach(function (form) { formBusy(form, false); });
  });

  // The header menu follows the screen: open (links inline) when wide, folded when narrow.
  var wide = window.matchMedia("(min-width: 701px)");
  function siteMenus() { return document.querySelectorAll("details[data-site-menu]"); }
  wide.addEventListener("change", function () {
    siteMenus().forEach(function (menu) { menu.open = wide.matches; });
  });
  // Folded: a click elsewhere or Escape closes it, as a menu does.
  document.addEventListener("click", function (event) {
    if (wide.matches) return;
    siteMenus().forEach(function (menu) {
      if (menu.open && !menu.contains(event.target)) menu.open = false;
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || wide.matches) return;
    siteMenus().forEach(function (menu) {
      if (!menu.open) return;
      menu.open = false;
      menu.querySelector("summary").focus();
    });
  });
})();
