// The console's one script: "select all" for the bulk dead-letter actions, and a running
// rebuild's progress on the projections page (polled from /projections/progress, written
// into an aria-live region; the page reloads itself when the rebuild ends, showing what it
// came to and the next step), and the overview reloading itself until the first snapshot of
// the tables is read. Everything else works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", () => {
      document.querySelectorAll("input[name=id]").forEach((box) => { box.checked = all.checked; });
    });
  }
  // The overview before the first snapshot: look again in a second.
  if (document.querySelector("[data-reading]")) setTimeout(() => window.location.reload(), 1000);
  const running = document.querySelectorAll("[data-rebuild]");
  if (running.length === 0) return;
  const tick = () => {
    fetch("/projections/progress", { cache: "no-store" })
      .then((r) => r.json())
      .then((jobs) => {
        let ended = false;
        running.forEach((el) => {
          const job = jobs[el.dataset.rebuild];
          if (!job || !job.running) { ended = true; return; }
          el.querySelector("[data-stage]").textContent = job.stage;
          const bar = el.querySelector("progress");
          bar.max = Math.max(job.total, 1);
          bar.value = job.done;
          bar.textContent = job.done + "/" + job.total;
          el.querySelector("[data-count]").textContent = job.text;
        });
        // Drop the query string: its banner was about starting the rebuild.
        if (ended) window.location.replace(window.location.pathname);
        else setTimeout(tick, 1000);
      })
      .catch(() => setTimeout(tick, 3000));
  };
  setTimeout(tick, 1000);
});
