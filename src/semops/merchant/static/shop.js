/* New order page: "Add a line" copies the last basket line (empty), up to the limit. */
(function () {
  "use strict";
  var button = document.getElementById("add-line");
  if (!button) { return; }
  var basket = document.getElementById("basket");
  var max = parseInt(button.dataset.max, 10);
  button.hidden = false;

  function lines() { return basket.querySelectorAll(".line"); }

  button.addEventListener("click", function () {
    var all = lines();
    if (all.length >= max) { return; }
    var number = all.length + 1;
    var copy = all[all.length - 1].cloneNode(true);
    copy.dataset.line = String(number);
    copy.querySelectorAll("label").forEach(function (label) {
      var input = copy.querySelector("#" + label.htmlFor);
      var id = label.htmlFor.replace(/-[0-9]+$/, "-" + number);
      label.htmlFor = id;
      if (input) { input.id = id; input.value = ""; }
      var hidden = label.querySelector(".visually-hidden");
      if (hidden) { hidden.textContent = " of item " + number; }
      if (/^line-name-/.test(id)) { label.textContent = "Item " + number; }
    });
    basket.insertBefore(copy, button);
    copy.querySelector("input").focus();
    if (lines().length >= max) { button.hidden = true; }
  });
})();
