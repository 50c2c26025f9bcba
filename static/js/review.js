// The review queue from the keyboard. Every action is a real button in the card,
// so the page works without this script; the keys only press those buttons.
//   j / k   next / previous card        0-9, a-z  relabel as the class with that hotkey
//   c       confirm                     x    delete          u  undo
//   s       select for a bulk action    o    open the image  ?  help, Esc closes it
//   n       next confusion-matrix cell (a queue filtered to one cell)
//   Enter   on a Label queue card: accept the suggestion (as c)
// The action letters are reserved in reviewapp/hotkeys.py: no class may take one.
// Auto-advance (the [data-auto-advance] box, saved per person) moves focus on after a decision.
(function () {
  "use strict";

  var lastActed = null; // id of the card whose action is in flight
  var lastKind = null;

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-review-card]"));
  }

  function current() {
    var active = document.activeElement;
    return active && active.closest ? active.closest("[data-review-card]") : null;
  }

  function focusCard(card) {
    if (!card) return;
    card.focus({ preventScroll: true });
    card.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  function move(step) {
    var all = cards();
    if (!all.length) return;
    var index = all.indexOf(current());
    var next = index === -1 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
    focusCard(all[next]);
  }

  function press(card, selector) {
    var button = card && card.querySelector(selector);
    if (!button) return false;
    lastActed = card.id;
    button.click();
    return true;
  }

  function help(show) {
    var box = document.getElementById("review-help");
    if (!box) return;
    box.hidden = show === undefined ? !box.hidden : !show;
    if (!box.hidden) {
      var close = box.querySelector("[data-review-help-close]");
      if (close) close.focus();
    }
  }

  function typing(target) {
    return target && /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName) && target.type !== "checkbox";
  }

  document.addEventListener("keydown", function (event) {
    if (!document.querySelector("[data-review-list], #review-help")) return;
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var key = event.key;
    if (key === "?") { help(); event.preventDefault(); return; }
    if (key === "Escape") { help(false); return; }
    if (key === "n") {
      var nextCell = document.querySelector("[data-next-cell]");
      if (nextCell) { nextCell.click(); event.preventDefault(); }
      return;
    }
    if (!document.querySelector("[data-review-card]")) return;
    var card = current();
    if (key === "j") { move(1); event.preventDefault(); return; }
    if (key === "k") { move(-1); event.preventDefault(); return; }
    if (!card) {
      if (/^[0-9a-z]$/.test(key)) focusCard(cards()[0]);
      return;
    }
    var handled = false;
    // Enter on the card itself (not on one of its buttons) accepts, as c does.
    if (key === "Enter" && event.target === card) key = "c";
    if (key === "c") { lastKind = "decide"; handled = press(card, '[data-key="c"]'); }
    else if (key === "x") { lastKind = "decide"; handled = press(card, '[data-key="x"]'); }
    else if (key === "u") { lastKind = "undo"; handled = press(card, '[data-key="u"]'); }
    else if (key === "o") { handled = press(card, "[data-open]"); }
    else if (key === "s") {
      var box = card.querySelector("[data-select]");
      if (box) { box.checked = !box.checked; box.dispatchEvent(new Event("change", { bubbles: true })); handled = true; }
    }
    // Any other digit or letter is a class's hotkey (hotkeys.py keeps them off the action keys).
    else if (/^[0-9a-z]$/.test(key)) { lastKind = "decide"; handled = press(card, '[data-key="' + key + '"]'); }
    if (handled) event.preventDefault();
  });

  // A button clicked with the mouse counts too, so focus follows the card acted on.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-review-card] button");
    if (!button) return;
    var card = button.closest("[data-review-card]");
    lastActed = card.id;
    lastKind = button.getAttribute("data-key") === "u" ? "undo" : "decide";
  });

  function autoAdvance() {
    var box = document.querySelector("[data-auto-advance]");
    return !box || box.checked; // a page without the toggle keeps the default: on
  }

  // After a card is swapped: a saved decision moves on to the next card (with auto-advance
  // on); an undo or a refusal keeps focus on the same card, so the reviewer sees what happened.
  document.addEventListener("htmx:afterSettle", function (event) {
    // Only the acted-on card's own swap counts: the progress line settles too, maybe first.
    if (!lastActed || !event.target || event.target.id !== lastActed) return;
    var card = event.target;
    lastActed = null;
    var saved = card.querySelector(".saved") && !card.querySelector(".review-card__error");
    if (saved && lastKind === "decide" && autoAdvance()) {
      var all = cards();
      focusCard(all[all.indexOf(card) + 1] || card);
    } else {
      focusCard(card);
    }
  });

  document.addEventListener("change", function (event) {
    if (!event.target.matches || !event.target.matches("[data-select]")) return;
    var count = document.querySelectorAll("[data-select]:checked").length;
    var out = document.querySelector("[data-bulk-count]");
    if (out) out.textContent = count ? count + " selected:" : "Select cards (s) for one action on all:";
    var card = event.target.closest("[data-review-card]");
    if (card) card.classList.toggle("review-card--selected", event.target.checked);
  });

  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-review-help]")) help(true);
    if (event.target.closest && event.target.closest("[data-review-help-close]")) help(false);
  });

  // Leaving the Label queue gives its claimed cards back to the other labelers at once.
  window.addEventListener("pagehide", function () {
    var list = document.querySelector("[data-claim-release]");
    var token = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (!list || !token || !navigator.sendBeacon) return;
    var body = new FormData();
    body.append("csrfmiddlewaretoken", token.value);
    body.append("loaded_at", list.getAttribute("data-claim-loaded") || "");
    navigator.sendBeacon(list.getAttribute("data-claim-release"), body);
  });

  document.addEventListener("DOMContentLoaded", function () {
    var first = document.querySelector("[data-review-card]");
    if (first && !current()) first.focus({ preventScroll: true });
  });
})();
