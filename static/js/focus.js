// The focus view: one image large in a <dialog>, its partial (#focus-view) fetched by htmx.
// Every link and button in it works without this script (the focus page and plain posts).
//   Space / o on a card, or a click on its picture: open    Esc: close, back to the card
//   j / →  next   k / ←  previous (the page's own order)     + / - / wheel: zoom, drag: pan
//   the class keys, c, x, u: as on the card (they press the focus view's buttons); with
//   a queue's auto-advance on, a saved decision moves on to the next image
(function () {
  "use strict";

  var ZOOM_STEP = 1.25;
  var MIN_SCALE = 0.25;
  var MAX_SCALE = 16;
  var shown = null; // id of the image the dialog shows
  var view = { scale: 1, x: 0, y: 0 };

  function dialog() {
    return document.getElementById("focus-dialog");
  }

  function links() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-focus]"));
  }

  function itemOf(link) {
    return link.closest("[data-review-card], [data-focus-item]");
  }

  function idOf(link) {
    var item = itemOf(link);
    return item ? item.getAttribute("data-image") : null;
  }

  function linkFor(id) {
    return links().filter(function (link) { return idOf(link) === id; })[0] || null;
  }

  function typing(target) {
    return target && /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName) && target.type !== "checkbox";
  }

  function open(link) {
    var box = dialog();
    if (!box || !link || !window.htmx) return;
    var all = links();
    var index = all.indexOf(link);
    var url = link.getAttribute("data-focus");
    var params = [];
    // Neighbours come from the page: the cards it shows, in the order it shows them.
    if (index > 0) params.push("prev_id=" + idOf(all[index - 1]));
    if (index < all.length - 1) params.push("next_id=" + idOf(all[index + 1]));
    var item = itemOf(link);
    var kind = item.getAttribute("data-card-kind") || (item.hasAttribute("data-review-card") ? "review" : "thumb");
    params.push("card=" + kind);
    var id = idOf(link);
    if (id !== shown) view = { scale: 1, x: 0, y: 0 };
    shown = id;
    htmx.ajax("GET", url + (url.indexOf("?") === -1 ? "?" : "&") + params.join("&"), {
      target: "#focus-view",
      swap: "outerHTML",
    }).then(function () {
      if (!document.querySelector("#focus-view[data-focus-view]")) return; // refused: no view
      if (!box.open) box.showModal();
      settle();
    });
  }

  function step(by) {
    var all = links();
    var index = all.indexOf(linkFor(shown));
    if (index === -1 || !all[index + by]) return;
    open(all[index + by]);
  }

  function close() {
    var box = dialog();
    if (box && box.open) box.close();
  }

  // After every swap of the view (opened, moved, decided): keys to it, zoom kept per image.
  function settle() {
    var section = document.getElementById("focus-view");
    if (!section || !section.hasAttribute("data-focus-view")) return;
    var id = section.getAttribute("data-image");
    if (id !== shown) { shown = id; view = { scale: 1, x: 0, y: 0 }; }
    apply();
    var box = dialog();
    var active = document.activeElement;
    // The pressed button went with the old view: the keys go to the new one.
    if (box && box.open && (!active || active === document.body || !box.contains(active))) {
      section.focus({ preventScroll: true });
    }
  }

  function apply() {
    var image = document.querySelector("#focus-view [data-focus-image]");
    if (image) image.style.transform = "translate(" + view.x + "px, " + view.y + "px) scale(" + view.scale + ")";
    var out = document.querySelector("#focus-view [data-focus-scale]");
    if (out) out.textContent = Math.round(view.scale * 100) + "%";
  }

  function zoom(factor) {
    view.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, view.scale * factor));
    if (view.scale === 1) { view.x = 0; view.y = 0; }
    apply();
  }

  function fit() {
    view = { scale: 1, x: 0, y: 0 };
    apply();
  }

  function press(key) {
    var section = document.getElementById("focus-view");
    if (!section) return false;
    // htmx wires a swapped-in form only when it settles: a key pressed before that would
    // post the plain form and leave the page, so it is swallowed instead.
    if (!section.hasAttribute("data-focus-ready")) return true;
    var button = section.querySelector('[data-key="' + (window.CSS && CSS.escape ? CSS.escape(key) : key) + '"]');
    if (!button) return false;
    button.click();
    return true;
  }

  // Capture on window: while the dialog is open its keys are the only keys, so the queue's
  // own handler (review.js) never moves between the cards behind it.
  window.addEventListener("keydown", function (event) {
    var box = dialog();
    if (!box || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var key = event.key;
    if (!box.open) {
      if (key !== " " && key !== "o") return;
      var item = event.target.closest && event.target.closest("[data-review-card], [data-focus-item]");
      var link = item && item.querySelector("[data-focus]");
      // Space on a card's button presses it; on the card (or its focus link) it opens.
      if (!link || (key === " " && event.target !== item && event.target !== link)) return;
      event.preventDefault();
      event.stopImmediatePropagation();
      open(link);
      return;
    }
    if (key === "Escape" || key === "Tab") return; // the dialog's own: close, move focus
    event.stopImmediatePropagation();
    var onControl = /^(BUTTON|A)$/.test(event.target.tagName);
    var handled = true;
    if (key === "j" || key === "ArrowRight") step(1);
    else if (key === "k" || key === "ArrowLeft") step(-1);
    else if (key === "+" || key === "=") zoom(ZOOM_STEP);
    else if (key === "-" || key === "_") zoom(1 / ZOOM_STEP);
    else if ((key === " " || key === "Enter") && onControl) handled = false; // press it
    else if (key === " " || key === "o") close();
    else if (key.length === 1) handled = press(key);
    else handled = false;
    if (handled) event.preventDefault();
  }, true);

  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    var link = dialog() && event.target.closest("[data-focus]");
    // A plain click opens the dialog; a middle or modified click still opens the page.
    if (link && event.button === 0 && !event.ctrlKey && !event.metaKey && !event.shiftKey && !event.altKey) {
      event.preventDefault();
      open(link);
      return;
    }
    // In the dialog the page's cards give the neighbours; the focus page follows the link.
    var stepper = dialog() && event.target.closest("#focus-view [data-focus-step]");
    if (stepper) { event.preventDefault(); step(parseInt(stepper.getAttribute("data-focus-step"), 10)); return; }
    var zoomer = event.target.closest("#focus-view [data-focus-zoom]");
    if (zoomer) {
      var how = zoomer.getAttribute("data-focus-zoom");
      if (how === "fit") fit(); else zoom(how === "in" ? ZOOM_STEP : 1 / ZOOM_STEP);
      return;
    }
    if (event.target.closest("#focus-view [data-focus-close]")) { close(); return; }
    // A click on the backdrop (the dialog itself, outside its content) closes it too.
    if (dialog() && event.target === dialog()) close();
  });

  document.addEventListener("wheel", function (event) {
    if (!event.target.closest || !event.target.closest("#focus-view [data-focus-stage]")) return;
    event.preventDefault();
    zoom(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP);
  }, { passive: false });

  var drag = null;
  document.addEventListener("pointerdown", function (event) {
    var stage = event.target.closest && event.target.closest("#focus-view [data-focus-stage]");
    if (!stage || event.button !== 0) return;
    drag = { x: event.clientX - view.x, y: event.clientY - view.y, stage: stage };
    stage.setPointerCapture(event.pointerId);
    stage.classList.add("focus-view__stage--dragging");
  });
  document.addEventListener("pointermove", function (event) {
    if (!drag) return;
    view.x = event.clientX - drag.x;
    view.y = event.clientY - drag.y;
    apply();
  });
  function endDrag() {
    if (!drag) return;
    drag.stage.classList.remove("focus-view__stage--dragging");
    drag = null;
  }
  document.addEventListener("pointerup", endDrag);
  document.addEventListener("pointercancel", endDrag);

  // Auto-advance, as on the cards (review.js): a saved decision moves on to the next image;
  // an undo or a refusal stays, so the reviewer sees what happened.
  var acted = null; // "decide" or "undo": the last button pressed in the view
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("#focus-view form button[type=submit]");
    if (button) acted = button.getAttribute("data-key") === "u" ? "undo" : "decide";
  }, true);

  function autoAdvance() {
    var box = document.querySelector("[data-auto-advance]");
    return !!box && box.checked; // the queues have the toggle; the image browser stays put
  }

  document.addEventListener("htmx:afterSettle", function (event) {
    if (!event.target || event.target.id !== "focus-view") return;
    event.target.setAttribute("data-focus-ready", ""); // htmx has wired its forms (see press)
    settle();
    var kind = acted;
    acted = null;
    var section = event.target;
    var saved = section.querySelector(".saved") && !section.querySelector(".focus-view__error");
    if (kind === "decide" && saved && autoAdvance()) step(1);
  });

  // Closed by Esc, the Close button or the backdrop: back to the card of the image shown.
  document.addEventListener("DOMContentLoaded", function () {
    var box = dialog();
    if (!box) return;
    box.addEventListener("close", function () {
      var link = linkFor(shown);
      var item = link && itemOf(link);
      var target = item && item.hasAttribute("tabindex") ? item : link;
      if (target) {
        target.focus({ preventScroll: true });
        target.scrollIntoView({ block: "nearest" });
      }
    });
  });
})();
