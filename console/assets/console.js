// The console's one script: "select all" for the bulk dead-letter actions. Everything else
// works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (!all) return;
  all.addEventListener("change", () => {
    document.querySelectorAll("input[name=id]").forEach((box) => { box.checked = all.checked; });
  });
});
