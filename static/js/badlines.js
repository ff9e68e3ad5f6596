/*
 * Highlight the pasted lines the server refused, inside the URLs textarea.
 *
 * The form puts the refused line numbers on the textarea (data-bad-lines="[4, 7]"). A backdrop
 * behind the (transparent) textarea holds the same text, line for line, with the bad lines
 * marked; it follows the textarea's scrolling. Lines do not wrap (white-space: pre in both), so a
 * line of the backdrop is a line of the textarea. As the text is edited, a line stays marked as
 * long as it still holds a refused URL, wherever it moved; a fixed line loses its mark.
 * No HTML is ever inserted: every node is built and filled with textContent.
 */
(function () {
  "use strict";

  var area = document.querySelector("textarea[data-bad-lines]");
  if (!area) {
    return;
  }
  var numbers;
  try {
    numbers = JSON.parse(area.getAttribute("data-bad-lines"));
  } catch (error) {
    return;
  }
  if (!Array.isArray(numbers) || !numbers.length) {
    return;
  }

  var lines = area.value.split(/\r\n|\r|\n/);
  var bad = new Set();
  numbers.forEach(function (n) {
    var line = lines[n - 1];
    if (line !== undefined && line.trim()) {
      bad.add(line.trim());
    }
  });

  var wrap = document.createElement("div");
  wrap.className = "highlight";
  var backdrop = document.createElement("div");
  backdrop.className = "highlight__backdrop";
  backdrop.setAttribute("aria-hidden", "true");
  area.parentNode.insertBefore(wrap, area);
  wrap.appendChild(backdrop);
  wrap.appendChild(area);
  area.classList.add("highlight__input");

  function render() {
    var count = 0;
    var nodes = area.value.split(/\r\n|\r|\n/).map(function (line) {
      var span = document.createElement("span");
      span.className = "highlight__line";
      span.textContent = line + "\n";
      if (bad.has(line.trim())) {
        span.classList.add("highlight__line--bad");
        count += 1;
      }
      return span;
    });
    backdrop.replaceChildren.apply(backdrop, nodes);
    area.setAttribute("data-marked-lines", String(count));
    sync();
  }

  function sync() {
    backdrop.scrollTop = area.scrollTop;
    backdrop.scrollLeft = area.scrollLeft;
  }

  area.addEventListener("input", render);
  area.addEventListener("scroll", sync, { passive: true });
  render();
})();
